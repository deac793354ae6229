"""The request loop of :class:`~engine.klaviyo.KlaviyoClient`: auth, budget, retries.

Contract of :meth:`Requester.send`: one logical operation, possibly several
HTTP attempts.  Each attempt first takes a slot from the shared
:class:`~engine.klaviyo.ratelimit.RateBudget` for the endpoint's tier, then one
of ``max_concurrency`` connections.  Outcomes:

* 2xx, or a status the caller lists in ``accept`` -> the response is returned;
* 401 with a token source -> ``on_unauthorized()`` once, then the request again;
* 429 -> wait ``Retry-After`` (capped by ``retry_after_cap``) and retry;
* 5xx, timeouts, connection errors -> exponential backoff with jitter, retry;
* anything else, or attempts exhausted -> :class:`KlaviyoApiError` /
  :class:`KlaviyoConnectionError` with the catalog text.

Retrying is safe because every write the client sends is idempotent or made so:
events carry a ``unique_id``, a profile create that already happened answers 409
with the existing id, and list/subscription changes converge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from engine.errors import KlaviyoApiError, KlaviyoConnectionError
from engine.klaviyo import revision as rev
from engine.klaviyo._errors import api_error, connection_error, parse_retry_after
from engine.klaviyo.ratelimit import RateBudget

log = logging.getLogger("engine.klaviyo")

RETRYABLE_STATUS = frozenset({500, 502, 503, 504, 520, 521, 522, 524})


@runtime_checkable
class TokenSource(Protocol):
    """Where OAuth access tokens come from (implemented by the OAuth layer).

    ``get_token()`` returns a valid access token (refreshing when close to expiry);
    ``on_unauthorized()`` is called after a 401 and returns a fresh token, or
    ``None`` when the connection cannot be repaired (the 401 is then raised).
    """

    async def get_token(self) -> str: ...

    async def on_unauthorized(self) -> str | None: ...


@dataclass
class ClientStats:
    """Counters a run, the benchmark and the demo print.

    ``calls``: logical operations per name; ``requests``: HTTP attempts per
    operation; ``retries``: retried attempts per operation; ``retry_reasons``:
    per cause (``429``, ``5xx``, ``timeout``, ``connection``, ``401``).
    """

    calls: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    retry_reasons: Counter[str] = field(default_factory=Counter)
    throttle_wait_s: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    @property
    def total_retries(self) -> int:
        return sum(self.retries.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot."""
        return {
            "calls": dict(self.calls),
            "requests": dict(self.requests),
            "retries": dict(self.retries),
            "retry_reasons": dict(self.retry_reasons),
            "total_requests": self.total_requests,
            "total_retries": self.total_retries,
            "throttle_wait_s": round(self.throttle_wait_s, 3),
        }


class Requester:
    """Sends requests for one client; see the module docstring for the contract."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        revision: str,
        api_key: str | None,
        token_source: TokenSource | None,
        budget: RateBudget,
        max_concurrency: int,
        max_attempts: int,
        retry_after_cap: float,
        backoff_base: float,
        backoff_max: float,
        stats: ClientStats,
    ) -> None:
        self.http = http
        self.revision = revision
        self._api_key = api_key
        self._token_source = token_source
        self._token: str | None = None
        self.budget = budget
        self._sem = asyncio.Semaphore(max_concurrency)
        self.max_attempts = max(1, max_attempts)
        self.retry_after_cap = retry_after_cap
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = stats
        self._rng = random.Random()

    def secrets(self) -> list[str | None]:
        """Everything that must never appear in a message."""
        return [self._api_key, self._token]

    async def _auth_header(self, refresh: bool) -> str:
        if self._token_source is not None:
            if refresh:
                token = await self._token_source.on_unauthorized()
                if not token:
                    raise _NoRefresh()
                self._token = token
            else:
                self._token = await self._token_source.get_token()
            return f"Bearer {self._token}"
        if self._api_key:
            return f"Klaviyo-API-Key {self._api_key}"
        return ""

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with ±50 % jitter for retry number ``attempt`` (1-based)."""
        base = min(self.backoff_base * (2 ** (attempt - 1)), self.backoff_max)
        return base * (0.5 + self._rng.random())

    async def send(
        self,
        op: str,
        method: str,
        path: str,
        *,
        tier: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
        accept: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one operation with retries; see the module docstring.

        Raises:
            KlaviyoApiError: Klaviyo rejected the request (or kept failing).
            KlaviyoConnectionError: the transport kept failing.
        """
        self.stats.calls[op] += 1
        ctype = rev.content_type(self.revision)
        headers = {"revision": self.revision, "accept": ctype}
        content: bytes | None = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
            headers["content-type"] = ctype
        attempt = 0
        refreshed = False
        refresh_now = False
        last_401: httpx.Response | None = None
        while True:
            attempt += 1
            failure: KlaviyoApiError | KlaviyoConnectionError
            delay: float
            resp: httpx.Response | None
            await self.budget.acquire(tier)
            async with self._sem:
                self.stats.requests[op] += 1
                try:
                    auth = await self._auth_header(refresh_now)
                except _NoRefresh:
                    assert last_401 is not None
                    raise api_error(last_401, self.secrets()) from None
                refresh_now = False
                if auth:
                    headers["authorization"] = auth
                try:
                    resp = await self.http.request(method, path, params=params, content=content, headers=headers)
                    await resp.aread()
                except httpx.TimeoutException as exc:
                    failure, reason, resp = connection_error(exc, self.secrets()), "timeout", None
                except httpx.TransportError as exc:
                    failure, reason, resp = connection_error(exc, self.secrets()), "connection", None
            if resp is not None:
                status = resp.status_code
                log.debug("%s %s %s -> %s (attempt %d)", op, method, path, status, attempt)
                if status < 400 or status in accept:
                    return resp
                if status == 401 and self._token_source is not None and not refreshed:
                    refreshed = refresh_now = True
                    last_401 = resp
                    self.stats.retry_reasons["401"] += 1
                    attempt -= 1
                    continue
                failure = api_error(resp, self.secrets())
                if status == 429:
                    reason = "429"
                    wait = parse_retry_after(resp)
                    delay = min(wait if wait is not None else self.backoff(attempt), self.retry_after_cap)
                elif status in RETRYABLE_STATUS:
                    reason, delay = "5xx", self.backoff(attempt)
                else:
                    raise failure
            else:
                delay = self.backoff(attempt)
            if attempt >= self.max_attempts:
                log.warning("%s: giving up after %d attempt(s): %s", op, attempt, failure.message)
                raise failure
            self.stats.retries[op] += 1
            self.stats.retry_reasons[reason] += 1
            log.info("%s: retry %d in %.2fs (%s)", op, attempt, delay, reason)
            await asyncio.sleep(delay)


class _NoRefresh(Exception):
    """The token source could not repair a 401."""


__all__ = ["ClientStats", "Requester", "TokenSource", "RETRYABLE_STATUS"]
