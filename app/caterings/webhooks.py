"""``POST /webhooks/caterings``: verify, parse, plan, store, answer. Delivery happens later."""

from __future__ import annotations

import json
import time
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.caterings import schemas, signature
from app.caterings.accept_writer import SOURCE, AcceptedWebhook
from app.deps import ServicesDep
from app.inbound import read_limited_body
from app.mapping import plan_caterings_event

log = structlog.get_logger("app.caterings.webhooks")
router = APIRouter(tags=["inbound"])


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(422, message)


@router.post("/webhooks/caterings", status_code=202)
async def receive_caterings_webhook(request: Request, services: ServicesDep) -> JSONResponse:
    started = time.perf_counter()
    settings = services.settings
    event_type = "?"
    outcome = "error"
    # Every log line about this webhook carries its id (as claimed, until the signature says so).
    structlog.contextvars.bind_contextvars(webhook_id=request.headers.get("webhook-id", "")[:100] or None)
    try:
        body = await read_limited_body(request, settings.max_body_bytes)
        try:
            signature.verify(body, request.headers, settings.webhook_secrets)
        except signature.InvalidSignature as exc:
            outcome = "unauthorized"
            log.warning("webhook refused", reason=str(exc))
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid webhook signature") from None
        webhook_id = request.headers["webhook-id"]
        structlog.contextvars.bind_contextvars(webhook_id=webhook_id)

        try:
            document: Any = json.loads(body)
        except ValueError:
            outcome = "invalid"
            raise _unprocessable("body is not valid JSON") from None
        try:
            envelope = schemas.parse_envelope(document)
            event_type = envelope.type
            event = schemas.parse_event(envelope) if envelope.type in schemas.KNOWN_EVENT_TYPES else None
        except ValidationError as exc:
            outcome = "invalid"
            raise _unprocessable(schemas.describe_validation_error(exc)) from None

        planned = plan_caterings_event(event, tz=settings.tz) if event is not None else []
        inbound_status = "accepted" if event is not None else "ignored"
        inbound_id = await services.accept_writer.store(
            AcceptedWebhook(webhook_id, event_type, inbound_status, document, planned, event)
        )
        if inbound_id is None:
            outcome = "duplicate"
            return JSONResponse({"id": webhook_id, "status": "duplicate"}, status_code=200)
        outcome = inbound_status
        if planned:
            services.wake_worker()
        log.info("webhook stored", type=event_type, status=inbound_status, deliveries=len(planned))
        return JSONResponse({"id": webhook_id, "status": inbound_status}, status_code=202)
    except HTTPException as exc:
        if outcome == "error":
            outcome = {413: "too_large", 400: "invalid"}.get(exc.status_code, "error")
        raise
    finally:
        services.metrics.webhooks.labels(SOURCE, event_type, outcome).inc()
        services.metrics.accept_latency.labels(SOURCE).observe(time.perf_counter() - started)
        structlog.contextvars.unbind_contextvars("webhook_id")
