"""Client CPU per HTTP request: the engine's Klaviyo client beside a bare aiohttp client.

Run: ``.venv/bin/python bench/bench_http.py [--requests 3000] [--concurrency 64] [--repeat 3]``

A sandbox in a spawned child process (no rate limits, no latency, no request
validation) answers ``POST /api/events``.  In this process, ``--requests`` events are
sent with ``--concurrency`` in flight, first through :class:`engine.klaviyo.KlaviyoClient`
(an httpx transport under the engine's own request builder, retries, rate budget, stats), then through a bare ``aiohttp.ClientSession``
posting the same bodies — the reference.  Printed: this process's CPU time
(``time.process_time``) per request, min / median / max over ``--repeat`` rounds.
Target (issue "Throughput at Klaviyo's limits"): <= 0.8 ms per request at concurrency 64.
Not a test: figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.klaviyo import KlaviyoClient  # noqa: E402

KEY = "pk_bench_http_0000"


def _serve(conn: Any) -> None:
    from engine.sandbox import SandboxOptions, SandboxServer

    async def run() -> None:
        server = SandboxServer(SandboxOptions(rate_limits=False, validate=False, seed=1))
        conn.send(await server.start())
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await server.stop()

    asyncio.run(run())


def _body(i: int) -> dict[str, Any]:
    return {"data": {"type": "event", "attributes": {
        "properties": {"OrderId": f"O-{i}"}, "unique_id": f"O-{i}",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": f"p{i % 500}@example.com"}}}}}}


async def _engine(url: str, n: int, conc: int, start: int) -> float:
    unlimited = {t: {"burst": 1_000_000, "steady": 60_000_000} for t in ("XS", "S", "M", "L", "XL")}
    async with KlaviyoClient(base_url=url, api_key=KEY, max_concurrency=conc, tier_overrides=unlimited) as kl:
        sem = asyncio.Semaphore(conc)

        async def one(i: int) -> None:
            async with sem:
                await kl.create_event("Placed Order", {"email": f"p{i % 500}@example.com"}, {"OrderId": f"O-{i}"},
                                      unique_id=f"O-{i}")
        await one(start - 1)
        t0 = time.process_time()
        await asyncio.gather(*(one(start + i) for i in range(n)))
        return (time.process_time() - t0) / n


async def _bare(url: str, n: int, conc: int, start: int) -> float:
    import aiohttp

    headers = {"Authorization": f"Klaviyo-API-Key {KEY}", "revision": "2023-10-15",
               "content-type": "application/json", "accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc)) as session:
        sem = asyncio.Semaphore(conc)

        async def one(i: int) -> None:
            async with sem:
                async with session.post(url + "/api/events/", data=json.dumps(_body(i)), headers=headers) as r:
                    await r.read()
                    assert r.status == 202, r.status
        await one(start - 1)
        t0 = time.process_time()
        await asyncio.gather(*(one(start + i) for i in range(n)))
        return (time.process_time() - t0) / n


def main(args: argparse.Namespace) -> None:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    url = parent.recv()
    try:
        engine, bare = [], []
        for r in range(args.repeat):
            engine.append(1000 * asyncio.run(_engine(url, args.requests, args.concurrency, 1_000_000 * (2 * r + 1))))
            bare.append(1000 * asyncio.run(_bare(url, args.requests, args.concurrency, 1_000_000 * (2 * r + 2))))
    finally:
        parent.send("stop")
        proc.join(30)
    print(f"# client CPU per request, POST /api/events, {args.requests} requests x {args.repeat} rounds, "
          f"concurrency {args.concurrency}")
    print(f"{'client':<28} {'ms/request min / median / max':>32}")
    for name, vals in (("engine KlaviyoClient", engine), ("bare aiohttp", bare)):
        print(f"{name:<28} {min(vals):10.3f} / {statistics.median(vals):6.3f} / {max(vals):6.3f}")
    print(f"ratio engine / bare: {statistics.median(engine) / statistics.median(bare):.2f}x; "
          f"target <= 0.8 ms per request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    main(parser.parse_args())
