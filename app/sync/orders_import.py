"""The orders-export import (contract §5.4): a CSV file into the outbox, as ``order.paid`` would.

The file is parsed by ``app.caterings.export`` (bad rows come back with their line numbers and are
not imported); each order then goes through ``app.sync.planning`` like a full-sync order: a paid
order gives the user, ``purchase``, the diet-variant and ``reservation``; a cancelled one the
diet-variant with ``active = false`` and no event; a new one only the user.

The import writes straight into the outbox of the database the bridge uses (``DATABASE_URL``),
in transactions of ``CHUNK_ORDERS`` orders; the running bridge's worker delivers. Running it
twice sends nothing new: purchases and reservations are business facts that fire once, and an
upsert equal to what User.com last confirmed is not queued (nor sent, should it be queued).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.caterings.export import ExportError, RowError, parse_export
from app.models import InboundEvent
from app.sync.planning import Batch, InvalidRecord, plan_order_record

SOURCE = "import"
CHUNK_ORDERS = 200


@dataclass
class ImportReport:
    file: str
    dry_run: bool
    orders: int = 0  # orders read without a bad row
    imported: int = 0  # orders planned (all of them, unless the mapping refused one)
    deliveries: int = 0  # deliveries queued (in a dry run: that would be queued)
    by_status: dict[str, int] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def read_export(path: Path) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Raises ``ExportError`` (file unusable) and ``OSError``."""
    result = parse_export(path.read_bytes())
    return result.orders, result.errors


async def import_orders(
    sessions: async_sessionmaker[AsyncSession],
    orders: list[dict[str, Any]],
    errors: list[RowError],
    *,
    tz: ZoneInfo,
    file_name: str,
    dry_run: bool = False,
) -> ImportReport:
    report = ImportReport(file=file_name, dry_run=dry_run, orders=len(orders), errors=list(errors))
    inbound_id: int | None = None
    if not dry_run and orders:
        async with sessions.begin() as session:
            # The run is kept in the inbound log (counts only, no personal data); its deliveries point to it.
            inbound = InboundEvent(
                source=SOURCE,
                external_id=None,
                event_type="orders.import",
                status="accepted",
                body={"file": file_name, "orders": len(orders), "bad_rows": len(errors)},
            )
            session.add(inbound)
            await session.flush()
            inbound_id = inbound.id
    for start in range(0, len(orders), CHUNK_ORDERS):
        batch = Batch()
        for order in orders[start : start + CHUNK_ORDERS]:
            try:
                batch.extend(plan_order_record(order, tz=tz))
            except InvalidRecord as exc:
                report.errors.append(RowError(0, str(exc)))
                continue
            report.imported += 1
            status = str(order.get("status"))
            report.by_status[status] = report.by_status.get(status, 0) + 1
        async with sessions.begin() as session:
            if dry_run:
                report.deliveries += len(await batch.filtered(session))
            else:
                report.deliveries += await batch.store(session, inbound_id=inbound_id)
    report.errors.sort(key=lambda error: error.line)
    return report


__all__ = ["ExportError", "ImportReport", "import_orders", "read_export"]
