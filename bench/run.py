"""The benchmark command: accept, drain, full sync and translation, side by side, in one run.

    python -m bench                       # default size (about 25 minutes on 2 cores)
    python -m bench --size tiny           # a quick pass over every part (the smoke test runs this)
    python -m bench --only accept,translate

Prints a table and writes it, with every measured number, as JSON to bench/results/latest.json
(or ``--output``). The PostgreSQL parts run when a server answers at ``BENCH_POSTGRES_URL`` /
``TEST_POSTGRES_URL`` (default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``); each
benchmark creates its own ``bench_<random>`` database there and drops it afterwards.

Every server and the load generator run as separate processes on loopback, on the same machine:
they compete for its CPUs, which the table's note states.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

SECTIONS = ("accept", "drain", "sync", "translate")
BUSY_SHARE = 0.05  # other work using more than this share of the CPUs during a part is worth a note

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {
        "accept_warmup": 10,
        "accept_rate_count": 60,
        "accept_idle_probe_s": 1.0,
        "accept_settle": False,
        "accept_flat_count": 100,
        "accept_concurrency": 16,
        "drain_count": 100,
        "sync_users": 200,
        "sync_orders": 200,
        "translate_seconds": 0.3,
        "timeout_s": 120,
    },
    "default": {
        "accept_warmup": 300,
        "accept_rate_count": 3000,
        "accept_idle_probe_s": 5.0,
        "accept_settle": True,
        "accept_flat_count": 6000,
        "accept_concurrency": 32,
        "drain_count": 10_000,
        "sync_users": 20_000,
        "sync_orders": 20_000,
        "translate_seconds": 5.0,
        "timeout_s": 3600,
    },
}


def code_version() -> dict[str, Any]:
    """The commit measured, and the files under app/ that differed from it when the run started."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=common.PROJECT_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "app", "migrations").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted_app_files": changed}


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --- the table -------------------------------------------------------------------------------


def _met(flag: bool | None) -> str:
    return "" if flag is None else ("met" if flag else "MISSED")


def _lat(r: dict[str, Any]) -> str:
    text = f"{r['throughput_rps']:.0f} req/s, p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f}"
    text += f" / max {r['max_ms']:.0f} ms"
    if r.get("server_cpu_ms_per_request") is not None:
        text += f", server CPU {r['server_cpu_ms_per_request']:.1f} ms/req"
        if r.get("accept_cpu_ms_per_request_est") is not None:
            text += f" (worker aside: {r['accept_cpu_ms_per_request_est']:.1f})"
    return text


def table_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []

    def add(bench: str, case: str, result: str, versus: str = "", target: str = "", met: str = "") -> None:
        rows.append(
            {
                "benchmark": bench,
                "case": case,
                "result": result,
                "vs limit": versus,
                "target": target,
                "met": met,
            }
        )

    accept = results.get("accept")
    if isinstance(accept, dict):
        for backend in ("sqlite", "postgresql"):
            entry = accept.get(backend)
            if not entry:
                continue
            name = f"accept/{backend}"
            if "skipped" in entry or "error" in entry:
                add(name, "(not run)", entry.get("skipped") or entry.get("error", ""))
                continue
            bridge, bare = entry["bridge"], entry["bare"]
            rate_ok = entry["targets"].get("rate_200_p99_met")
            fixed_ratio = (
                bridge["rate_200"]["throughput_rps"] / bare["rate_200"]["throughput_rps"]
                if bare["rate_200"]["throughput_rps"]
                else 0
            )
            add(
                name,
                "bridge, 200/s offered",
                _lat(bridge["rate_200"]),
                f"{fixed_ratio:.2f} of bare",
                "p99 < 25 ms" if backend == "sqlite" else "",
                _met(rate_ok),
            )
            add(name, "bare, 200/s offered", _lat(bare["rate_200"]))
            conc = bridge["flat_out"].get("concurrency", "")
            add(
                name,
                f"bridge, flat out ({conc} conn)",
                _lat(bridge["flat_out"]),
                f"{entry['ratio_flat_out']:.2f} of bare"
                + (
                    f" (CPU/req: {entry['cpu_ratio_flat_out']:.2f})"
                    if entry.get("cpu_ratio_flat_out")
                    else ""
                ),
                ">= 0.70 of bare",
                _met(entry["targets"]["flat_out_ratio_met"]),
            )
            add(name, f"bare, flat out ({conc} conn)", _lat(bare["flat_out"]), "1.00")
    drain = results.get("drain")
    if isinstance(drain, dict):
        if "error" in drain:
            add("drain", "(failed)", drain["error"])
        else:
            add(
                "drain",
                f"{drain['deliveries']:,} user upserts, L = {drain['rate_limit']:g}/s",
                f"{drain['achieved_rps']:.1f} req/s, {drain['rate_limited_429']} x 429, "
                f"{drain['time_to_empty_s']:.1f} s to empty",
                f"{drain['utilisation']:.3f} of L",
                ">= 0.95 of L",
                _met(drain["target_met"]),
            )
    sync = results.get("sync")
    if isinstance(sync, dict):
        if "skipped" in sync or "error" in sync:
            add("sync", "(not run)", sync.get("skipped") or sync.get("error", ""))
        else:
            targets = sync.get("targets") or {}
            add(
                "sync",
                f"{sync['users']:,} users + {sync['orders']:,} orders, L = {sync['rate_limit']:g}/s",
                f"{sync['wall_s']:.1f} s for {sync['usercom_calls']:,} calls",
                f"{sync['wall_over_bound']:.2f} x bound ({sync['lower_bound_s']:.1f} s)",
                f"<= {targets.get('wall_over_bound_max', 1.1):.2f} x bound",
                _met(targets["wall_met"]) if "wall_met" in targets else "",
            )
            if "idle_rss_mib" in sync:
                add(
                    "sync",
                    "bridge memory during the sync",
                    f"RSS idle {sync['idle_rss_mib']:.0f} MiB, peak {sync['peak_rss_mib']:.0f} MiB",
                    f"+{sync['peak_over_idle_mib']:.0f} MiB",
                    f"<= +{targets.get('peak_over_idle_mib_max', 50):.0f} MiB",
                    _met(targets["memory_met"]) if "memory_met" in targets else "",
                )
            second = sync.get("second_run") or {}
            if second:
                add(
                    "sync",
                    "same data again (second run)",
                    f"{second['wall_s']:.1f} s, {second['usercom_calls']:,} calls; "
                    f"{second['calls_saved']:,} saved by skipping unchanged",
                )
    translate = results.get("translate")
    if isinstance(translate, dict):
        if "error" in translate:
            add("translate", "(failed)", translate["error"])
        else:
            add(
                "translate",
                "order.paid: parse + plan, no I/O",
                f"{translate['webhooks_per_s']:,} webhooks/s ({translate['us_per_webhook']} us each); "
                f"with json.loads {translate['with_json_loads_per_s']:,}/s",
            )
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(nothing measured)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    line = " | ".join(c.ljust(widths[c]) for c in columns)
    rule = "-+-".join("-" * widths[c] for c in columns)
    body = [" | ".join(r[c].ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join([line, rule, *body])


# --- running ---------------------------------------------------------------------------------


def run(size_name: str, only: list[str], output: Path, rate_limit: float) -> dict[str, Any]:
    size = dict(SIZES[size_name])
    run_dir = common.RunDir.create()
    databases = common.Databases(run_dir)
    pg_ok, pg_reason = common.postgres_reachable()
    backends = ["sqlite"] + (["postgresql"] if pg_ok else [])
    skipped = (
        {}
        if pg_ok
        else {"postgresql": f"PostgreSQL not reachable at {common.postgres_admin_url()}: {pg_reason}"}
    )
    if not pg_ok:
        print(f"note: skipping the PostgreSQL part: {skipped['postgresql']}", file=sys.stderr)

    results: dict[str, Any] = {}
    started = time.time()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(started)),
        "size": size_name,
        "sections": [s for s in SECTIONS if s in only],
        "machine": machine(),
        "code": code_version(),
        "sizes": size,
        "usercom_rate_limit": rate_limit,
        "postgresql": "used" if pg_ok else skipped["postgresql"],
        "run_dir": str(run_dir.path),
        "note": "servers, fakes and the load generator share this machine's CPUs (loopback); "
        "throughput is what they reach together",
    }

    def write(complete: bool) -> dict[str, Any]:
        """The report so far; written after every part, so an interrupted run keeps what it measured."""
        report = {
            "meta": {**meta, "complete": complete, "duration_s": round(time.time() - started, 1)},
            **results,
            "table": table_rows(results),
        }
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        return report

    try:
        for section in SECTIONS:
            if section not in only:
                continue
            common.progress(section)
            t0 = time.monotonic()
            other_work = common.OtherWork()
            try:
                if section == "accept":
                    from bench import accept

                    results[section] = accept.run(run_dir, databases, size, backends, skipped)
                elif section == "drain":
                    from bench import drain

                    results[section] = drain.run(run_dir, databases, size, rate_limit)
                elif section == "sync":
                    from bench import sync

                    results[section] = sync.run(run_dir, databases, size, rate_limit)
                else:
                    from bench import translate

                    results[section] = translate.run(size)
            except Exception as exc:  # noqa: BLE001 - one failed part must not lose the others' numbers
                traceback.print_exc()
                results[section] = {"error": f"{type(exc).__name__}: {exc}"}
            if isinstance(results[section], dict):
                results[section]["section_seconds"] = round(time.monotonic() - t0, 1)
                # Other people's work on the machine takes CPU from the servers being measured.
                results[section]["other_work_cpu_share"] = other_work.share()
            write(complete=False)
    finally:
        databases.drop_all()

    report = write(complete=True)
    rows = report["table"]
    m = report["meta"]["machine"]
    print(
        f"\nBenchmarks ({size_name}), {report['meta']['date']}, {m['nproc']} CPUs ({m['cpu']}), "
        f"Python {m['python']}"
    )
    code = report["meta"]["code"]
    print(
        f"code: {code['commit']}"
        + (" with uncommitted changes in app/" if code["uncommitted_app_files"] else "")
    )
    print(format_table(rows))
    print(f"note: {report['meta']['note']}.")
    shares = {
        name: part["other_work_cpu_share"]
        for name, part in results.items()
        if isinstance(part, dict) and "other_work_cpu_share" in part
    }
    busy = {name: share for name, share in shares.items() if share > BUSY_SHARE}
    if busy:
        print(
            "note: other work was running on this machine (its share of all CPUs during the part: "
            + ", ".join(f"{name} {share:.0%}" for name, share in busy.items())
            + "); these numbers are lower than the code reaches on an idle machine."
        )
    print(f"wrote {output}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks of the bridge.")
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated parts to run (of {', '.join(SECTIONS)})"
    )
    parser.add_argument("--output", type=Path, default=common.RESULTS_DIR / "latest.json")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=100.0,
        help="L: User.com requests/second for drain and sync (fake and bridge alike)",
    )
    args = parser.parse_args(argv)
    only = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = [part for part in only if part not in SECTIONS]
    if unknown:
        parser.error(f"unknown part(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    report = run(args.size, only, args.output, args.rate_limit)
    failed = [s for s in only if isinstance(report.get(s), dict) and "error" in report[s]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
