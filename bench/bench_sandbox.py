"""Sandbox CPU per write as the account grows, and a large dispatch against an unthrottled sandbox.

Run: ``.venv/bin/python bench/bench_sandbox.py [--sizes 10000,100000] [--writes 2000] [--repeat 3]
[--dispatch 50000]``

Part 1 — the sandbox runs in a child process holding N profiles (seeded through
``SandboxState.create_profile``, the path the API takes).  The parent sends
``--writes`` writes over loopback with the engine's client, a quarter of each kind
the engine makes: a lookup by email (``GET /api/profiles?filter=equals(email,…)``),
a new profile (``POST``), a partial update (``PATCH``) and an event (``POST
/api/events``).  The child reports its own CPU time (``time.process_time``) over the
writes.  Reference, in the same run: a bare aiohttp server in a child process that
answers the same requests with a fixed body — the HTTP floor.  Target: CPU per write
at the largest size within 2x of the smallest (O(log n) or better).

Part 2 — ``--dispatch`` Customers go through the real outbound flows (hub file ->
queue -> sandbox in a child process with no rate limits and no latency) and the
wall time is printed (target: minutes, not hours).  Not a test: figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.klaviyo import KlaviyoClient  # noqa: E402

KEY = "pk_bench_sandbox_0000"


def _sandbox_child(n: int, conn: Any, bare: bool) -> None:
    """Serve N profiles (or a bare aiohttp floor); answer "cpu" with process CPU seconds; stop on "stop"."""
    from aiohttp import web

    from engine.sandbox import SandboxOptions, SandboxServer, SandboxState

    async def run() -> None:
        if bare:
            async def answer(request: web.Request) -> web.Response:
                await request.read()
                return web.json_response({"data": []} if request.method == "GET" else
                                         {"data": {"type": "profile", "id": "01BARE", "attributes": {}}},
                                         status=202 if request.path.startswith("/api/events") else
                                         201 if request.method == "POST" else 200)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", answer)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
            stop = runner.cleanup
        else:
            state = SandboxState(seed=1)
            for i in range(n):
                state.create_profile({"email": f"seed{i}@example.com", "first_name": f"Seed{i}",
                                      "phone_number": f"+1212{5000000 + i:07d}" if i % 3 else None})
            server = SandboxServer(SandboxOptions(rate_limits=False, seed=1), state=state)
            url = await server.start()
            stop = server.stop
        conn.send(url)
        loop = asyncio.get_running_loop()
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            if msg == "cpu":
                conn.send(time.process_time())
            else:
                break
        await stop()

    asyncio.run(run())


async def _writes(url: str, n: int, writes: int, start: int, bare: bool) -> None:
    async with KlaviyoClient(base_url=url, api_key=KEY, max_concurrency=8) as kl:
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            async with sem:
                kind, k = i % 4, start + i
                existing = f"seed{k % max(n, 1)}@example.com"
                if kind == 0:
                    await kl.find_profiles(email=existing)
                elif kind == 1:
                    await kl.create_profile({"email": f"new{k}@example.com", "first_name": "New"})
                elif kind == 2:
                    await kl.update_profile(ids[k % len(ids)], {"last_name": f"Changed {k}"})
                else:
                    await kl.create_event("Placed Order", {"email": existing},
                                          {"OrderId": f"O-{k}"}, value=10.0, unique_id=f"O-{k}")

        ids: list[str] = []
        if n and not bare:
            for j in range(0, min(n, 2000), max(1, min(n, 2000) // 50)):
                ids.extend(p["id"] for p in await kl.find_profiles(email=f"seed{j}@example.com"))
        if not ids:  # the bare floor finds nothing: any id will do
            ids.append("01BARE")
        await asyncio.gather(*(one(i) for i in range(writes)))


def _measure(n: int, writes: int, bare: bool, round_no: int) -> float:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_sandbox_child, args=(n, child, bare), daemon=True)
    proc.start()
    try:
        url = parent.recv()
        asyncio.run(_writes(url, n, 200, 10_000_000 + round_no * 1_000_000, bare))  # warm-up
        parent.send("cpu")
        before = parent.recv()
        asyncio.run(_writes(url, n, writes, round_no * 1_000_000, bare))
        parent.send("cpu")
        after = parent.recv()
        return (after - before) / writes
    finally:
        parent.send("stop")
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def part1(sizes: list[int], writes: int, repeat: int) -> None:
    print(f"# sandbox CPU per write ({writes} writes: lookup / create / patch / event, 8 in flight), "
          f"{repeat} rounds, spawned child process")
    print(f"{'profiles':>10} {'sandbox ms/write (min/median/max)':>36} {'bare aiohttp ms/req':>22} {'ratio':>7}")
    medians: dict[int, float] = {}
    for n in sizes:
        runs = [_measure(n, writes, False, r) * 1000 for r in range(repeat)]
        floor = [_measure(n, writes, True, r) * 1000 for r in range(repeat)]
        med, fmed = statistics.median(runs), statistics.median(floor)
        medians[n] = med
        print(f"{n:>10,} {min(runs):10.3f} / {med:7.3f} / {max(runs):7.3f}      "
              f"{min(floor):6.3f} / {fmed:6.3f}   {med / fmed:6.2f}x")
    small, large = medians[sizes[0]], medians[sizes[-1]]
    print(f"growth {sizes[0]:,} -> {sizes[-1]:,} profiles: {large / small:.2f}x CPU per write (target <= 2x)")


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part2(customers: int) -> None:
    from engine.collection import load_collections
    from engine.flows.outbound import RESULTS_KEPT, dispatch, open_outbound_client
    from engine.hub import SqliteHub
    from engine.settings import DEFAULT_TIERS, Secret, Settings, Throttling, TierLimit

    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_sandbox_child, args=(0, child, False), daemon=True)
    proc.start()
    try:
        url = parent.recv()
        with tempfile.TemporaryDirectory() as tmp:
            hub = SqliteHub(Path(tmp) / "hub.db", outbound_triggers={"Customer", "Transaction"})
            with hub.transaction():
                for n in range(1, customers + 1):
                    hub.add_customer({"EmailAddress": f"bulk{n}@example.com", "CustomerNumber": f"B-{n}",
                                      "FirstName": "Bulk", "LastName": f"Customer {n}"})
            unlimited = {t: TierLimit(100_000, 6_000_000) for t in DEFAULT_TIERS}
            settings = Settings(api_url=url, api_key=Secret(KEY), throttling=Throttling(unlimited, 32),
                                hub_path=Path(tmp) / "hub.db")
            collections = load_collections([settings.collections_dir]).collections

            marks = {customers * k // 10: k * 10 for k in (1, 2, 5, 10)}
            rss: list[str] = []
            done = 0

            def on_record(_: Any) -> None:
                nonlocal done
                done += 1
                if done in marks:
                    rss.append(f"{marks[done]} %: {_rss_mib():.0f} MiB")

            async def go() -> tuple[float, Any]:
                client, _ = open_outbound_client(settings, hub)
                async with client:
                    t0 = time.monotonic()
                    report = await dispatch(settings, hub, client, collections, batch_size=500, concurrency=64,
                                            on_record=on_record)
                    return time.monotonic() - t0, report
            parent.send("cpu")
            cpu0 = parent.recv()
            secs, report = asyncio.run(go())
            parent.send("cpu")
            cpu = parent.recv() - cpu0
            hub.close()
        print(f"# dispatch of {customers:,} new Customers, sandbox without rate limits or latency")
        print(f"wall {secs:.1f} s ({secs / 60:.1f} min) = {customers / secs:,.0f} records/s; sandbox CPU {cpu:.1f} s "
              f"= {1000 * cpu / customers:.2f} ms/record; outcomes {report.summary.to_dict()['flows']}")
        print(f"engine process RSS as the dispatch went on: {'; '.join(rss)}; peak {_peak_mib():.0f} MiB "
              f"(the report keeps at most {RESULTS_KEPT:,} records' results)")
    finally:
        parent.send("stop")
        proc.join(30)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="profile counts, comma-separated")
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dispatch", type=int, default=50000, help="Customers in part 2 (0 = skip)")
    args = parser.parse_args()
    part1([int(x) for x in args.sizes.split(",")], args.writes, args.repeat)
    if args.dispatch:
        part2(args.dispatch)
