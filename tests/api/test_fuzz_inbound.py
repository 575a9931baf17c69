"""Fuzz of the endpoints the outside world reaches: no input makes a 500 or stops the app.

Hypothesis generates bodies and headers against the ASGI app in-process (the test client raises
any unhandled server error, so a crash fails the test). Bodies are random JSON, mutated sample
webhooks (one field somewhere replaced by something of the wrong shape) and raw bytes; each is
sent signed (so it reaches the schema) or with random authentication headers. Bounded by
``max_examples`` so it stays a few seconds in CI.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.main import create_app
from tests.api.conftest import api_settings
from tests.support import processes as p

FUZZ = settings(
    max_examples=120, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SAFE = {200, 202, 401, 413, 422}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    with TestClient(create_app(api_settings(folder, max_body_bytes=64 * 1024))) as test_client:
        yield test_client

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1e400", "2026-02-30", "2026-07-06T14:03:11+02:00", "NaN", "1249,50",
                     "+48 600 100 200", "x" * 300, "\u0000", "user.created"]),
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
SAMPLES = [record["body"] for record in p.sample_webhooks()]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated_samples(draw: st.DrawFn) -> Any:
    """A real sample webhook with one value anywhere in it replaced, or a key removed."""
    body = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    path = draw(st.sampled_from(_paths(body)))
    if not path:
        return draw(json_values)
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return body


bodies = st.one_of(mutated_samples(), json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200))
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _signed(raw: bytes, webhook_id: str) -> dict[str, str]:
    """Standard Webhooks headers over raw bytes (also bytes that are not UTF-8)."""
    timestamp = int(time.time())
    key = base64.b64decode(p.SAMPLE_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(digest).decode(), "content-type": "application/json"}


@FUZZ
@given(body=bodies, webhook_id=header_text.filter(bool), signed=st.sampled_from([True, True, False]),
       timestamp=st.one_of(st.none(), header_text), signature=header_text)
def test_the_caterings_webhook_never_answers_500(client, body, webhook_id, signed, timestamp, signature) -> None:  # type: ignore[no-untyped-def]
    raw = _raw(body)
    if signed:
        headers = _signed(raw, webhook_id)
    else:
        headers = {"webhook-id": webhook_id, "webhook-signature": signature}
        if timestamp is not None:
            headers["webhook-timestamp"] = timestamp
    answer = client.post("/webhooks/caterings", content=raw, headers=headers)
    assert answer.status_code in SAFE, (answer.status_code, answer.text)
    if not signed:
        assert answer.status_code in (401, 413)
    if answer.status_code == 422:
        assert answer.json()["detail"]  # a message, naming what is wrong


consent_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "path": json_values, "timestamp": st.one_of(scalars, st.just("2026-07-06T12:00:01.5+00:00")),
            "marketing_terms": json_values,
            "extra": st.one_of(json_values, st.fixed_dictionaries(
                {}, optional={"marketing_terms": json_values, "custom_id": json_values, "user_id": json_values})),
            "user": st.one_of(json_values, st.fixed_dictionaries(
                {}, optional={"id": json_values, "custom_id": json_values, "email": json_values})),
        },
    ),
    json_values,
).map(lambda v: json.dumps(v).encode()) | st.binary(max_size=100)


@FUZZ
@given(body=consent_bodies, how=st.sampled_from(["query", "header", "wrong", "none"]), token=header_text)
def test_the_consent_callback_never_answers_500(client, body, how, token) -> None:  # type: ignore[no-untyped-def]
    params, headers = {}, {}
    if how == "query":
        params["token"] = p.CONSENT_TOKEN
    elif how == "header":
        headers["Authorization"] = f"Token {p.CONSENT_TOKEN}"
    elif how == "wrong":
        params["token"] = token
        headers["Authorization"] = f"Token {token}"
    answer = client.post("/webhooks/usercom/consent", content=body, params=params, headers=headers)
    assert answer.status_code < 500, (answer.status_code, answer.text)
    if how in ("wrong", "none") and token != p.CONSENT_TOKEN:
        assert answer.status_code == 401


@settings(max_examples=80, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/deliveries", "/deliveries/retry", "/deliveries/{}", "/deliveries/{}/retry",
                             "/maintenance/purge", "/metrics", "/deliveries/summary"]),
       method=st.sampled_from(["GET", "POST"]), value=header_text,
       params=st.dictionaries(st.sampled_from(["state", "limit", "after_id", "since", "kind", "older_than_days",
                                               "dry_run"]), header_text, max_size=3))
def test_the_operator_api_never_answers_500(client, path, method, value, params) -> None:  # type: ignore[no-untyped-def]
    if "dry_run" not in params and path == "/maintenance/purge":
        params["dry_run"] = "true"  # keep the store for the other examples
    url = path.replace("{}", value.replace("/", "").replace("?", "").replace("#", "") or "1")
    answer = client.request(method, url, params=params, headers={"Authorization": f"Bearer {p.ADMIN_TOKEN}"})
    assert answer.status_code < 500, (method, url, params, answer.status_code, answer.text)


def test_the_app_still_answers_after_the_fuzz(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
