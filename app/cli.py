"""The ``bridge`` command: serve, worker, migrate, the demo and the fake upstream servers."""

from __future__ import annotations

import asyncio
import signal
import sys

import typer

from app.settings import MissingSettingError, Settings, load_settings

cli = typer.Typer(help="Caterings ↔ User.com bridge", no_args_is_help=True, add_completion=False)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except MissingSettingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, help="port to listen on"),
) -> None:
    """Run the web app (and, unless WORKER_IN_PROCESS=false, the delivery worker)."""
    import uvicorn

    settings = settings_or_exit()
    from app.main import create_app

    # uvicorn stops gracefully on SIGTERM/SIGINT (no new requests, open ones finish, then the
    # lifespan drains the worker) and afterwards re-raises the signal to the handler it found:
    # make that one a no-op, so a graceful stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped_gracefully)
    uvicorn.run(
        create_app(settings), host=host, port=port, log_config=None,
        timeout_graceful_shutdown=max(1, min(5, int(settings.shutdown_timeout_seconds))),
    )


def _stopped_gracefully(_signum: int, _frame: object) -> None:
    return None


@cli.command()
def worker(
    metrics_port: int = typer.Option(0, help="serve /health and /metrics on this port (default: WORKER_METRICS_PORT)"),
) -> None:
    """Run only the delivery worker (scale-out: several of these on one PostgreSQL).

    SIGTERM or SIGINT: claims nothing more, finishes or gives back what it holds within
    SHUTDOWN_TIMEOUT_SECONDS, exits 0."""
    settings = settings_or_exit()
    from app.logs import configure_logging
    from app.main import start_services

    configure_logging(settings.log_level, settings.log_format)

    async def _run() -> None:
        async with start_services(settings, run_worker=False) as services:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, services.worker.stop)
            http = None
            if metrics_port or settings.worker_metrics_port:
                from app.ops.worker_http import worker_http_server

                server = worker_http_server(
                    services, settings.worker_metrics_host, metrics_port or settings.worker_metrics_port
                )
                http = asyncio.create_task(server.serve(), name="worker-http")
            try:
                await services.worker.run(drain_timeout=settings.shutdown_timeout_seconds)
            finally:
                if http is not None:
                    server.should_exit = True
                    await http

    asyncio.run(_run())


@cli.command()
def migrate() -> None:
    """Apply the database migrations (the app also does this at start-up)."""
    from app.migrate import upgrade_to_head
    from app.settings import database_url_from_env

    upgrade_to_head(database_url_from_env())
    typer.echo("database is at the latest migration")


@cli.command("fake-usercom")
def fake_usercom(
    host: str = "127.0.0.1", port: int = 8101, api_key: str = "test-usercom-key",
    rate_limit: float = typer.Option(0, help="requests a second before 429 (0: no limit)"),
) -> None:
    """Run the fake User.com API (for local runs, tests and the demo)."""
    import uvicorn

    from app.fakes.usercom import create_app

    uvicorn.run(create_app(api_key=api_key, rate_limit=rate_limit or None), host=host, port=port, log_level="warning")


@cli.command()
def demo(keep: bool = typer.Option(False, help="keep the servers running until Enter")) -> None:
    """Run the bridge on SQLite against local fake servers, on the sample data, and show the result."""
    from app.demo import run_demo

    raise typer.Exit(run_demo(keep=keep))


from app.sync.cli import register as _register_sync_commands  # noqa: E402

_register_sync_commands(cli)  # sync full|status|feed, import-orders


from app.ops.cli import register as _register_ops_commands  # noqa: E402

_register_ops_commands(cli)  # purge


def main() -> None:
    cli()


if __name__ == "__main__":
    sys.exit(main())
