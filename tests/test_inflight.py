"""In-flight requests per tier follow the tier's steady rate and the measured latency (Little's law)."""

from __future__ import annotations

import asyncio

import httpx

from engine.klaviyo import KlaviyoClient
from engine.klaviyo.ratelimit import TIERS, InFlight


def test_the_limit_is_burst_rate_times_latency_with_headroom_and_a_cap() -> None:
    l_tier = InFlight(TIERS["L"], 64, initial_latency=0.2)
    assert 20 == l_tier.limit  # burst 75/s x 0.2 s x 1.2 -> 18, + 2
    assert 64 == InFlight(TIERS["XL"], 64, initial_latency=0.2).limit  # 350/s x 0.2 x 1.2 -> 84: the cap
    assert 4 == InFlight(TIERS["XL"], 4, initial_latency=0.2).limit  # max_concurrency caps it
    for _ in range(50):
        l_tier.observe(0.5)
    assert 47 == l_tier.limit  # slower answers need more in flight (75 x ~0.5 x 1.2 -> 45, + 2)
    for _ in range(50):
        l_tier.observe(0.001)
    assert 3 == l_tier.limit  # fast answers need few


async def test_no_more_than_the_limit_is_ever_in_flight() -> None:
    slot = InFlight(TIERS["L"], 64, initial_latency=0.2)
    peak = 0

    async def one() -> None:
        nonlocal peak
        async with slot:
            peak = max(peak, slot.active)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(one() for _ in range(40)))
    assert 0 == slot.active and 1 <= peak <= 20


async def test_the_client_adapts_to_the_latency_it_measures() -> None:
    """Answers taking 0.3 s: the profiles tier (L) keeps about burst x latency x 1.2 + 2 requests in flight."""
    active = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.3)
        active -= 1
        return httpx.Response(201, json={"data": {"type": "profile", "id": f"P{peak}{active}", "attributes": {}}})

    async with KlaviyoClient(base_url="https://a.klaviyo.com", api_key="pk_inflight_0000",
                             transport=httpx.MockTransport(handler), max_concurrency=64) as kl:
        await asyncio.gather(*(kl.create_profile({"email": f"p{i}@example.com"}) for i in range(120)))
        measured = kl._req.inflight["L"]
    assert 0.25 <= measured.latency <= 0.4
    assert 20 <= peak <= 38  # 75/s x 0.25-0.4 s x 1.2 + 2, far below the cap of 64


async def test_a_cancelled_waiter_neither_leaks_nor_steals_a_slot() -> None:
    """Waiters are served in order; one cancelled while waiting (or just as it is granted) gives the slot on."""
    slot = InFlight(TIERS["L"], 1, initial_latency=0.2)
    order: list[int] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with slot:
            await release.wait()

    async def waiter(i: int) -> None:
        async with slot:
            order.append(i)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    release.set()
    await first
    tasks[2].cancel()  # granted by the release above or still waiting: either way no slot is lost
    await asyncio.gather(*tasks, return_exceptions=True)
    assert 0 == slot.active and not slot._waiters
    assert [0, 3] == [i for i in order if i in (0, 3)] and 1 not in order
    async with slot:
        assert 1 == slot.active
