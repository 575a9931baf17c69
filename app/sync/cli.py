"""``bridge sync full|status|feed`` (through a running bridge's HTTP API) and ``bridge import-orders``.

The sync commands ask a running bridge to do the work, so there is one job runner (the one that
resumes jobs after a restart) and the operator's machine needs only the admin token. The import
reads a local file and writes to the bridge's database directly; the bridge's worker delivers.

Exit status: 0 done; 1 the job failed (or the import had bad rows, which were skipped); 2 the
command could not do its work (bridge unreachable, wrong token, unreadable file, a job already
running).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer

sync_cli = typer.Typer(help="Full sync and product feed, through a running bridge.", no_args_is_help=True)

URL_OPTION = typer.Option("http://127.0.0.1:8000", "--url", envvar="BRIDGE_URL", help="the running bridge")
TOKEN_OPTION = typer.Option(..., "--token", envvar="ADMIN_TOKEN", help="operator token", show_default=False)
FINISHED = ("done", "failed")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _request(method: str, url: str, token: str, **kwargs: Any) -> httpx.Response:
    try:
        response = httpx.request(
            method, url, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kwargs
        )
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the bridge at {url}: {type(exc).__name__}") from None
    if response.status_code == 401:
        raise _fail("the bridge refused the admin token")
    return response


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


def _line(job: dict[str, Any]) -> str:
    parts = [
        f"job {job['id']} {job['state']}",
        f"phase={job['phase']}",
        f"next_page={job['next_page']}",
        f"done={job['done']}",
        f"failed={job['failed']}",
        f"deliveries={job['deliveries']}",
    ]
    if job.get("total") is not None:
        parts.append(f"total={job['total']}")
    if job.get("dry_run"):
        parts.append("dry_run")
    return " ".join(parts)


def _summary(job: dict[str, Any]) -> None:
    typer.echo(_line(job))
    if job.get("last_error"):
        typer.echo(f"last error: {job['last_error']}")


def follow(
    base_url: str, token: str, job_id: int, *, interval: float = 1.0, tty: bool | None = None
) -> dict[str, Any]:
    """Poll the job until it ends: a rich progress display on a terminal, log lines otherwise."""
    tty = sys.stdout.isatty() if tty is None else tty
    url = f"{base_url.rstrip('/')}/sync/jobs/{job_id}"

    def get() -> dict[str, Any]:
        response = _request("GET", url, token)
        if response.status_code != 200:
            raise _fail(f"job {job_id}: HTTP {response.status_code}: {_detail(response)}")
        return response.json()

    job = get()
    if not tty:
        last = ""
        while True:
            line = _line(job)
            if line != last:
                typer.echo(line)
                last = line
            if job["state"] in FINISHED:
                break
            time.sleep(interval)
            job = get()
    else:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(f"job {job_id}", total=None, counts="")
            while True:
                counts = (
                    f"{job['phase']} page {job['next_page']}  done {job['done']}  failed {job['failed']}"
                    f"  deliveries {job['deliveries']}"
                )
                total = job["total"] if job["state"] in FINISHED else None
                progress.update(
                    task,
                    description=f"job {job_id} {job['state']}",
                    counts=counts,
                    total=total,
                    completed=job["done"] + job["failed"],
                )
                if job["state"] in FINISHED:
                    break
                time.sleep(interval)
                job = get()
    if job.get("last_error"):
        typer.echo(f"last error: {job['last_error']}")
    return job


@sync_cli.command("full")
def sync_full(
    dry_run: bool = typer.Option(False, "--dry-run", help="count and validate, queue nothing"),
    users: bool = typer.Option(True, "--users/--no-users", help="sync users"),
    orders: bool = typer.Option(True, "--orders/--no-orders", help="sync orders"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="follow the job until it ends"),
    url: str = URL_OPTION,
    token: str = TOKEN_OPTION,
) -> None:
    """Start a full sync (users, then orders) on a running bridge and follow it."""
    if not (users or orders):
        raise _fail("nothing to do: both --no-users and --no-orders given")
    response = _request(
        "POST",
        f"{url.rstrip('/')}/sync/full",
        token,
        json={"users": users, "orders": orders, "dry_run": dry_run},
    )
    if response.status_code == 409:
        job_id = response.json().get("job_id")
        raise _fail(
            f"a full sync is already running (job {job_id}); follow it with: bridge sync status {job_id}"
        )
    if response.status_code != 202:
        raise _fail(f"HTTP {response.status_code}: {_detail(response)}")
    job_id = int(response.json()["job_id"])
    typer.echo(f"started full sync job {job_id}")
    if not wait:
        return
    job = follow(url, token, job_id)
    raise typer.Exit(0 if job["state"] == "done" else 1)


@sync_cli.command("status")
def sync_status(
    job_id: int = typer.Argument(..., help="the job id"),
    follow_job: bool = typer.Option(True, "--follow/--no-follow", help="follow the job until it ends"),
    url: str = URL_OPTION,
    token: str = TOKEN_OPTION,
) -> None:
    """Show a full sync job (following it until it ends); exit 1 if it failed."""
    if follow_job:
        job = follow(url, token, job_id)
    else:
        response = _request("GET", f"{url.rstrip('/')}/sync/jobs/{job_id}", token)
        if response.status_code != 200:
            raise _fail(f"job {job_id}: HTTP {response.status_code}: {_detail(response)}")
        job = response.json()
        _summary(job)
    raise typer.Exit(1 if job["state"] == "failed" else 0)


@sync_cli.command("feed")
def sync_feed(url: str = URL_OPTION, token: str = TOKEN_OPTION) -> None:
    """Sync diet-simples from the product feed now and print what was queued."""
    response = _request("POST", f"{url.rstrip('/')}/sync/feed", token)
    if response.status_code != 200:
        raise _fail(f"HTTP {response.status_code}: {_detail(response)}")
    report = response.json()
    typer.echo(
        f"feed: {report['items']} items, {report['sent']} sent, {report['unchanged']} unchanged, "
        f"{report['deactivated']} deactivated"
    )
    for skipped in report["skipped"]:
        typer.echo(f"skipped item {skipped['position']} ({skipped['id'] or 'no id'}): {skipped['reason']}")
    for warning in report["warnings"]:
        typer.echo(f"warning, item {warning['position']} ({warning['id']}): {warning['reason']}")


def import_orders_command(
    file: Path = typer.Argument(..., help="the orders export (CSV)", show_default=False),
    dry_run: bool = typer.Option(False, "--dry-run", help="read and check, queue nothing"),
) -> None:
    """Import an orders export (CSV) as order.paid would; bad rows are reported and skipped."""
    import asyncio

    from app.caterings.export import ExportError
    from app.db import create_engine, create_session_factory
    from app.logs import configure_logging
    from app.migrate import upgrade_to_head
    from app.settings import store_settings_from_env
    from app.sync.orders_import import import_orders, read_export

    configure_logging("WARNING")
    try:
        orders, errors = read_export(file)
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror or exc}") from None
    except ExportError as exc:
        raise _fail(f"{file}: {exc}") from None
    settings = store_settings_from_env()
    upgrade_to_head(settings.database_url)  # as the bridge does at start-up

    async def _run():  # type: ignore[no-untyped-def]
        engine = create_engine(settings.database_url)
        try:
            return await import_orders(
                create_session_factory(engine),
                orders,
                errors,
                tz=settings.tz,
                file_name=file.name,
                dry_run=dry_run,
            )
        finally:
            await engine.dispose()

    report = asyncio.run(_run())
    for error in report.errors:
        where = f"line {error.line}" if error.line else "order"
        typer.echo(f"{file.name}: {where}: {error.reason}", err=True)
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(report.by_status.items())) or "none"
    verb = "would queue" if dry_run else "queued"
    typer.echo(
        f"{report.imported} orders imported ({statuses}); {len(report.errors)} bad rows skipped; "
        f"{report.deliveries} deliveries {verb}"
    )
    raise typer.Exit(0 if report.ok else 1)


def register(cli: typer.Typer) -> None:
    """Add the sync commands to the ``bridge`` command."""
    cli.add_typer(sync_cli, name="sync")
    cli.command("import-orders")(import_orders_command)
