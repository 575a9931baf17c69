"""``bridge sync full|status|feed`` against a bridge API stood in for by respx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from typer.testing import CliRunner

from app.cli import cli
from app.sync import cli as sync_cli

BRIDGE = "http://bridge.test"
TOKEN = ["--url", BRIDGE, "--token", "admin-t"]


def job(state: str, **changes: Any) -> dict[str, Any]:
    base = {
        "id": 7,
        "kind": "full",
        "state": state,
        "phase": "users",
        "next_page": 3,
        "done": 200,
        "failed": 1,
        "total": None,
        "deliveries": 230,
        "dry_run": False,
        "last_error": None,
    }
    base.update(changes)
    return base


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_cli.time, "sleep", lambda _s: None)
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("BRIDGE_URL", raising=False)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["sync", *args])


@respx.mock(assert_all_called=False)
def test_full_starts_a_job_and_follows_it_to_the_end(respx_mock) -> None:  # type: ignore[no-untyped-def]
    start = respx_mock.post(f"{BRIDGE}/sync/full").respond(202, json={"job_id": 7})
    respx_mock.get(f"{BRIDGE}/sync/jobs/7").mock(
        side_effect=[
            httpx.Response(200, json=job("running")),
            httpx.Response(200, json=job("running", phase="orders", next_page=1, done=400)),
            httpx.Response(200, json=job("done", phase="orders", next_page=2, done=500, total=501)),
        ]
    )
    result = invoke("full", "--no-users", "--dry-run", *TOKEN)
    assert result.exit_code == 0, result.output
    assert start.calls.last.request.headers["authorization"] == "Bearer admin-t"
    assert start.calls.last.request.read() == b'{"users":false,"orders":true,"dry_run":true}'
    lines = result.stdout.splitlines()  # not a terminal: plain lines, one per change
    assert lines[0] == "started full sync job 7"
    assert lines[-1] == "job 7 done phase=orders next_page=2 done=500 failed=1 deliveries=230 total=501"
    assert len(lines) == 4


@respx.mock(assert_all_called=False)
def test_status_of_a_failed_job_exits_1_and_shows_the_error(respx_mock) -> None:  # type: ignore[no-untyped-def]
    respx_mock.get(f"{BRIDGE}/sync/jobs/7").respond(
        200, json=job("failed", last_error="Caterings users page 3: 401")
    )
    result = invoke("status", "7", *TOKEN)
    assert result.exit_code == 1
    assert "last error: Caterings users page 3: 401" in result.stdout
    assert invoke("status", "7", "--no-follow", *TOKEN).exit_code == 1


@respx.mock(assert_all_called=False)
def test_status_without_following_a_running_job_exits_0(respx_mock) -> None:  # type: ignore[no-untyped-def]
    respx_mock.get(f"{BRIDGE}/sync/jobs/7").respond(200, json=job("running"))
    result = invoke("status", "7", "--no-follow", *TOKEN)
    assert result.exit_code == 0 and "job 7 running" in result.stdout


@respx.mock(assert_all_called=False)
def test_a_running_job_a_wrong_token_and_an_unreachable_bridge_exit_2(respx_mock) -> None:  # type: ignore[no-untyped-def]
    respx_mock.post(f"{BRIDGE}/sync/full").respond(
        409, json={"detail": "a full sync is already running", "job_id": 3}
    )
    busy = invoke("full", *TOKEN)
    assert busy.exit_code == 2 and "bridge sync status 3" in busy.stderr
    respx_mock.get(f"{BRIDGE}/sync/jobs/3").respond(401, json={"detail": "admin token missing or wrong"})
    refused = invoke("status", "3", *TOKEN)
    assert refused.exit_code == 2 and "refused the admin token" in refused.stderr
    respx_mock.get(f"{BRIDGE}/sync/jobs/4").mock(side_effect=httpx.ConnectError("refused"))
    down = invoke("status", "4", *TOKEN)
    assert down.exit_code == 2 and "cannot reach the bridge" in down.stderr
    respx_mock.get(f"{BRIDGE}/sync/jobs/5").respond(404, json={"detail": "no sync job 5"})
    assert invoke("status", "5", *TOKEN).exit_code == 2


def test_the_token_is_required_and_nothing_to_do_is_refused() -> None:
    assert invoke("full", "--url", BRIDGE).exit_code == 2
    result = invoke("full", "--no-users", "--no-orders", *TOKEN)
    assert result.exit_code == 2 and "nothing to do" in result.stderr


@respx.mock(assert_all_called=False)
def test_on_a_terminal_the_job_is_shown_as_a_progress_display(respx_mock, capsys) -> None:  # type: ignore[no-untyped-def]
    respx_mock.get(f"{BRIDGE}/sync/jobs/7").mock(
        side_effect=[
            httpx.Response(200, json=job("running")),
            httpx.Response(200, json=job("done", total=201)),
        ]
    )
    final = sync_cli.follow(BRIDGE, "admin-t", 7, interval=0, tty=True)
    assert final["state"] == "done"
    assert "job 7 done" in capsys.readouterr().out


@respx.mock(assert_all_called=False)
def test_feed_prints_the_report(respx_mock) -> None:  # type: ignore[no-untyped-def]
    respx_mock.post(f"{BRIDGE}/sync/feed").respond(
        200,
        json={
            "items": 5,
            "sent": 1,
            "unchanged": 4,
            "deactivated": 0,
            "sent_ids": ["9-2-30"],
            "deactivated_ids": [],
            "skipped": [{"position": 6, "id": None, "reason": "no g:id"}],
            "warnings": [{"position": 2, "id": "9-2-30", "reason": "price 'x' is not a number"}],
        },
    )
    result = invoke("feed", *TOKEN)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "feed: 5 items, 1 sent, 4 unchanged, 0 deactivated",
        "skipped item 6 (no id): no g:id",
        "warning, item 2 (9-2-30): price 'x' is not a number",
    ]
    respx_mock.post(f"{BRIDGE}/sync/feed").respond(502, json={"detail": "feed answered HTTP 503"})
    failed = invoke("feed", *TOKEN)
    assert failed.exit_code == 2 and "feed answered HTTP 503" in failed.stderr
