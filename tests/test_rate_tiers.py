"""Rate tiers match Klaviyo's specs: every route the engine calls and the sandbox serves, at both revisions.

The specs give each operation ``x-klaviyo-ratelimit`` (``{"burst": "75/s", "steady": "700/m"}``).
The client's budget and the sandbox's limiter name a tier per route; the tier's figures at the
request's revision (:func:`engine.klaviyo.ratelimit.tiers_for`) must be the spec's.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from engine.klaviyo import KlaviyoClient, RateBudget
from engine.klaviyo.ratelimit import tiers_for
from engine.sandbox import SandboxOptions, SandboxServer
from engine.sandbox._handlers import ROUTES
from engine.sandbox._jobs import ROUTES as JOB_ROUTES
from engine.sandbox._spec import Spec

REVISIONS = ("2023-10-15", "2026-07-15")
KEY = "pk_rate_tiers_0000"


def _spec_limits(spec: Spec, method: str, template: str) -> tuple[int, int] | None:
    op = spec.operation(method, template)
    limits = (op or {}).get("x-klaviyo-ratelimit")
    if not limits:
        return None
    return int(limits["burst"].split("/")[0]), int(limits["steady"].split("/")[0])


def _template(spec: Spec, method: str, path: str) -> str:
    """The spec path template (without trailing slash) a concrete request path belongs to."""
    bare = path.rstrip("/")
    for key, ops in spec.paths.items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", key.rstrip("/")) + "$"
        if method.lower() in ops and re.match(pattern, bare):
            return key.rstrip("/")
    raise AssertionError(f"{method} {path} is not in the {spec.revision} spec")


@pytest.mark.parametrize("revision", REVISIONS)
def test_every_sandbox_route_has_the_specs_limits(revision: str) -> None:
    spec, tiers = Spec(revision), tiers_for(revision)
    checked = []
    for method, template, _handler, tier, _capability in [*ROUTES, *JOB_ROUTES]:
        expected = _spec_limits(spec, method, template)
        if expected is None:
            continue
        assert expected == (tiers[tier].burst, tiers[tier].steady), f"{method} {template} at {revision}: tier {tier}"
        checked.append((method, template))
    assert len(checked) >= 14  # the spec lists limits for nearly every route the sandbox serves


def test_the_l_tier_is_750_a_minute_from_2026_01_15() -> None:
    assert (75, 700) == (tiers_for("2025-10-15")["L"].burst, tiers_for("2025-10-15")["L"].steady)
    assert 750 == tiers_for("2026-01-15")["L"].steady == tiers_for("2026-07-15")["L"].steady
    assert 3500 == tiers_for("2026-07-15")["XL"].steady


class _RecordingBudget(RateBudget):
    """The real budget (unthrottled figures), noting the tier each request takes."""

    def __init__(self, revision: str) -> None:
        super().__init__({t: {"burst": 10_000, "steady": 100_000} for t in tiers_for(revision)}, revision=revision)
        self.taken: list[str] = []

    async def acquire(self, tier: str) -> None:
        self.taken.append(tier)
        await super().acquire(tier)


class _RecordingTransport(httpx.AsyncHTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        return await super().handle_async_request(request)


async def _every_call(kl: KlaviyoClient, revision: str) -> None:
    pid, _ = await kl.create_profile({"email": "tiers@example.com"})
    await kl.find_profiles(email="tiers@example.com")
    await kl.get_profile(pid)
    await kl.update_profile(pid, {"first_name": "Tier"})
    await kl.create_or_update_profile({"email": "tiers2@example.com"})
    list_id = await kl.create_list("Tier List")
    await kl.find_lists_by_name("Tier List")
    await kl.add_profiles_to_list(list_id, [pid])
    await kl.get_list_profiles(list_id)
    await kl.remove_profiles_from_list(list_id, [pid])
    await kl.subscribe_profiles([{"email": "tiers@example.com"}], list_id=list_id, channels=("email",))
    await kl.unsubscribe_profiles([{"email": "tiers@example.com"}], list_id=list_id, channels=("email",))
    await kl.create_event("Placed Order", {"email": "tiers@example.com"}, {"OrderId": "T-1"}, unique_id="T-1")
    await kl.get_events()
    if revision != "2023-10-15":
        job = await kl.bulk_import_profiles([{"email": "bulk@example.com"}])
        await kl.get_bulk_import_job(job)


@pytest.mark.parametrize("revision", REVISIONS)
async def test_every_client_call_takes_the_specs_tier(revision: str) -> None:
    handle = SandboxServer(SandboxOptions(rate_limits=False, seed=3)).start_in_thread()
    spec, tiers = Spec(revision), tiers_for(revision)
    budget, transport = _RecordingBudget(revision), _RecordingTransport()
    try:
        async with KlaviyoClient(base_url=handle.url, api_key=KEY, revision=revision, budget=budget,
                                 transport=transport, max_attempts=1) as kl:
            await _every_call(kl, revision)
    finally:
        handle.stop()
    assert len(budget.taken) == len(transport.sent)
    seen: dict[tuple[str, str], Any] = {}
    for tier, (method, path) in zip(budget.taken, transport.sent, strict=True):
        template = _template(spec, method, path)
        expected = _spec_limits(spec, method, template)
        assert expected is not None, f"{method} {template} has no limits in the {revision} spec"
        assert expected == (tiers[tier].burst, tiers[tier].steady), f"{method} {template} took tier {tier}"
        seen[(method, template)] = tier
    assert ("GET", "/api/events") in seen and ("POST", "/api/events") in seen
    assert len(seen) >= 12


async def test_the_budget_paces_bursts_evenly_at_nine_tenths_of_the_burst_limit(monkeypatch) -> None:
    """Requests of one tier start at least 1 / (0.9 x burst) apart on a virtual schedule: no second
    holds more than 90 % of the burst (jitter cannot push one too many into Klaviyo's window), and a
    late wake-up is made up for by a few requests going at once, so the rate does not sag."""
    from engine.klaviyo import ratelimit

    now = [1000.0]

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds + 0.002  # every wake-up comes 2 ms late, as on a busy event loop

    monkeypatch.setattr(ratelimit.asyncio, "sleep", fake_sleep)
    budget = ratelimit.RateBudget({"XL": {"burst": 350, "steady": 100_000}}, clock=lambda: now[0])
    stamps = []
    for _ in range(1000):
        await budget.acquire("XL")
        stamps.append(now[0])
    per_second = [sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps]
    assert max(per_second) <= 315 + 4  # 0.9 x 350, plus the slack of four requests
    assert 1000 / (stamps[-1] - stamps[0]) >= 300  # late wake-ups are made up for
