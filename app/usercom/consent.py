"""``POST /webhooks/usercom/consent``: marketing consent from User.com's automation, to Caterings.

Verify the shared token, read the body as the automation "API call" module sends it, find the
Caterings user, record the consent and (when it changes what is known) enqueue it for Caterings,
all in one transaction; answer. Delivery happens later, through the outbox. The rules live in
``app.consents``; ``docs/consent.md`` describes the behaviour.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from app import consents
from app.deps import ServicesDep
from app.inbound import read_limited_body
from app.models import utcnow

SOURCE = "usercom_consent"
EVENT_TYPE = "marketing_consent"
log = structlog.get_logger("app.usercom.consent")
router = APIRouter(tags=["inbound"])

_DATETIME = TypeAdapter(datetime)


class CallbackError(ValueError):
    """A callback body the bridge cannot use; the message names the field, never its value."""


@dataclass(frozen=True)
class ConsentCallback:
    marketing: bool | None  # None when missing or not a boolean (then ``problem`` says so)
    custom_id: str | None
    email: str | None
    usercom_id: int | None
    timestamp: datetime | None
    path: Any = None
    problem: str | None = None


def token_ok(request: Request, expected: str) -> bool:
    """``?token=`` or ``Authorization: Token <token>``, compared in constant time."""
    offered: list[str] = []
    if "token" in request.query_params:
        offered.append(request.query_params["token"])
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "token":
        offered.append(value.strip())
    ok = False
    for candidate in offered:  # compare every candidate, so timing does not tell which one failed
        ok |= hmac.compare_digest(candidate.encode(), expected.encode())
    return ok and bool(expected)


def _object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):  # Extra data sent as a JSON string rather than an object
        try:
            decoded = json.loads(value)
        except ValueError:
            return {}
        return decoded if isinstance(decoded, dict) else {}
    return {}


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def parse_callback(document: Any) -> ConsentCallback:
    """The facts of a callback body. Raises ``CallbackError`` when it names no user in a usable
    way; a missing or non-boolean ``marketing_terms`` is reported in ``problem`` instead, so the
    rejection can still be logged against the user."""
    if not isinstance(document, dict):
        raise CallbackError("the body must be a JSON object")
    extra = _object(document.get("extra"))
    user = _object(document.get("user"))

    ids = [_id(user.get("custom_id")), _id(extra.get("custom_id")), _id(extra.get("user_id"))]
    named = {i for i in ids if i is not None}
    if len(named) > 1:
        raise CallbackError("user.custom_id, extra.custom_id and extra.user_id name different users")
    custom_id = next(iter(named), None)
    email_value = user.get("email") if isinstance(user.get("email"), str) else extra.get("email")
    email = email_value.strip().lower() if isinstance(email_value, str) and email_value.strip() else None
    raw_usercom_id = user.get("id")
    usercom_id = raw_usercom_id if isinstance(raw_usercom_id, int) and not isinstance(raw_usercom_id, bool) else None

    timestamp = None
    if document.get("timestamp") not in (None, ""):
        raw = document["timestamp"]
        if isinstance(raw, bool):
            raise CallbackError("timestamp must be an ISO 8601 datetime")
        try:
            timestamp = _DATETIME.validate_python(raw)
        except ValidationError:
            raise CallbackError("timestamp must be an ISO 8601 datetime") from None
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)

    problem = None
    if "marketing_terms" in extra:
        marketing: Any = extra["marketing_terms"]
    elif "marketing_terms" in document:
        marketing = document["marketing_terms"]
    else:
        marketing, problem = None, "marketing_terms is missing (expected in extra, or at the top level)"
    if problem is None and not isinstance(marketing, bool):
        marketing, problem = None, "marketing_terms must be a JSON boolean (true or false)"
    return ConsentCallback(marketing, custom_id, email, usercom_id, timestamp, document.get("path"), problem)


def _answer(body: dict[str, Any], code: int) -> JSONResponse:
    return JSONResponse(body, status_code=code)


@router.post("/webhooks/usercom/consent", status_code=202)
async def receive_consent(request: Request, services: ServicesDep) -> JSONResponse:
    started = time.perf_counter()
    outcome = "error"
    try:
        if not token_ok(request, services.settings.consent_callback_token.get_secret_value()):
            outcome = "unauthorized"
            log.warning("consent callback refused: token missing or wrong")
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "consent callback token missing or wrong",
                                headers={"WWW-Authenticate": "Token"})
        raw = await read_limited_body(request, services.settings.max_body_bytes)
        received_at = utcnow()
        try:
            callback = parse_callback(json.loads(raw))
        except (ValueError, RecursionError) as exc:  # bad JSON, or a CallbackError
            message = str(exc) if isinstance(exc, CallbackError) else "body is not valid JSON"
            async with services.sessions.begin() as session:
                consent_id = await consents.reject_callback(session, user_id=None, marketing=None, at=None,
                                                            detail=message)
            outcome = "rejected"
            log.info("consent callback rejected", consent_id=consent_id, reason=message)
            return _answer({"detail": message, "id": consent_id, "status": consents.REJECTED}, 422)

        at = consents.not_after_now(callback.timestamp or received_at, received_at)
        how = f"path {callback.path}" if isinstance(callback.path, (int, str)) else "no path"
        async with services.sessions.begin() as session:
            user_id, found_by = await consents.find_user(
                session, custom_id=callback.custom_id, email=callback.email, usercom_id=callback.usercom_id
            )
            problem = callback.problem if user_id is not None else found_by
            if problem is not None:
                consent_id = await consents.reject_callback(
                    session, user_id=user_id or callback.custom_id, marketing=callback.marketing, at=at,
                    detail=f"{how}; {problem}",
                )
            else:
                assert user_id is not None and callback.marketing is not None
                result = await consents.accept_callback(
                    session, user_id=user_id, marketing=callback.marketing, at=at,
                    detail=f"{how}; user found by {found_by}",
                )
        if problem is not None:
            outcome = "rejected"
            log.info("consent callback rejected", consent_id=consent_id, user_id=user_id or callback.custom_id,
                     reason=problem)
            return _answer({"detail": problem, "id": consent_id, "status": consents.REJECTED}, 422)
        outcome = result.status
        log.info("consent callback", user_id=user_id, marketing=callback.marketing, status=result.status,
                 consent_id=result.consent_id, delivery_id=result.delivery_id)
        if result.status == consents.PENDING:
            services.wake_worker()
            return _answer({"id": result.consent_id, "status": "accepted", "user_id": user_id}, 202)
        return _answer({"id": result.consent_id, "status": result.status, "user_id": user_id}, 200)
    except HTTPException as exc:
        if outcome == "error":
            outcome = {413: "too_large", 400: "invalid"}.get(exc.status_code, "error")
        raise
    finally:
        services.metrics.webhooks.labels(SOURCE, EVENT_TYPE, outcome).inc()
        services.metrics.accept_latency.labels(SOURCE).observe(time.perf_counter() - started)
