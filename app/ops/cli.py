"""Operator commands: ``bridge purge``."""

from __future__ import annotations

import asyncio
import json

import typer


def register(cli: typer.Typer) -> None:
    @cli.command()
    def purge(
        older_than_days: float = typer.Option(0, help="default: RETENTION_DAYS", min=0),
        dry_run: bool = typer.Option(False, "--dry-run", help="only count what would go"),
    ) -> None:
        """Delete done deliveries and inbound records older than the retention period.

        Never touches the id map, the fired business facts, the consent state or its log, nor any
        delivery that is not done.
        """
        from pydantic import ValidationError

        from app.db import create_engine, create_session_factory
        from app.logs import configure_logging
        from app.migrate import upgrade_to_head_async
        from app.ops.maintenance import purge as run_purge
        from app.settings import MaintenanceSettings

        try:
            settings = MaintenanceSettings()
        except ValidationError as exc:
            names = ", ".join(str(e["loc"][0]).upper() for e in exc.errors() if e["loc"])
            typer.echo(f"error: invalid configuration: {names}", err=True)
            raise typer.Exit(2) from None
        configure_logging(settings.log_level, settings.log_format)
        days = older_than_days or settings.retention_days

        async def _run() -> dict[str, object]:
            await upgrade_to_head_async(settings.database_url)
            engine = create_engine(settings.database_url)
            try:
                report = await run_purge(create_session_factory(engine), retention_days=days, dry_run=dry_run)
            finally:
                await engine.dispose()
            return report.as_dict()

        typer.echo(json.dumps(asyncio.run(_run())))
