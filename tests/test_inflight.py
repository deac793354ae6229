"""In-flight requests per tier follow the tier's steady rate and the measured latency (Little's law)."""

from __future__ import annotations

import asyncio

import httpx

from engine.klaviyo import KlaviyoClient
from engine.klaviyo.ratelimit import TIERS, InFlight


def test_the_limit_is_rate_times_latency_with_headroom_and_a_cap() -> None:
    xl = InFlight(TIERS["XL"], 64, initial_latency=0.2)
    assert 20 == xl.limit  # 3500/min = 58.3/s x 0.2 s x 1.5 -> 17.5, rounded up, + 2
    assert 6 == InFlight(TIERS["L"], 64, initial_latency=0.2).limit  # 700/min: 11.7/s x 0.2 x 1.5 -> 4 + 2
    assert 4 == InFlight(TIERS["XL"], 4, initial_latency=0.2).limit  # max_concurrency caps it
    for _ in range(50):
        xl.observe(1.0)
    assert 64 == xl.limit  # slower answers need more in flight, up to the cap
    for _ in range(50):
        xl.observe(0.001)
    assert 3 == xl.limit  # fast answers need few


async def test_no_more_than_the_limit_is_ever_in_flight() -> None:
    slot = InFlight(TIERS["L"], 64, initial_latency=0.2)
    peak = 0

    async def one() -> None:
        nonlocal peak
        async with slot:
            peak = max(peak, slot.active)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(one() for _ in range(40)))
    assert 0 == slot.active and 1 <= peak <= 6


async def test_the_client_adapts_to_the_latency_it_measures() -> None:
    """Answers taking 0.3 s: the events tier keeps about rate x latency x 1.5 + 2 requests in flight."""
    active = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.3)
        active -= 1
        return httpx.Response(202)

    async with KlaviyoClient(base_url="https://a.klaviyo.com", api_key="pk_inflight_0000",
                             transport=httpx.MockTransport(handler), max_concurrency=64) as kl:
        await asyncio.gather(*(kl.create_event("Placed Order", {"email": f"p{i}@example.com"}, {}, unique_id=str(i))
                               for i in range(120)))
        measured = kl._req.inflight["XL"]
    assert 0.25 <= measured.latency <= 0.4
    assert 20 <= peak <= 37  # 58.3/s x 0.3-0.4 s x 1.5 + 2, far below the cap of 64
