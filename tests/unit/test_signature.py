import base64
import time

import pytest

from app.caterings.signature import InvalidSignature, signed_headers, verify

OLD = "whsec_" + base64.b64encode(b"old-secret-for-rotation-tests-32b").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-for-rotation-tests-32b").decode()
BODY = b'{"type": "user.updated"}'


def headers(secret: str = NEW, ts: int | None = None, msg_id: str = "msg_1") -> dict[str, str]:
    return signed_headers(BODY, msg_id, int(time.time()) if ts is None else ts, secret)


def test_valid_signature_passes() -> None:
    verify(BODY, headers(), [NEW])


@pytest.mark.parametrize("configured", [[OLD, NEW], [NEW, OLD]])
def test_any_configured_secret_may_sign(configured: list[str]) -> None:
    verify(BODY, headers(OLD), configured)
    verify(BODY, headers(NEW), configured)


def test_one_matching_entry_among_several_signatures_is_enough() -> None:
    h = headers(NEW)
    h["webhook-signature"] = "v1,Zm9yZ2Vk " + h["webhook-signature"]
    verify(BODY, h, [NEW])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.update({"webhook-signature": "v1,Zm9yZ2Vk"}),
        lambda h: h.update({"webhook-signature": "garbage-without-comma"}),
        lambda h: h.update({"webhook-signature": "v1,***not base64***"}),
        lambda h: h.update({"webhook-id": "msg_other"}),
        lambda h: h.update({"webhook-timestamp": "not-a-number"}),
        lambda h: h.update({"webhook-timestamp": "1e400"}),
        lambda h: h.pop("webhook-signature"),
        lambda h: h.pop("webhook-id"),
    ],
)
def test_tampered_or_malformed_headers_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    h = headers()
    mutate(h)
    with pytest.raises(InvalidSignature):
        verify(BODY, h, [NEW])


def test_body_change_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        verify(BODY + b" ", headers(), [NEW])


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamp_more_than_five_minutes_away_either_way_is_refused(offset: int) -> None:
    with pytest.raises(InvalidSignature):
        verify(BODY, headers(ts=int(time.time()) + offset), [NEW])


@pytest.mark.parametrize("offset", [-290, 290])
def test_timestamp_within_five_minutes_passes(offset: int) -> None:
    verify(BODY, headers(ts=int(time.time()) + offset), [NEW])


def test_secret_not_configured_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        verify(BODY, headers(OLD), [NEW])


def test_non_utf8_body_is_refused_not_crashed() -> None:
    with pytest.raises(InvalidSignature):
        verify(b"\xff\xfe", headers(), [NEW])
