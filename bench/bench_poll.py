"""Benchmark: poll N Klaviyo profiles (default 100,000) from the sandbox into a fresh hub.

    .venv/bin/python bench/bench_poll.py [--profiles N] [--no-rate-limits]

The sandbox runs in a child process with Klaviyo's real tier limits (GET /api/profiles
is tier L: 75/s burst, 700/min steady), seeded in-process (not through HTTP) with N
profiles whose ``updated`` times are one second apart, half of them with a complete
address.  The poll runs here with the shipped collections and a hub file in a
temporary folder.  Printed side by side:

- the ceiling: 100 profiles per page x 700 requests/min = 70,000 profiles/min;
- the sandbox alone: the time it takes to serve one page of this data set (measured
  on a separate account so it does not use the poll's rate budget), as profiles/min;
- the hub + mapping work alone: the time spent transferring profiles, as profiles/min;
- the poll end to end, as profiles/min and as a share of the ceiling;
- peak memory (max RSS of this process) when 10%, 50% and 100% of the profiles are done.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.collection import load_collections  # noqa: E402
from engine.flows.inbound import InboundFlow  # noqa: E402
from engine.flows.summary import RunSummary  # noqa: E402
from engine.hub import SqliteHub  # noqa: E402
from engine.klaviyo import KlaviyoClient  # noqa: E402
from engine.sandbox import SandboxOptions, SandboxServer, SandboxState  # noqa: E402

CEILING = 100 * 700  # profiles per page x tier L steady requests per minute


def seed(state: SandboxState, n: int) -> None:
    """N profiles straight into the sandbox's state (copies of one the sandbox made itself)."""
    template = state.create_profile({"email": "template@example.com"})
    del state.profiles[template["id"]]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=n + 60)
    address = {"address1": "1 Main St", "city": "Springfield", "region": "IL", "zip": "62701",
               "country": "United States"}
    for i in range(n):
        p = copy.deepcopy(template)
        p["id"] = f"01BENCH{i:019d}"
        attrs = p["attributes"]
        attrs.update({"email": f"user{i}@example.com", "first_name": f"First{i}", "last_name": f"Last{i}",
                      "organization": "Bench Co", "phone_number": f"+1212{5000000 + i:07d}" if i % 3 else None,
                      "properties": {"Last active": "2024-05-01"} if i % 2 else {}})
        if i % 2 == 0:
            attrs["location"] = dict(address, address1=f"{i} Main St")
        p["created"] = p["updated"] = start + timedelta(seconds=i)
        state.profiles[p["id"]] = p
    state.reindex()


def serve(n: int, rate_limits: bool, conn: Any) -> None:
    """Child process: seed, serve, report the URL, stop when told."""
    state = SandboxState(seed=1)
    t0 = time.perf_counter()
    seed(state, n)
    seeded = time.perf_counter() - t0
    server = SandboxServer(SandboxOptions(rate_limits=rate_limits, seed=1), state=state)

    async def run() -> None:
        url = await server.start()
        conn.send((url, seeded))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop()

    asyncio.run(run())


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


async def sandbox_page_seconds(url: str, pages: int = 5) -> float:
    """Seconds the sandbox takes per page of this data set (a separate account, no processing)."""
    async with KlaviyoClient(base_url=url, api_key="pk_bench_reference") as kl:
        t0, got = time.perf_counter(), 0
        async for _page in kl.iter_profile_pages(sort="updated", page_size=100,
                                                 filter="greater-than(updated,2000-01-01T00:00:00Z)",
                                                 additional_fields=["subscriptions"]):
            got += 1
            if got == pages:
                break
        return (time.perf_counter() - t0) / max(got, 1)


async def bench(url: str, n: int, hub_path: Path) -> dict[str, Any]:
    collections = load_collections().collections
    marks = sorted({max(1, n // 10), max(1, n // 2), n})
    memory: dict[int, float] = {}
    done = [0]
    busy = [0.0]
    hub = SqliteHub(hub_path)
    try:
        async with KlaviyoClient(base_url=url, api_key="pk_bench_poll") as kl:
            flow = InboundFlow(hub, kl, collections, summary=RunSummary("bench poll"))
            transfer = flow.transfer.transfer

            def timed(resource_: Any) -> Any:
                t = time.perf_counter()
                try:
                    return transfer(resource_)
                finally:
                    busy[0] += time.perf_counter() - t

            flow.transfer.transfer = timed  # type: ignore[method-assign]

            def on_profile(_result: Any) -> None:
                done[0] += 1
                if done[0] in marks:
                    memory[done[0]] = max_rss_mb()

            t0 = time.perf_counter()
            await flow.poll(on_profile=on_profile)
            elapsed = time.perf_counter() - t0
    finally:
        hub.close()
    return {"elapsed": elapsed, "done": done[0], "busy": busy[0], "memory": memory, "summary": flow.summary,
            "error": flow.error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000, help="profiles to poll (default 100,000)")
    parser.add_argument("--no-rate-limits", action="store_true", help="serve without Klaviyo's tier limits")
    args = parser.parse_args()
    n = args.profiles

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(n, not args.no_rate_limits, child), daemon=True)
    proc.start()
    url, seeded = parent.recv()
    print(f"sandbox: {n:,} profiles seeded in-process in {seeded:.1f}s at {url} "
          f"(rate limits {'off' if args.no_rate_limits else 'on: tier L 75/s, 700/min'})")
    try:
        page_s = asyncio.run(sandbox_page_seconds(url))
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(bench(url, n, Path(tmp) / "hub.db"))
    finally:
        parent.send("stop")
        proc.join(30)

    minutes = result["elapsed"] / 60
    rate = result["done"] / minutes if minutes else 0.0
    sandbox_rate = 100 / page_s * 60 if page_s else 0.0
    work_rate = result["done"] / (result["busy"] / 60) if result["busy"] else 0.0
    print(f"{'ceiling (100/page x 700 req/min)':<42}{CEILING:>12,.0f} profiles/min")
    print(f"{'sandbox alone (one page: %.0f ms)' % (page_s * 1000):<42}{sandbox_rate:>12,.0f} profiles/min")
    print(f"{'hub + mapping work alone':<42}{work_rate:>12,.0f} profiles/min")
    print(f"{'poll end to end':<42}{rate:>12,.0f} profiles/min  "
          f"({rate / CEILING:.0%} of the ceiling; {result['done']:,} profiles in {result['elapsed']:.1f}s)")
    for count, mb in sorted(result["memory"].items()):
        print(f"  peak memory (max RSS) after {count:>7,} profiles: {mb:7.1f} MB")
    for line in result["summary"].lines():
        print(line)
    if result["error"] is not None:
        print(f"poll ended early: {result['error']}")


if __name__ == "__main__":
    main()
