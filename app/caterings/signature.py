"""Standard Webhooks verification of Caterings webhooks, with several secrets for rotation."""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class InvalidSignature(Exception):
    """Missing headers, a stale or future timestamp, or no signature that matches any secret."""


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    """Raise ``InvalidSignature`` unless some secret signs this body.

    The ``standardwebhooks`` library checks the ±5 minute timestamp window and compares in
    constant time; we add the several-secrets loop and turn its malformed-input errors
    (a signature without a comma, bad base64, a body that is not UTF-8) into the same refusal.
    """
    wanted = {k.lower(): v for k, v in headers.items() if k.lower().startswith("webhook-")}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSignature("body is not UTF-8, cannot be verified") from None
    last_reason = "no secret configured"
    for secret in secrets:
        try:
            Webhook(secret).verify(text, wanted, json_parse=False)
            return
        except WebhookVerificationError as exc:
            last_reason = str(exc)
        except (ValueError, binascii.Error, OverflowError):
            last_reason = "malformed signature header"
    raise InvalidSignature(last_reason)


def sign(body: bytes, msg_id: str, timestamp: int, secret: str) -> str:
    """The ``webhook-signature`` header value for a body: what Caterings (or a test) sends."""
    from datetime import datetime, timezone

    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body.decode("utf-8"))


def signed_headers(body: bytes, msg_id: str, timestamp: int, secret: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(body, msg_id, timestamp, secret),
        "content-type": "application/json",
    }
