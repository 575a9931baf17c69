"""The benchmark command runs end to end on its tiny size, prints its table and writes its JSON.

Speed is not asserted here (numbers on a shared machine say little); only that every part ran
and reported what it should. The PostgreSQL part is skipped, with the reason, where no
PostgreSQL server answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOUND_SECONDS = 240  # the tiny run takes under a minute on 2 idle cores; this only stops a hang

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    output = tmp_path_factory.mktemp("bench") / "tiny.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BOUND_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"benchmark failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, json.loads(output.read_text(encoding="utf-8")), output


def test_prints_the_table_and_where_it_wrote(tiny_run: tuple[Any, dict[str, Any], Path]) -> None:
    done, _report, output = tiny_run
    assert "benchmark" in done.stdout and "| case" in done.stdout and "| vs limit" in done.stdout
    for part in ("accept/sqlite", "drain", "sync", "translate"):
        assert part in done.stdout
    assert f"wrote {output}" in done.stdout


def test_json_has_every_part(tiny_run: tuple[Any, dict[str, Any], Path]) -> None:
    _done, report, _output = tiny_run
    assert {"meta", "accept", "drain", "sync", "translate", "table"} <= set(report)
    meta = report["meta"]
    assert meta["size"] == "tiny" and meta["machine"]["nproc"] >= 1 and meta["machine"]["python"]
    assert report["table"] and {"benchmark", "case", "result", "vs limit", "target", "met"} <= set(
        report["table"][0]
    )

    sqlite = report["accept"]["sqlite"]
    for server in ("bridge", "bare"):
        for phase in ("rate_200", "flat_out"):
            result = sqlite[server][phase]
            assert result["ok"] == result["sent"] > 0, result["statuses"]
            assert {"throughput_rps", "p50_ms", "p99_ms", "max_ms"} <= set(result)
    assert sqlite["ratio_flat_out"] > 0 and "flat_out_ratio_met" in sqlite["targets"]

    drain = report["drain"]
    assert drain["by_state"] == {"done": drain["deliveries"]}
    assert {"achieved_rps", "utilisation", "rate_limited_429", "time_to_empty_s"} <= set(drain)

    sync = report["sync"]
    assert sync["job"]["state"] == "done" and sync["usercom_calls"] > 0
    assert {"wall_s", "lower_bound_s", "peak_rss_mib", "skipped_unchanged"} <= set(sync)
    assert sync["second_run"]["job"]["state"] == "done" and "calls_saved" in sync["second_run"]

    assert report["translate"]["webhooks_per_s"] > 0


def test_postgresql_part(tiny_run: tuple[Any, dict[str, Any], Path]) -> None:
    _done, report, _output = tiny_run
    postgresql = report["accept"]["postgresql"]
    if "skipped" in postgresql:
        pytest.skip(f"PostgreSQL part not run: {postgresql['skipped']}")
    for server in ("bridge", "bare"):
        assert postgresql[server]["flat_out"]["ok"] == postgresql[server]["flat_out"]["sent"] > 0
    assert postgresql["ratio_flat_out"] > 0
