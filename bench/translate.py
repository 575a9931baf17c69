"""Translation alone: the sample ``order.paid`` through parse and plan, no I/O, with ``timeit``."""

from __future__ import annotations

import json
import timeit
from typing import Any
from zoneinfo import ZoneInfo

from app.caterings import schemas
from app.mapping import plan_caterings_event
from bench.loadgen import sample_order_paid


def _best_rate(statement: Any, seconds: float) -> tuple[float, int]:
    """Calls per second of ``statement``: the best of 5 repeats of about ``seconds / 5`` each."""
    timer = timeit.Timer(statement)
    probe = 20
    per_call = timer.timeit(number=probe) / probe
    per_repeat = max(1, int(seconds / 5 / per_call))
    best = min(timer.repeat(repeat=5, number=per_repeat)) / per_repeat
    return 1.0 / best, per_repeat * 5


def run(size: dict[str, Any]) -> dict[str, Any]:
    tz = ZoneInfo("Europe/Warsaw")
    document = sample_order_paid()
    raw = json.dumps(document).encode()

    def parse_and_plan() -> None:
        envelope = schemas.parse_envelope(document)
        plan_caterings_event(schemas.parse_event(envelope), tz=tz)

    def from_bytes() -> None:
        envelope = schemas.parse_envelope(json.loads(raw))
        plan_caterings_event(schemas.parse_event(envelope), tz=tz)

    def parse_only() -> None:
        schemas.parse_event(schemas.parse_envelope(document))

    planned = plan_caterings_event(schemas.parse_event(schemas.parse_envelope(document)), tz=tz)
    seconds = size["translate_seconds"]
    rate, calls = _best_rate(parse_and_plan, seconds)
    rate_bytes, _ = _best_rate(from_bytes, seconds)
    rate_parse, _ = _best_rate(parse_only, seconds)
    return {
        "webhooks_per_s": round(rate),
        "us_per_webhook": round(1e6 / rate, 1),
        "with_json_loads_per_s": round(rate_bytes),
        "parse_only_per_s": round(rate_parse),
        "deliveries_planned": len(planned),
        "calls_timed": calls,
    }
