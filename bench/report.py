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
    ("Klaviyo client against the sandbox", "bench_client.py", [], ["--events", "300", "--profiles", "100"],
     "Klaviyo's steady rate ceiling for the endpoint's tier"),
    ("Inbound poll", "bench_poll.py", [], ["--profiles", "5000"],
     "the poll ceiling: 100 profiles per page x the L tier's steady requests/min"),
    ("Outbound dispatch", "bench_dispatch.py", [], ["--customers", "200", "--transactions", "200"],
     "the tiers' steady ceilings; Klaviyo calls per record"),
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (a smoke run, not the published figures)")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
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
