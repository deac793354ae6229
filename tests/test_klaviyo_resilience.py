"""Throttling, retries and fault survival of the client against the sandbox over loopback."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from engine.catalog import KLAVIYO_CONNECTION_ERROR
from engine.errors import KlaviyoConnectionError
from engine.klaviyo import KlaviyoClient


async def _event_ids(client: KlaviyoClient) -> list[str]:
    return sorted(e["attributes"]["event_properties"]["$event_id"] for e in await client.get_events())


async def test_429_storm_is_survived_by_honouring_retry_after(sandbox_factory, sandbox_api_key: str) -> None:
    """With the client budget set above the server's limit, 429s are retried and every event lands once."""
    handle = sandbox_factory(rate_limits=True, rate_window_scale=0.05,
                             tiers={"XL": {"burst": 4, "steady": 40}, "L": {"burst": 1000, "steady": 100000}})
    async with KlaviyoClient(base_url=handle.url, api_key=sandbox_api_key, max_concurrency=20,
                             tier_overrides={"XL": {"burst": 10000, "steady": 100000}},
                             max_attempts=50, backoff_base=0.01) as kl:
        pid, _ = await kl.create_profile({"email": "storm@example.com"})
        await asyncio.gather(*(kl.create_event("Storm", pid, {"n": i}, unique_id=f"e{i}") for i in range(60)))
        assert sorted(f"e{i}" for i in range(60)) == await _event_ids(kl)
        assert kl.stats.retry_reasons["429"] > 0
        assert handle.options.counters["429"] == kl.stats.retry_reasons["429"]


async def test_client_budget_keeps_a_run_under_the_tier(sandbox_factory, sandbox_api_key: str) -> None:
    """With matching budgets the client waits instead of provoking 429s."""
    handle = sandbox_factory(rate_limits=True, tiers={"XL": {"burst": 5, "steady": 1000}})
    async with KlaviyoClient(base_url=handle.url, api_key=sandbox_api_key, max_concurrency=10,
                             tier_overrides={"XL": {"burst": 5, "steady": 1000}}) as kl:
        pid, _ = await kl.create_profile({"email": "calm@example.com"})
        await asyncio.gather(*(kl.create_event("Calm", pid, {}, unique_id=f"c{i}") for i in range(11)))
        assert 11 == len(await _event_ids(kl))
        assert 0 == handle.options.counters.get("429", 0)
        assert kl.stats.throttle_wait_s > 1.0


async def test_5xx_answers_are_retried_without_loss(sandbox_factory, sandbox_api_key: str) -> None:
    """A 30 % share of 503s is absorbed by backoff: every profile and event exists exactly once."""
    handle = sandbox_factory(fault_5xx=0.3)
    async with KlaviyoClient(base_url=handle.url, api_key=sandbox_api_key, max_attempts=10, backoff_base=0.01) as kl:
        ids = [(await kl.create_profile({"email": f"f{i}@example.com"}))[0] for i in range(8)]
        await asyncio.gather(*(kl.create_event("Faulty", ids[i % 8], {}, unique_id=f"x{i}") for i in range(24)))
        handle.options.fault_5xx = 0.0
        assert 24 == len(await _event_ids(kl))
        assert 8 == len([p async for p in kl.iter_profiles()])
        assert kl.stats.retry_reasons["5xx"] == handle.options.counters["5xx"] > 0


async def test_timeouts_after_apply_do_not_duplicate(sandbox_factory, sandbox_api_key: str) -> None:
    """Answers held back after the change was applied are retried; creates resolve via 409, events via unique_id."""
    handle = sandbox_factory(fault_timeout=0.4, timeout_hold_s=1.0)
    async with KlaviyoClient(base_url=handle.url, api_key=sandbox_api_key, timeout=0.25,
                             max_attempts=10, backoff_base=0.01) as kl:
        results = await asyncio.gather(*(kl.create_profile({"email": f"t{i}@example.com"}) for i in range(6)))
        pid = results[0][0]
        await asyncio.gather(*(kl.create_event("Slow", pid, {}, unique_id=f"s{i}") for i in range(6)))
        handle.options.fault_timeout = 0.0
        assert [f"s{i}" for i in range(6)] == await _event_ids(kl)
        assert 6 == len({pid for pid, _ in results}) == len([p async for p in kl.iter_profiles()])
        assert kl.stats.retry_reasons["timeout"] > 0
        assert any(created is False for _, created in results)


async def test_dropped_connections_are_retried(sandbox_factory, sandbox_api_key: str) -> None:
    """Connections closed without an answer are retried until the request succeeds."""
    handle = sandbox_factory(fault_drop=0.3)
    async with KlaviyoClient(base_url=handle.url, api_key=sandbox_api_key, max_attempts=12, backoff_base=0.01) as kl:
        pid, _ = await kl.create_profile({"email": "drop@example.com"})
        for i in range(10):
            await kl.create_event("Dropped", pid, {}, unique_id=f"d{i}")
        handle.options.fault_drop = 0.0
        assert 10 == len(await _event_ids(kl))
        assert kl.stats.retry_reasons["connection"] == handle.options.counters["drop"] > 0


async def test_transport_failure_gives_catalog_connection_error_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening: bounded attempts, then 'An error occurred while contacting Klaviyo: ...', key absent."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    key = "pk_secret_never_shown_42"
    caplog.set_level(logging.DEBUG)
    async with KlaviyoClient(base_url=f"http://127.0.0.1:{port}", api_key=key, max_attempts=3, backoff_base=0.01) as kl:
        with pytest.raises(KlaviyoConnectionError) as info:
            await kl.create_profile({"email": "x@example.com"})
        assert 3 == kl.stats.requests["create_profile"]
    assert info.value.message.startswith(f"{KLAVIYO_CONNECTION_ERROR}: ")
    texts = [str(info.value), repr(info.value), str(info.value.__cause__), *(r.getMessage() for r in caplog.records)]
    assert [] == [t for t in texts if key in t]
