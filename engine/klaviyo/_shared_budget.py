"""One Klaviyo rate budget per account, kept in Redis and shared by every process sending for it.

Klaviyo counts requests per *account* and tier in fixed windows of 1 s (burst) and 60 s
(steady) (``API-NOTES.md`` §7).  The in-process :class:`~engine.klaviyo.ratelimit.RateBudget`
keeps a client under them, but four workers each with their own budget would send four
times the tier.  :class:`SharedRateBudget` keeps the same sliding log, burst pacing and
margins in Redis instead, so all processes on all hosts that name one account draw from one
budget.

How one request takes budget (:data:`ACQUIRE_LUA`, one atomic script a request):

1. The script reads the clock with Redis ``TIME``: one clock for every process and host,
   never the callers' own.
2. It finds the earliest moment ``at`` (not before now) when one more request fits: after
   the last reservation (so the log stays in order), no earlier than the burst pace allows (a
   virtual schedule, GCRA, spacing requests ``1 / (burst x PACE)`` apart with a little slack),
   at least the burst window after the ``burst``-th last request and at least the steady
   window after the ``steady``-th last one.  Each is a lower bound, so their maximum fits all.
3. The steady window is also spent evenly: a bucket of ``steady`` tokens, refilled at
   ``steady`` per steady window over time when no reservation is waiting.  A fresh account (or
   one idle for a while) has a full bucket and bursts through it at the burst pace; once it is
   empty, requests go one each ``steady window / steady``.  Without it, the sliding log would
   replay the first minute's burst every minute (3,500 events in 11 s, then 49 s of nothing),
   and bursts are where several processes' jitter crowds a window (``bench_shared_budget.py``
   drew 429s so).  The rate over full minutes is the same.
4. It records ``at`` in the log (a Redis list, newest last, trimmed to the longest limit),
   moves the pace and the bucket on, sets both keys to expire once the steady window has passed
   after ``at``, and answers ``at`` and ``at - now`` in microseconds.
5. The client sleeps that long *outside* Redis, then sends.  The request was counted at
   ``at`` already: a late wake-up only sends later.

Why it is never looser than Klaviyo: any ``burst + 1`` reservations span at least the burst
window, any ``steady + 1`` at least the steady window, so no interval of 1 s (60 s) holds
more than ``burst`` (``steady``) of them, wherever Klaviyo's fixed windows start.  The windows
are longer than Klaviyo's by a margin (``2 x margin`` on 1 s, ``10 x margin`` on 60 s) so
that a request's way from its reservation to Klaviyo may vary by that much; the steady margin
costs 0.8 % of the tier (60 s of budget handed out every 60.5 s).

Keys: ``klaviyo-sync:rate:<account>:<tier>`` (the log, a list) and ``...:<tier>:pace`` (a hash:
the burst pace ``due``, the bucket's ``last`` time and ``tokens``), holding only times and
counts; ``account`` is the ``account`` setting or a digest of the credential (:func:`account_digest`),
never a credential.

Failures: Redis down or refusing at the first acquire raises
:class:`~engine.errors.RateBudgetError` (K004) naming the URL with its password masked.  An
outage after that is retried with backoff and one log line (requests wait; there is never a
per-process fallback, which would exceed the account's tiers), up to ``outage_limit``
seconds, then K004 too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.connection import BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from engine.errors import RateBudgetError
from engine.klaviyo._errors import redact
from engine.klaviyo.ratelimit import PACE, Tier, resolve_tiers
from engine.logconfig import register_secret

log = logging.getLogger("engine.klaviyo")

#: every key of the shared budget starts with this (then ``:<account>:<tier>``)
KEY_PREFIX = "klaviyo-sync:rate"

#: connections to Redis a budget keeps at most; more requests taking budget at once wait for one
CONNECTIONS = 16

#: KEYS: the log, the pace.  ARGV: burst, steady, burst window, steady window, gap, slack
#: (times in microseconds).  Answers ``{at, wait}``: the reservation (Redis clock, recorded) and
#: how long until then.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local burst, steady = tonumber(ARGV[1]), tonumber(ARGV[2])
local bwin, swin = tonumber(ARGV[3]), tonumber(ARGV[4])
local gap, slack = tonumber(ARGV[5]), tonumber(ARGV[6])
local step = swin / steady
local pace = redis.call('HMGET', KEYS[2], 'due', 'last', 'tokens')
local due = tonumber(pace[1] or '0')
local last = tonumber(pace[2] or '0')
local tokens = tonumber(pace[3] or tostring(steady))
if now > last then
  tokens = math.min(steady, tokens + (now - last) / step)
  last = now
end
local at = last
if due - slack > at then at = due - slack end
local n = redis.call('LLEN', KEYS[1])
if n > 0 then
  local newest = tonumber(redis.call('LINDEX', KEYS[1], -1))
  if newest > at then at = newest end
  if n >= burst then
    local s = tonumber(redis.call('LINDEX', KEYS[1], -burst)) + bwin
    if s > at then at = s end
  end
  if n >= steady then
    local s = tonumber(redis.call('LINDEX', KEYS[1], -steady)) + swin
    if s > at then at = s end
  end
end
if tokens >= 1 then
  tokens = tokens - 1
else
  local s = last + (1 - tokens) * step
  if s > at then at = s end
  tokens = 0
end
redis.call('RPUSH', KEYS[1], string.format('%.0f', at))
redis.call('LTRIM', KEYS[1], -math.max(burst, steady), -1)
if due < at then due = at end
local ttl = math.ceil((at - now + swin) / 1000) + 1000
redis.call('HSET', KEYS[2], 'due', string.format('%.0f', due + gap), 'last', string.format('%.0f', at),
           'tokens', string.format('%.6f', tokens))
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return {at, at - now}
"""


class Reservation(NamedTuple):
    """One request counted by the script: when it may start (Redis clock, seconds since the epoch)
    and how long the caller waits for that (seconds)."""

    at: float
    wait: float


class TierBudget(Protocol):
    """What the request loop needs from a rate budget (:class:`~engine.klaviyo.ratelimit.RateBudget`
    in the process, :class:`SharedRateBudget` in Redis)."""

    @property
    def tiers(self) -> Mapping[str, Tier]:
        """The tier table the budget enforces."""
        ...

    @property
    def waited(self) -> float:
        """Seconds requests have spent waiting for budget, in all."""
        ...

    async def acquire(self, tier: str) -> None:
        """Wait until a request of ``tier`` may start; it is counted."""
        ...


def account_digest(credential: str) -> str:
    """The account name of the shared budget when none is set: sha256 of ``credential``, 16 hex digits.

    Names the account in Redis keys without revealing the API key (or OAuth client id) it comes from.
    """
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()[:16]


def shown_url(url: str) -> str:
    """``url`` as it may appear in a message: its password replaced by ``***``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        url = url.replace(f":{password}@", ":***@")
    return redact(url, [password]) if password else url


class SharedRateBudget:
    """The rate budget of one Klaviyo account, kept in Redis at ``url`` for every process.

    Args:
        url: the Redis URL (``redis://[:password@]host:6379/0`` or ``rediss://``).
        account: the name the budget is kept under: the ``account`` setting or
            :func:`account_digest` of the credential.  Never a secret.
        overrides: per-tier ``{"burst": n, "steady": m}`` replacing Klaviyo's figures.
        revision: the API revision the client sends (its tier table).
        margin: seconds of jitter absorbed: the burst window is ``1 s x window_scale + 2 x margin``,
            the steady window ``60 s x window_scale + 10 x margin`` (as in ``RateBudget``).
        window_scale: multiplies Klaviyo's 1 s and 60 s windows and the pace (tests and benches
            use the sandbox's ``rate_window_scale``; 1 in production).
        outage_limit: seconds an outage after the first contact is retried before K004.
        timeout: seconds to connect to Redis and for each answer.
        prefix: the keys' prefix (tests use their own).
    """

    def __init__(
        self,
        url: str,
        account: str,
        overrides: Mapping[str, Mapping[str, int]] | None = None,
        *,
        revision: str | None = None,
        margin: float = 0.05,
        window_scale: float = 1.0,
        outage_limit: float = 300.0,
        timeout: float = 5.0,
        prefix: str = KEY_PREFIX,
    ) -> None:
        if not account:
            raise ValueError("SharedRateBudget needs an account name")
        if window_scale <= 0:
            raise ValueError("window_scale must be > 0")
        self.tiers: dict[str, Tier] = resolve_tiers(overrides, revision)
        self.account = account
        self.url = shown_url(url)
        self.waited = 0.0
        self._url = url
        self._margin = margin
        self._scale = window_scale
        self._outage_limit = outage_limit
        self._timeout = timeout
        self._prefix = prefix
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._script: Any = None
        self._reached = False  # Redis answered once: later failures are outages, retried
        self._down = False  # in an outage now (logged once)
        self._rng = random.Random()
        try:
            register_secret(urlsplit(url).password)
            parse_url(url)  # refuse a malformed URL now; connecting waits for the first acquire
        except ValueError as exc:
            raise RateBudgetError(f"the shared rate budget URL {self.url} is not a Redis URL "
                                  f"({redact(str(exc), [self._password()])})") from None

    def __repr__(self) -> str:
        return f"SharedRateBudget(url={self.url!r}, account={self.account!r})"

    def _password(self) -> str | None:
        try:
            return urlsplit(self._url).password
        except ValueError:
            return None

    def key(self, tier: str) -> str:
        """The Redis key of ``tier``'s log (its pace is this plus ``:pace``)."""
        return f"{self._prefix}:{self.account}:{tier}"

    def windows(self, tier: str) -> tuple[float, float, float, float]:
        """``(burst window, steady window, gap, slack)`` of ``tier`` in seconds."""
        spec = self.tiers[tier]
        gap = self._scale / (spec.burst * PACE)
        return (self._scale + 2 * self._margin, 60.0 * self._scale + 10 * self._margin, gap, 4 * gap)

    def _redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A few connections, waited for: every request in flight may be taking budget at once.
            # Retries are ours (a log line, backoff, the outage limit); redis-py's own would hide an outage.
            pool = BlockingConnectionPool.from_url(self._url, max_connections=CONNECTIONS, timeout=self._timeout,
                                                   socket_timeout=self._timeout,
                                                   socket_connect_timeout=self._timeout,
                                                   retry=Retry(NoBackoff(), 0))
            self._client = aioredis.Redis(connection_pool=pool)
            self._script = self._client.register_script(ACQUIRE_LUA)
            self._loop = loop
        return self._client

    def _error(self, what: str, exc: BaseException) -> RateBudgetError:
        text = redact(f"{type(exc).__name__}: {exc}", [self._password()])
        return RateBudgetError(f"the shared rate budget at {self.url} {what} ({text})",
                               detail="nothing was sent to Klaviyo; check the Redis server that the rate_budget "
                                      "setting (or $KLAVIYO_SYNC_RATE_BUDGET) names")

    async def reserve(self, tier: str) -> Reservation:
        """Count one request of ``tier`` now or at the earliest moment it fits, and say when that is.

        Raises:
            RateBudgetError: Redis refused the script, could not be reached at the first
                call, or stayed unreachable for ``outage_limit`` seconds.
        """
        if tier not in self.tiers:
            raise KeyError(tier)
        bwin, swin, gap, slack = self.windows(tier)
        spec = self.tiers[tier]
        args = [spec.burst, spec.steady, *(round(x * 1_000_000) for x in (bwin, swin, gap, slack))]
        key = self.key(tier)
        delay = 0.1
        started: float | None = None
        while True:
            try:
                self._redis()
                at_us, wait_us = await self._script(keys=[key, key + ":pace"], args=args, client=self._client)
            except (rexc.AuthenticationError, rexc.AuthorizationError, rexc.ResponseError) as exc:
                raise self._error("refused the request", exc) from None
            except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                if not self._reached:
                    raise self._error("cannot be reached", exc) from None
                now = asyncio.get_running_loop().time()
                started = now if started is None else started
                if now - started >= self._outage_limit:
                    raise self._error(f"was unreachable for {self._outage_limit:g} s", exc) from None
                if not self._down:
                    self._down = True
                    log.warning("the shared rate budget at %s is unreachable (%s); requests wait and retry with "
                                "backoff, never on a per-process budget", self.url,
                                redact(f"{type(exc).__name__}: {exc}", [self._password()]))
                await asyncio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, 5.0)
                continue
            if self._down:
                self._down = False
                log.warning("the shared rate budget at %s is reachable again", self.url)
            self._reached = True
            return Reservation(int(at_us) / 1_000_000, max(int(wait_us), 0) / 1_000_000)

    async def acquire(self, tier: str) -> None:
        """Wait until a request of ``tier`` may start (counted in Redis already), then return."""
        wait = (await self.reserve(tier)).wait
        if wait > 0:
            self.waited += wait
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        """Close the connections to Redis (the next acquire opens new ones)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.aclose(close_connection_pool=True)


__all__ = ["ACQUIRE_LUA", "KEY_PREFIX", "Reservation", "SharedRateBudget", "TierBudget", "account_digest", "shown_url"]
