"""The demo: the bridge on SQLite between a fake User.com and a fake Caterings, on the samples.

It starts the three servers on loopback, sends the sample Caterings webhooks signed at send
time, the sample User.com consent callbacks, syncs the sample product feed and imports the
sample orders export, waits until the outbox is drained and prints what landed where.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app import local_stack as stack
from app.fakes.usercom import dump

SAMPLES = stack.PROJECT_ROOT / "samples"


def _heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.ADMIN_TOKEN}"}


def send_webhooks(bridge_url: str) -> None:
    _heading("Caterings webhooks (samples/webhooks.jsonl), signed now")
    for record in stack.sample_webhooks():
        raw, headers = stack.signed_webhook(record["body"], record["webhook_id"])
        answer = httpx.post(f"{bridge_url}/webhooks/caterings", content=raw, headers=headers, timeout=10)
        print(f"{record['webhook_id']:<22} {record['body']['type']:<22} -> {answer.status_code} {answer.json()}")


def send_consents(bridge_url: str) -> None:
    _heading("User.com consent callbacks (samples/consent-callbacks.jsonl)")
    lines = (SAMPLES / "consent-callbacks.jsonl").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(filter(None, lines), start=1):
        answer = httpx.post(
            f"{bridge_url}/webhooks/usercom/consent", params={"token": stack.CONSENT_TOKEN},
            content=line.encode(), headers={"content-type": "application/json"}, timeout=10,
        )
        print(f"callback {number}: {answer.status_code} {answer.text}")


def sync_feed(bridge_url: str) -> None:
    _heading("Product feed (samples/feed.xml)")
    answer = httpx.post(f"{bridge_url}/sync/feed", headers=_admin(), timeout=60)
    print(f"{answer.status_code} {json.dumps(answer.json(), ensure_ascii=False, indent=1)}")


def import_orders(env: dict[str, str]) -> None:
    _heading("Orders export (samples/orders-export.csv)")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "import-orders", str(SAMPLES / "orders-export.csv")],
        cwd=stack.PROJECT_ROOT, env={**__import__("os").environ, **env}, capture_output=True, text=True,
    )
    print((result.stdout + result.stderr).strip())


def wait_drained(bridge_url: str, timeout: float = 120) -> None:
    stack.wait_until(lambda: stack.drained(bridge_url), timeout=timeout, interval=0.2, what="the outbox to drain")


def show_results(bridge_url: str, usercom_url: str, caterings_url: str) -> None:
    _heading("What landed in User.com")
    print(dump(stack.fake_state(usercom_url)))
    _heading("Dead deliveries (parked for an operator)")
    dead = httpx.get(f"{bridge_url}/deliveries", params={"state": "dead"}, headers=_admin(), timeout=10)
    items = dead.json().get("items", []) if dead.status_code == 200 else []
    for item in items:
        print(f"#{item['id']} {item['kind']} {item['lane']}: {item.get('last_status')} {item.get('last_error')}")
    if not items:
        print("none")
    _heading("What Caterings received (marketing consents)")
    for agreement in stack.fake_state(caterings_url).get("agreements", []):
        print(agreement)
    _heading("Outbox")
    print(stack.outbox_summary(bridge_url))


def run_demo(keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bridge-demo-"))
    print(f"demo files and logs in {workdir}")
    usercom = stack.fake_usercom(log_path=workdir / "fake-usercom.log").start()
    caterings = stack.fake_caterings(log_path=workdir / "fake-caterings.log").start()
    env = stack.bridge_env(f"sqlite+aiosqlite:///{workdir / 'bridge.db'}", usercom.url, caterings.url,
                           LOG_FORMAT="json", LEASE_SECONDS="30")
    bridge = stack.bridge(env, log_path=workdir / "bridge.log").start()
    print(f"bridge {bridge.url}  fake User.com {usercom.url}  fake Caterings {caterings.url}")
    try:
        send_webhooks(bridge.url)
        wait_drained(bridge.url)
        send_consents(bridge.url)
        sync_feed(bridge.url)
        import_orders(env)
        wait_drained(bridge.url)
        time.sleep(0.5)
        show_results(bridge.url, usercom.url, caterings.url)
        if keep:
            input("\nservers still running; press Enter to stop them ")
        return 0
    finally:
        bridge.terminate()
        usercom.kill()
        caterings.kill()
