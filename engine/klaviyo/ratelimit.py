"""Klaviyo's rate tiers and the client-side budget that keeps a run under them.

Klaviyo limits each account per endpoint tier with two fixed windows: a
*burst* window of one second and a *steady* window of one minute
(``API-NOTES.md`` §7).  :class:`RateBudget` keeps one sliding-window log per
tier, shared by every concurrent request of a client: a request waits until
both windows have room.  A sliding window is never looser than the server's
fixed windows, so a run that respects it does not provoke 429s; a small
safety margin absorbs clock and scheduling jitter.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from engine.klaviyo import revision as rev


@dataclass(frozen=True)
class Tier:
    """One rate tier: ``burst`` requests per second and ``steady`` per minute."""

    name: str
    burst: int
    steady: int

    @property
    def steady_per_second(self) -> float:
        """The steady ceiling expressed per second."""
        return self.steady / 60.0


TIERS: dict[str, Tier] = {
    "XS": Tier("XS", 1, 15),
    "S": Tier("S", 3, 60),
    "M": Tier("M", 10, 150),
    "L": Tier("L", 75, 700),
    "XL": Tier("XL", 350, 3500),
}


def tiers_for(revision: str | None) -> dict[str, Tier]:
    """Klaviyo's tier table at ``revision``: the specs' ``x-klaviyo-ratelimit`` figures.

    From 2026-01-15 the L tier's steady limit is 750 a minute (700 before); the
    other tiers are the same at every revision.  ``tests/test_rate_tiers.py`` checks
    every route the engine and the sandbox use against both shipped specs.
    """
    tiers = dict(TIERS)
    if revision and rev.supports(revision, "l_tier_750"):
        tiers["L"] = Tier("L", 75, 750)
    return tiers


def resolve_tiers(overrides: Mapping[str, Mapping[str, int]] | None = None,
                  revision: str | None = None) -> dict[str, Tier]:
    """The tier table of ``revision`` with ``overrides`` applied, e.g. ``{"L": {"burst": 75, "steady": 700}}``.

    Raises:
        ValueError: an unknown tier name, unknown key or a non-positive limit.
    """
    tiers = tiers_for(revision)
    for name, values in (overrides or {}).items():
        key = name.upper()
        if key not in tiers:
            raise ValueError(f"unknown Klaviyo rate tier {name!r}; known: {', '.join(TIERS)}")
        unknown = set(values) - {"burst", "steady"}
        if unknown:
            raise ValueError(f"rate tier {key}: unknown key(s) {sorted(unknown)}; use burst, steady")
        burst = int(values.get("burst", tiers[key].burst))
        steady = int(values.get("steady", tiers[key].steady))
        if burst < 1 or steady < 1:
            raise ValueError(f"rate tier {key}: burst and steady must be >= 1")
        tiers[key] = Tier(key, burst, steady)
    return tiers


#: requests of a tier are spaced at least 1 / (burst x PACE) apart: a burst runs at 90 % of the
#: burst limit, evenly, so jitter between a request's stamp here and its arrival at Klaviyo cannot
#: crowd one request too many into a fixed 1 s window (bursts sent as fast as the windows allowed
#: drew 429s on a loaded machine, bench/bench_ceiling.py)
PACE = 0.9


class _Window:
    """A sliding log of request start times for one tier, and the pacing of its bursts."""

    def __init__(self, tier: Tier, burst_window: float, steady_window: float) -> None:
        self.tier = tier
        self.burst_window = burst_window
        self.steady_window = steady_window
        self.gap = 1.0 / (tier.burst * PACE)
        # the pace as a virtual schedule (GCRA): ``due`` is when the next request is due; one may go
        # up to ``slack`` early, so a late wake-up is made up for instead of slowing every later request
        self.due = 0.0
        self.slack = 4 * self.gap
        self.stamps: deque[float] = deque()
        self.lock = asyncio.Lock()

    def wait_time(self, now: float) -> float:
        """Seconds until one more request fits both windows and the pace (0 when it fits now)."""
        while self.stamps and self.stamps[0] <= now - self.steady_window:
            self.stamps.popleft()
        wait = self.due - self.slack - now
        if len(self.stamps) >= self.tier.steady:
            wait = max(wait, self.stamps[-self.tier.steady] + self.steady_window - now)
        if len(self.stamps) >= self.tier.burst:
            wait = max(wait, self.stamps[-self.tier.burst] + self.burst_window - now)
        return max(wait, 0.0)


class RateBudget:
    """A per-tier request budget shared by all concurrent requests of one client.

    Args:
        overrides: per-tier ``{"burst": n, "steady": m}`` replacing Klaviyo's figures.
        revision: the API revision the client sends (its tier table, :func:`tiers_for`).
        margin: extra seconds so jitter cannot push one request too many into a server
            window: twice it on the 1 s window, ten times it on the 60 s window.
        clock: monotonic clock (injectable for unit tests).
    """

    def __init__(
        self,
        overrides: Mapping[str, Mapping[str, int]] | None = None,
        *,
        revision: str | None = None,
        margin: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tiers = resolve_tiers(overrides, revision)
        self._margin = margin
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self.waited = 0.0  # total seconds requests spent waiting for budget

    def _window(self, tier: str) -> _Window:
        win = self._windows.get(tier)
        if win is None:
            spec = self.tiers[tier]
            win = _Window(spec, 1.0 + 2 * self._margin, 60.0 + self._margin * 10)
            self._windows[tier] = win
        return win

    async def acquire(self, tier: str) -> None:
        """Wait until a request of ``tier`` may start, then record it."""
        win = self._window(tier)
        async with win.lock:  # FIFO: waiters are served in arrival order
            while True:
                now = self._clock()
                wait = win.wait_time(now)
                if wait <= 0:
                    win.stamps.append(now)
                    win.due = max(win.due, now) + win.gap
                    return
                self.waited += wait
                await asyncio.sleep(wait)


class InFlight:
    """How many requests of one tier may be in flight: enough to reach the tier's burst rate.

    Little's law: to send ``burst`` requests a second when each takes ``latency`` seconds,
    ``burst x latency`` must be in flight.  The burst rate is what the :class:`RateBudget`
    grants while the steady window has room (the first minute, after a quiet spell); once
    the steady window is used up, the budget holds requests back and the extra slots only
    wait.  The limit is that with a fifth again as much headroom plus two, measured
    continuously (an exponentially weighted mean of the request durations, starting at
    ``initial_latency``), and never above ``cap`` (the ``max_concurrency`` setting).  The
    budget decides when each request may start, so a generous limit cannot exceed
    Klaviyo's windows.
    """

    def __init__(self, tier: Tier, cap: int, *, initial_latency: float = 0.25, weight: float = 0.2) -> None:
        self.tier = tier
        self.cap = max(1, cap)
        self.latency = initial_latency
        self._weight = weight
        self.active = 0
        # FIFO of waiters; a release hands its slot to the first one only (waking every
        # waiter on each release cost O(waiters) per request with hundreds queued)
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        """Requests of this tier allowed in flight now."""
        need = math.ceil(self.tier.burst * self.latency * 1.2) + 2
        return max(1, min(self.cap, need))

    def observe(self, seconds: float) -> None:
        """Fold one request's duration into the latency estimate."""
        self.latency += self._weight * (max(seconds, 0.0) - self.latency)

    def _wake(self) -> None:
        limit = self.limit
        while self._waiters and self.active < limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.active += 1
                fut.set_result(None)

    async def __aenter__(self) -> InFlight:
        if not self._waiters and self.active < self.limit:
            self.active += 1
            return self
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted a slot just as it was cancelled: pass it on
                self.active -= 1
                self._wake()
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.active -= 1
        self._wake()


__all__ = ["Tier", "TIERS", "tiers_for", "resolve_tiers", "RateBudget", "InFlight"]
