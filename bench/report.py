"""Run every benchmark and write BENCHMARKS.md with the figures, the machine and how to reproduce.

Each benchmark is a script in bench/ that prints its figures beside a reference (plain Python,
Klaviyo's rate ceiling, a bare SQLite executemany). This runs them one after another (never in
parallel: they would measure each other), captures what they print and writes it down verbatim.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

#: (title, script, full arguments, quick arguments, what it compares against)
BENCHES: list[tuple[str, str, list[str], list[str], str]] = [
    ("Mapping throughput per collection", "bench_mapping.py", ["--records", "10000"], ["--records", "2000"],
     "a hand-written plain-Python mapping producing the same payloads"),
    ("Hub import, 10k records each", "bench_hub.py", ["--customers", "10000", "--transactions", "10000", "--triggers"],
     ["--customers", "2000", "--transactions", "2000", "--triggers"], "a bare SQLite executemany of the same rows"),
    ("Hub import, 100k records each", "bench_hub.py", ["--customers", "100000", "--transactions", "100000", "--triggers"],
     ["--customers", "5000", "--transactions", "5000", "--triggers"], "a bare SQLite executemany of the same rows"),
    ("Default settings against the tiers' steady ceilings, full 60 s windows", "bench_ceiling.py", [],
     ["--windows", "1", "--records", "300"], "Klaviyo's steady ceiling of each phase's tier, per fixed window"),
    ("Klaviyo client against the sandbox", "bench_client.py", [], ["--events", "300", "--profiles", "100"],
     "Klaviyo's steady rate ceiling for the endpoint's tier"),
    ("Inbound poll", "bench_poll.py", [], ["--profiles", "5000"],
     "the poll ceiling: 100 profiles per page x the L tier's steady requests/min"),
    ("Outbound dispatch", "bench_dispatch.py", [], ["--customers", "200", "--transactions", "200", "--existing", "200"],
     "the tiers' steady ceilings; Klaviyo calls per record"),
    ("Service API ingestion and delay to Klaviyo", "bench_service.py", [], ["--customers", "1000", "--delays", "5"],
     "hub import of the same records; Klaviyo's L tier for the delay"),
    ("Client CPU per HTTP request", "bench_http.py", [], ["--requests", "500", "--repeat", "2"],
     "a bare aiohttp client posting the same events"),
    ("Sandbox CPU of one 10,000-profile bulk import job", "bench_jobs.py", [], ["--profiles", "2000"],
     "the 5 s target for a 10,000-profile job"),
    ("Backfill of Customers through bulk import jobs", "bench_backfill.py", [],
     ["--customers", "2000,4000", "--job-delay", "1"],
     "the per-profile path: one POST /api/profiles per Customer inside the L tier's 700 a minute"),
    ("Sandbox CPU per write and a 50,000-Customer dispatch", "bench_sandbox.py", [],
     ["--sizes", "1000,10000", "--writes", "500", "--repeat", "1", "--dispatch", "2000"],
     "a bare aiohttp server answering the same requests"),
    ("Four processes sharing one account's rate budget in Redis", "bench_shared_budget.py", [],
     ["--minutes", "1.5"], "the account's tier ceilings, per full 60 s window and per 1 s window"),
    ("Many subscriptions dispatched by 1, 2 and 4 workers", "bench_scale.py", [],
     ["--subscriptions", "10", "--customers", "100", "--workers", "1,2"],
     "the sum of the accounts' steady ceilings for the same records; the machine's cores"),
]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
            f"CPython {platform.python_version()}")


def run_one(script: str, cmd_args: list[str]) -> tuple[str, float, int]:
    """Run one benchmark; its printed figures, the seconds it took and its exit code."""
    t0 = time.monotonic()
    proc = subprocess.run([PY, str(ROOT / "bench" / script), *cmd_args], cwd=ROOT, capture_output=True, text=True)
    out = (proc.stdout + (("\n" + proc.stderr) if proc.returncode else "")).rstrip()
    return out, time.monotonic() - t0, proc.returncode


def rerun(only: str, out_path: Path, *, quick: bool) -> int:
    """Replace the sections of the benchmarks matching ``only`` in ``out_path``."""
    text = out_path.read_text()
    failed = 0
    for title, script, full, quick_args, reference in BENCHES:
        if only.lower() not in title.lower():
            continue
        cmd_args = quick_args if quick else full
        print(f"== {title}", flush=True)
        out, took, rc = run_one(script, cmd_args)
        print(out, flush=True)
        failed += rc != 0
        if f"## {title}\n" not in text:  # a benchmark newer than the report: add its section
            shown = " ".join([".venv/bin/python", f"bench/{script}", *cmd_args])
            text = text.rstrip("\n") + f"\n\n## {title}\n\nReference: {reference}.\n\nCommand: `{shown}`\n\n```text\n\n```\n\n(\n"
        start = text.index(f"## {title}\n")
        block_start = text.index("```text\n", start)
        block_end = text.index("\n```\n", block_start) + len("\n```\n")
        tail_end = text.index("\n", text.index("(", block_end)) + 1
        when = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        text = (text[:block_start] + "```text\n" + out + "\n```\n\n"
                + f"({took:.0f} s; section re-run alone on {when} with `bench/run --only \"{only}\"`)\n"
                + text[tail_end:])
    out_path.write_text(text)
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run, not the published figures)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--only", metavar="TEXT", help="re-run only the benchmarks whose title contains TEXT and "
                    "replace their sections in an existing report (each re-run section says when it ran)")
    args = ap.parse_args()
    if args.only:
        return rerun(args.only, Path(args.out), quick=args.quick)
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    parts = [
        "# Benchmarks", "",
        f"Written by `bench/run{' --quick' if args.quick else ''}` on {started.isoformat()}.", "",
        f"Machine: {machine()}.", "",
        "Every figure below is printed by the benchmark itself beside its reference, in the same run. "
        "Reproduce all of them with `bench/run` (or one with the command under its heading). "
        "Benchmarks against the sandbox run it in-process on loopback with Klaviyo's real rate tiers "
        "unless the heading says otherwise.", "",
    ]
    failed = 0
    for title, script, full, quick, reference in BENCHES:
        path = ROOT / "bench" / script
        cmd_args = quick if args.quick else full
        shown = " ".join([".venv/bin/python", f"bench/{script}", *cmd_args])
        parts += [f"## {title}", "", f"Reference: {reference}.", "", f"Command: `{shown}`", ""]
        if not path.exists():
            parts += ["(not present in this checkout)", ""]
            continue
        print(f"== {title}: {shown}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run([PY, str(path), *cmd_args], cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - t0
        out = (proc.stdout + (("\n" + proc.stderr) if proc.returncode else "")).rstrip()
        print(out, flush=True)
        if proc.returncode:
            failed += 1
        parts += ["```text", out, "```", "",
                  f"({took:.0f} s{'; exit ' + str(proc.returncode) if proc.returncode else ''})", ""]
    Path(args.out).write_text("\n".join(parts))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
