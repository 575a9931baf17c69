"""Real server processes on loopback: the demo, end-to-end tests and benchmarks use them.

Each server runs in its own process group, so a test can SIGKILL it (and whatever it started)
the way an orchestrator or the kernel would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SECRET = "whsec_c2FtcGxlLXNlY3JldC1mb3ItbG9jYWwtdGVzdHMtb25seS0zMmI="
USERCOM_KEY = "test-usercom-key"
CATERINGS_TOKEN = "test-caterings-token"
ADMIN_TOKEN = "test-admin-token"
CONSENT_TOKEN = "test-consent-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A server started as ``python -m ...`` that answers ``health_path`` when ready."""

    name: str
    args: list[str]
    port: int
    health_path: str
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, *self.args], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; log: {self.log_tail()}")
            try:
                if httpx.get(self.url + self.health_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.name} did not become ready in {timeout}s; log: {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, no chance to clean up: what a crash looks like."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: a graceful stop. Returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)


def fake_usercom(port: int | None = None, rate_limit: float | None = None, log_path: Path | None = None) -> ServerProcess:
    port = port or free_port()
    args = ["-m", "app.fakes.usercom", "--host", "127.0.0.1", "--port", str(port), "--api-key", USERCOM_KEY]
    if rate_limit:
        args += ["--rate-limit", str(rate_limit)]
    return ServerProcess("fake-usercom", args, port, "/_fake/health", log_path=log_path)


def fake_caterings(port: int | None = None, users: int = 0, orders: int = 0, seed: int = 1,
                   log_path: Path | None = None, extra_args: list[str] | None = None) -> ServerProcess:
    port = port or free_port()
    args = ["-m", "app.fakes.caterings", "--host", "127.0.0.1", "--port", str(port), "--token", CATERINGS_TOKEN,
            "--users", str(users), "--orders", str(orders), "--seed", str(seed), *(extra_args or [])]
    return ServerProcess("fake-caterings", args, port, "/_fake/health", log_path=log_path)


def bridge_env(database_url: str, usercom_url: str, caterings_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "USERCOM_API_URL": f"{usercom_url}/api/public/",
        "USERCOM_API_KEY": USERCOM_KEY,
        "CATERINGS_API_URL": caterings_url + "/",
        "CATERINGS_API_TOKEN": CATERINGS_TOKEN,
        "CATERINGS_WEBHOOK_SECRET": SAMPLE_SECRET,
        "CATERINGS_FEED_URL": f"{caterings_url}/feed.xml",
        "CONSENT_CALLBACK_TOKEN": CONSENT_TOKEN,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "LOG_FORMAT": "json",
        "RETRY_BASE_SECONDS": "0.2",
        "RETRY_CAP_SECONDS": "2",
        "LEASE_SECONDS": "5",
    }
    env.update(overrides)
    return env


def bridge(env: Mapping[str, str], port: int | None = None, log_path: Path | None = None,
           command: str = "serve") -> ServerProcess:
    port = port or free_port()
    args = ["-m", "app.cli", command] + (["--host", "127.0.0.1", "--port", str(port)] if command == "serve" else [])
    return ServerProcess(f"bridge-{command}", args, port, "/health", env=dict(env), log_path=log_path)


def fake_state(base_url: str) -> dict:  # type: ignore[type-arg]
    return httpx.get(base_url + "/_fake/state", timeout=10).json()


def fake_config(base_url: str, **settings: object) -> None:
    httpx.post(base_url + "/_fake/config", json=settings, timeout=10).raise_for_status()


def signed_webhook(body: dict, webhook_id: str, secret: str = SAMPLE_SECRET, timestamp: int | None = None
                   ) -> tuple[bytes, dict[str, str]]:  # type: ignore[type-arg]
    from app.caterings.signature import signed_headers

    raw = json.dumps(body).encode()
    return raw, signed_headers(raw, webhook_id, int(timestamp if timestamp is not None else time.time()), secret)


def sample_webhooks() -> list[dict]:  # type: ignore[type-arg]
    path = PROJECT_ROOT / "samples" / "webhooks.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def outbox_summary(bridge_url: str) -> dict[str, int]:
    response = httpx.get(bridge_url + "/deliveries/summary", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                         timeout=10)
    response.raise_for_status()
    return response.json()["by_state"]


def drained(bridge_url: str) -> bool:
    summary = outbox_summary(bridge_url)
    return summary.get("pending", 0) == 0 and summary.get("in_flight", 0) == 0
