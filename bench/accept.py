"""Accept: signed ``order.paid`` webhooks into ``bridge serve``, beside the bare stack.

For each database (SQLite, PostgreSQL) two servers are measured the same way, each on a fresh
database: the bridge (``bridge serve``: uvicorn, in-process worker on, delivering to a fake
User.com at the default rate) and ``bench.bare_app`` (one INSERT of the body, nothing else).
Each gets a warm-up, then a fixed offered rate (open loop), then flat out (closed loop), both from
``bench.loadgen`` in its own process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench import common
from bench.common import Databases, RunDir

FIXED_RATE = 200.0
TARGET_RATIO = 0.7
TARGET_P99_MS_SQLITE = 25.0


def loadgen(url: str, *, size: dict[str, Any], run_id: str, server_pid: int | None = None) -> dict[str, Any]:
    """Warm-up, then the fixed rate, then flat out, from one load-generator process."""
    args = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--url",
        url,
        "--run-id",
        run_id,
        "--warmup",
        str(size["accept_warmup"]),
        "--rate",
        str(FIXED_RATE),
        "--rate-count",
        str(size["accept_rate_count"]),
        "--concurrency",
        str(size["accept_concurrency"]),
        "--closed-count",
        str(size["accept_flat_count"]),
    ]
    if server_pid:
        args += ["--server-pid", str(server_pid)] + (["--settle"] if size["accept_settle"] else [])
    done = subprocess.run(
        args, cwd=common.PROJECT_ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    flat = result.get("closed")
    if flat is not None and "closed_settle_s" in result:
        flat["waited_for_quiet_server_s"] = result["closed_settle_s"]
    return {"rate_200": result.get("rate"), "flat_out": flat}


def _cpu_rate(pid: int, seconds: float) -> float:
    before = common.cpu_seconds(pid)
    time.sleep(seconds)
    return round((common.cpu_seconds(pid) - before) / seconds, 3)


def run(
    run_dir: RunDir, databases: Databases, size: dict[str, Any], backends: list[str], skipped: dict[str, str]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    usercom = common.fake_usercom(run_dir, "accept-fake-usercom")
    try:
        for backend in ["sqlite", "postgresql"]:
            if backend not in backends:
                results[backend] = {"skipped": skipped.get(backend, "not selected")}
                continue
            run_id = f"{backend[:2]}{int(time.time())}"
            entry: dict[str, Any] = {}
            url = databases.new(backend, "accept-bridge")
            bridge = common.bridge(run_dir, f"accept-bridge-{backend}", common.bridge_env(url, usercom.url))
            common.progress(f"accept/{backend}: starting the bridge")
            if usercom.process is None:
                common.start_all(usercom, bridge)
            else:
                bridge.start(timeout=60)
            with common.running(bridge):
                assert bridge.process is not None
                common.progress(f"accept/{backend}: load on the bridge")
                entry["bridge"] = loadgen(
                    bridge.url, size=size, run_id=run_id + "b", server_pid=bridge.process.pid
                )
                # The in-process worker keeps delivering the backlog (at USERCOM_RATE_LIMIT) while
                # webhooks come in; its CPU with no webhooks coming in tells the two costs apart.
                entry["bridge"]["worker_cpu_s_per_s"] = _cpu_rate(
                    bridge.process.pid, size["accept_idle_probe_s"]
                )
                common.progress(f"accept/{backend}: stopping the bridge")
            url = databases.new(backend, "accept-bare")
            common.progress(f"accept/{backend}: starting the bare app")
            with common.running(common.start_bare(run_dir, f"accept-bare-{backend}", url)) as bare:
                assert bare.process is not None
                common.progress(f"accept/{backend}: load on the bare app")
                entry["bare"] = loadgen(bare.url, size=size, run_id=run_id + "n", server_pid=bare.process.pid)
            common.progress(f"accept/{backend}: done")
            bridge_flat = entry["bridge"]["flat_out"]["throughput_rps"]
            bare_flat = entry["bare"]["flat_out"]["throughput_rps"]
            entry["ratio_flat_out"] = round(bridge_flat / bare_flat, 3) if bare_flat else None
            for server in ("bridge", "bare"):
                for phase in entry[server].values():
                    if isinstance(phase, dict) and phase.get("ok") and "server_cpu_s" in phase:
                        phase["server_cpu_ms_per_request"] = round(
                            1000 * phase["server_cpu_s"] / phase["ok"], 2
                        )
            worker_rate = entry["bridge"]["worker_cpu_s_per_s"]
            for phase in entry["bridge"].values():
                if isinstance(phase, dict) and phase.get("ok") and "server_cpu_s" in phase:
                    accept_only = phase["server_cpu_s"] - worker_rate * phase["elapsed_s"]
                    phase["accept_cpu_ms_per_request_est"] = round(
                        1000 * max(0.0, accept_only) / phase["ok"], 2
                    )
            # CPU per request does not depend on how much CPU other processes left the server: it
            # is the ratio flat out would reach with a core to itself (and a generator elsewhere).
            bridge_cpu = entry["bridge"]["flat_out"].get("server_cpu_ms_per_request")
            bare_cpu = entry["bare"]["flat_out"].get("server_cpu_ms_per_request")
            entry["cpu_ratio_flat_out"] = round(bare_cpu / bridge_cpu, 3) if bridge_cpu and bare_cpu else None
            entry["targets"] = {
                "flat_out_ratio_min": TARGET_RATIO,
                "flat_out_ratio_met": entry["ratio_flat_out"] is not None
                and entry["ratio_flat_out"] >= TARGET_RATIO,
            }
            if backend == "sqlite":
                p99 = entry["bridge"]["rate_200"]["p99_ms"]
                entry["targets"].update(
                    {
                        "rate_200_p99_ms_max": TARGET_P99_MS_SQLITE,
                        "rate_200_p99_met": p99 < TARGET_P99_MS_SQLITE,
                    }
                )
            results[backend] = entry
    finally:
        usercom.terminate()
    return results
