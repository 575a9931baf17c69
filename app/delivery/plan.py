"""What the pure translation layer hands to the outbox: deliveries still to be made.

A planned delivery is data only. The outbox stores it; a handler in ``app.delivery.handlers``
knows how to perform each ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# User.com operations
USER_UPSERT = "usercom.user.upsert"  # payload: {"body": <update_or_create body>}
USER_DELETE = "usercom.user.delete"  # payload: {"custom_id": "3007"}
PRODUCT_UPSERT = "usercom.product.upsert"  # payload: {"custom_id": ..., "body": <product body>}
PRODUCT_EVENT = "usercom.product_event"
# payload: {"product_custom_id": ..., "body": <product_event body>, "create_if_missing": {"custom_id", "name"}}

# Caterings operations
CONSENT_UPDATE = "caterings.consent"  # payload: {"user_id": "1043", "marketing": bool, "consent_id": int}

ALL_KINDS = (USER_UPSERT, USER_DELETE, PRODUCT_UPSERT, PRODUCT_EVENT, CONSENT_UPDATE)


def target_of(kind: str) -> str:
    """The upstream system a delivery kind talks to: ``usercom`` or ``caterings``."""
    return kind.split(".", 1)[0]


def user_lane(user_id: str) -> str:
    """Ordering key: one user's deliveries go out one at a time, oldest first."""
    return f"user:{user_id}"


def product_lane(custom_id: str) -> str:
    return f"product:{custom_id}"


@dataclass(frozen=True)
class PlannedDelivery:
    kind: str
    lane: str
    payload: dict[str, Any] = field(default_factory=dict)
    # A business fact that must happen once (e.g. "reservation:12_3_41_50231"). A second planned
    # delivery with the same key is dropped by the outbox, whatever webhook carried it.
    dedupe_key: str | None = None
