"""A worker process for tests/test_shared_budget.py: one SharedRateBudget of an account, in its own process.

Run: ``python tests/_budget_worker.py MODE``, then write its configuration as one JSON line on stdin (a
test API key stays out of the process list).  It prints ``ready``, waits for one more line on stdin (so
every worker starts together), works, then prints one JSON line:

* ``reserve``: ``count`` acquires of ``tier``; prints the reservations' times (Redis clock).
* ``events``: a KlaviyoClient on the shared budget sends ``count`` events to ``base_url`` with
  ``concurrency`` at once; prints the client's counters.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.klaviyo import KlaviyoClient, SharedRateBudget  # noqa: E402


def _budget(cfg: dict[str, Any]) -> SharedRateBudget:
    return SharedRateBudget(cfg["url"], cfg["account"], cfg.get("tiers"), margin=cfg.get("margin", 0.05),
                            window_scale=cfg.get("scale", 1.0), prefix=cfg["prefix"])


async def _reserve(cfg: dict[str, Any]) -> dict[str, Any]:
    budget = _budget(cfg)
    stamps = []
    try:
        for _ in range(cfg["count"]):
            at, wait = await budget.reserve(cfg["tier"])
            stamps.append(at)
            await asyncio.sleep(wait)
    finally:
        await budget.aclose()
    return {"stamps": stamps}


async def _events(cfg: dict[str, Any]) -> dict[str, Any]:
    sem = asyncio.Semaphore(cfg["concurrency"])
    async with KlaviyoClient(base_url=cfg["base_url"], api_key=cfg["api_key"], budget=_budget(cfg),
                             max_concurrency=cfg["concurrency"]) as kl:
        async def one(i: int) -> None:
            async with sem:
                await kl.create_event("Budget Test", {"email": f"w{cfg['worker']}@example.com"}, {"n": i},
                                      unique_id=f"w{cfg['worker']}-{i}")

        await asyncio.gather(*(one(i) for i in range(cfg["count"])))
        return kl.stats.as_dict()


def main() -> None:
    mode, cfg = sys.argv[1], json.loads(sys.stdin.readline())
    print("ready", flush=True)
    sys.stdin.readline()
    result = asyncio.run(_reserve(cfg) if mode == "reserve" else _events(cfg))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
