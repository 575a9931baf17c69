"""Structured logs: one JSON object a line, personal data masked, secrets dropped, ids carried."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
import structlog

from app.delivery import repository
from app.delivery.handlers import HANDLERS, HandlerContext
from app.delivery.plan import USER_UPSERT, PlannedDelivery
from app.delivery.policy import RetryPolicy
from app.delivery.worker import Worker
from app.logs import configure_logging, mask_text
from app.ratelimit import AdaptiveRateLimiter
from app.upstream import UpstreamError


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict]]]:  # type: ignore[type-arg]
    """JSON logging as in production, written to a buffer the test reads."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()

    def configure() -> None:
        configure_logging("INFO", "json")
        root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]

    def lines() -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    configure()
    lines.configure = configure  # type: ignore[attr-defined]
    yield lines
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()


def test_emails_phones_and_secrets_never_reach_the_output(json_logs) -> None:  # type: ignore[no-untyped-def]
    log = structlog.get_logger("test")
    log.warning(
        "user refused by upstream",
        email="anna.kowalska@example.com",
        detail='{"errors": {"phone_number": ["+48 600-100-200 is not valid"]}, "email": "jan@firma.pl"}',
        phone="600 100 200",
        api_key="sk-live-123",
        authorization="Token abc",
        usercom_api_key="k",
        nested={"password": "hunter2", "note": "call 0048600100200"},
        delivery_id=123456789,
    )
    (line,) = json_logs()
    text = json.dumps(line)
    for leaked in ("anna.kowalska", "jan@firma.pl", "600-100-200", "600 100 200", "0048600100200", "sk-live-123",
                   "Token abc", "hunter2"):
        assert leaked not in text, leaked
    assert line["email"] == "a***@example.com"
    assert line["api_key"] == "***" and line["authorization"] == "***" and line["usercom_api_key"] == "***"
    assert line["nested"]["password"] == "***"
    assert line["delivery_id"] == 123456789  # ids are numbers, not masked
    assert line["level"] == "warning" and line["event"] == "user refused by upstream" and "timestamp" in line


def test_stdlib_loggers_are_masked_too(json_logs) -> None:  # type: ignore[no-untyped-def]
    logging.getLogger("some.library").error("could not reach piotr.nowak@example.org")
    (line,) = json_logs()
    assert "piotr.nowak" not in line["event"] and "p***@example.org" in line["event"]


def test_timestamps_and_ids_survive_masking() -> None:
    assert mask_text("2026-07-06T12:00:01.500000Z") == "2026-07-06T12:00:01.500000Z"
    assert mask_text("user:1043") == "user:1043"
    assert "100" not in mask_text("tel. +48 600 100 200")


async def test_every_line_about_a_delivery_carries_its_id(json_logs, sessions, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    handler_log = structlog.get_logger("app.delivery.handlers")
    calls = 0

    async def flaky(_ctx, _d):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        handler_log.info("calling upstream")
        if calls == 1:
            raise UpstreamError("usercom", 503, "unavailable")
        return "sent"

    monkeypatch.setitem(HANDLERS, USER_UPSERT, flaky)
    async with sessions.begin() as s:
        (delivery,) = await repository.enqueue(s, [PlannedDelivery(USER_UPSERT, "user:1", {})])
    ctx = HandlerContext(sessions=sessions, usercom=SimpleNamespace(limiter=AdaptiveRateLimiter(1000)))  # type: ignore[arg-type]
    worker = Worker(ctx, policy=RetryPolicy(base_seconds=0.01, cap_seconds=0.02), poll_seconds=0.02)
    task = asyncio.create_task(worker.run(drain_timeout=1))
    for _ in range(200):
        await asyncio.sleep(0.02)
        if calls >= 2:
            break
    await asyncio.sleep(0.1)
    worker.stop()
    await task
    lines = json_logs()
    about = [line for line in lines if line["event"] in ("calling upstream", "delivery will be retried")]
    assert [line["event"] for line in about] == ["calling upstream", "delivery will be retried", "calling upstream"]
    assert all(line.get("delivery_id") == delivery.id for line in about), about


async def test_every_line_about_a_webhook_carries_its_id(json_logs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from app.main import create_app
    from tests.api.conftest import api_settings
    from tests.support import processes as p

    app = create_app(api_settings(tmp_path))
    async with app.router.lifespan_context(app):
        json_logs.configure()  # the lifespan configured its own
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
            record = next(r for r in p.sample_webhooks() if r["body"]["type"] == "order.paid")
            raw, headers = p.signed_webhook(record["body"], "msg_logged")
            assert (await client.post("/webhooks/caterings", content=raw, headers=headers)).status_code == 202
            forged = {**headers, "webhook-signature": "v1,AAAA"}
            raw2, _ = p.signed_webhook(record["body"], "msg_forged")
            assert (await client.post("/webhooks/caterings", content=raw2,
                                      headers={**forged, "webhook-id": "msg_forged"})).status_code == 401
    lines = json_logs()
    stored = [line for line in lines if line["event"] == "webhook stored"]
    refused = [line for line in lines if line["event"] == "webhook refused"]
    assert [line["webhook_id"] for line in stored] == ["msg_logged"]
    assert [line["webhook_id"] for line in refused] == ["msg_forged"]
    assert "anna.kowalska@example.com" not in json.dumps(lines)


def test_worker_ids_are_not_taken_for_phone_numbers() -> None:
    from app.delivery.worker import new_worker_id

    worker_id = new_worker_id()
    assert mask_text(worker_id) == worker_id
    assert mask_text("vm:7396:123456") == "vm:7396:123456"
