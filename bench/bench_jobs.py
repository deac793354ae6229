"""Sandbox CPU for one bulk profile import job of N profiles (default 10,000, Klaviyo's maximum).

Run: ``.venv/bin/python bench/bench_jobs.py [--profiles 10000] [--seed-profiles 0]``

The sandbox runs in a child process (rate limits off), optionally holding
``--seed-profiles`` profiles already.  The parent sends one ``POST
/api/profile-bulk-import-jobs`` with N new profiles (email, phone, names, a location and
two properties each: about 2.4 MB at 10,000) and polls the job until it is ``complete``.
The child's CPU time (user + system, read from ``/proc``) is printed for the POST (JSON
parse and the spec check) and for the processing that follows.  Target: at most 5 s of
sandbox CPU for a 10,000-profile job.  Not a test: figures are printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

HEADERS = {"revision": "2026-07-15", "content-type": "application/vnd.api+json",
           "accept": "application/vnd.api+json", "Authorization": "Klaviyo-API-Key pk_bench_jobs"}


def _serve(queue: Any, seed_profiles: int) -> None:
    from engine.sandbox import SandboxOptions, SandboxServer

    server = SandboxServer(SandboxOptions(rate_limits=False))
    for i in range(seed_profiles):
        server.state.create_profile({"email": f"seed{i}@example.com"})
    handle = server.start_in_thread()
    queue.put(handle.url)
    handle.thread.join()


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", type=int, default=10_000)
    ap.add_argument("--seed-profiles", type=int, default=0)
    args = ap.parse_args()
    queue: Any = mp.Queue()
    child = mp.Process(target=_serve, args=(queue, args.seed_profiles), daemon=True)
    child.start()
    url = queue.get(timeout=600)
    profiles = [{"type": "profile", "attributes": {
        "email": f"p{i}@example.com", "phone_number": f"+1415{i:07d}", "first_name": "F", "last_name": "L",
        "location": {"city": "X", "country": "US"}, "properties": {"n": i, "s": "x" * 20}}} for i in range(args.profiles)]
    body = json.dumps({"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}}).encode()
    with httpx.Client(timeout=600) as http:
        start_cpu, start = _cpu(child.pid), time.monotonic()
        answer = http.post(url + "/api/profile-bulk-import-jobs", content=body, headers=HEADERS)
        answer.raise_for_status()
        posted_cpu = _cpu(child.pid)
        job_id = answer.json()["data"]["id"]
        while True:
            attrs = http.get(f"{url}/api/profile-bulk-import-jobs/{job_id}", headers=HEADERS).json()["data"]["attributes"]
            if attrs["status"] == "complete":
                break
            time.sleep(0.2)
        done_cpu = _cpu(child.pid)
    child.terminate()
    total = done_cpu - start_cpu
    print(f"bulk import of {args.profiles} profiles ({len(body):,} bytes) into {args.seed_profiles} profiles")
    print(f"  sandbox CPU: POST (parse + spec check) {posted_cpu - start_cpu:.2f} s, "
          f"processing {done_cpu - posted_cpu:.2f} s, total {total:.2f} s (target <= 5 s: "
          f"{'met' if total <= 5 else 'NOT met'}); wall {time.monotonic() - start:.1f} s")
    print(f"  job: completed {attrs['completed_count']}, failed {attrs['failed_count']}")


if __name__ == "__main__":
    main()
