"""The request loop of :class:`~engine.klaviyo.KlaviyoClient`: auth, budget, retries.

Contract of :meth:`Requester.send`: one logical operation, possibly several
HTTP attempts.  Each attempt first waits for an in-flight slot of the endpoint's
tier (:class:`~engine.klaviyo.ratelimit.InFlight`: as many as the tier's steady rate
times the measured latency needs, at most ``max_concurrency``), then takes budget
from the client's budget (:class:`~engine.klaviyo.ratelimit.RateBudget` in the process, or the
account's :class:`~engine.klaviyo._shared_budget.SharedRateBudget` in Redis) right before sending.  An attempt has an
overall ``deadline`` (request sent and whole answer read; httpx's own ``timeout`` only bounds each
read) and a ``max_response_bytes`` limit counted while the body streams in.
Redirects are never followed.  Outcomes:

* a status the operation expects, with the body shape it names there
  (see :mod:`engine.klaviyo._answers`) -> the checked :class:`Answer` is returned;
* the same status with a body of another shape, any other 2xx (an HTML page from a
  proxy, JSON that is not Klaviyo's) -> "Error calling Klaviyo ... unexpected
  answer", *transient*: retried with backoff;
* 3xx -> "Error calling Klaviyo (HTTP 30x): redirected to <Location>", not retried;
* 401 with a token source -> ``on_unauthorized()`` once, then the request again;
  401 after that, 403, or a token source that cannot refresh ->
  :class:`~engine.errors.KlaviyoAuthError`, not retried;
* 429 -> wait ``Retry-After`` (at least ``backoff_base``, at most ``retry_after_cap``;
  an unusable value means the normal backoff) and retry;
* 5xx, timeouts, connection errors, the deadline or the size limit exceeded ->
  exponential backoff with jitter, retry;
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
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx

from engine.errors import AuthError, KlaviyoApiError, KlaviyoConnectionError, MalformedAnswerError
from engine.klaviyo import revision as rev
from engine.klaviyo._answers import ERRORS, Answer, check, describe
from engine.klaviyo._errors import (
    api_error,
    auth_failure,
    connection_error,
    parse_retry_after,
    redirect_error,
    unexpected_answer,
)
from engine.klaviyo._shared_budget import TierBudget
from engine.klaviyo.ratelimit import InFlight

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
    per cause (``429``, ``5xx``, ``timeout``, ``connection``, ``401``, ``deadline``,
    ``too_large``, ``unexpected``); ``body_bytes``: answer bytes read in all.
    """

    calls: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    retry_reasons: Counter[str] = field(default_factory=Counter)
    throttle_wait_s: float = 0.0
    body_bytes: int = 0

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
            "body_bytes": self.body_bytes,
        }


class Requester:
    """Sends requests for one client; see the module docstring for the contract."""

    def __init__(
        self,
        http: HttpSender,
        *,
        revision: str,
        api_key: str | None,
        token_source: TokenSource | None,
        budget: TierBudget,
        max_concurrency: int,
        max_attempts: int,
        retry_after_cap: float,
        backoff_base: float,
        backoff_max: float,
        stats: ClientStats,
        deadline: float = 60.0,
        max_response_bytes: int = 16 * 1024 * 1024,
        extra_secrets: tuple[str, ...] = (),
    ) -> None:
        self.http = http
        self.revision = revision
        self._api_key = api_key
        self._token_source = token_source
        self._token: str | None = None
        self.budget = budget
        self.max_concurrency = max(1, max_concurrency)
        self.inflight: dict[str, InFlight] = {}
        self.max_attempts = max(1, max_attempts)
        self.retry_after_cap = retry_after_cap
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stats = stats
        self.deadline = deadline
        self.max_response_bytes = max_response_bytes
        self._extra_secrets = extra_secrets
        self._rng = random.Random()

    def secrets(self) -> list[str | None]:
        """Everything that must never appear in a message."""
        return [self._api_key, self._token, *self._extra_secrets]

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

    def slot(self, tier: str) -> InFlight:
        """The in-flight limit of ``tier`` (made on first use)."""
        slot = self.inflight.get(tier)
        if slot is None:
            slot = self.inflight[tier] = InFlight(self.budget.tiers[tier], self.max_concurrency)
        return slot

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with ±50 % jitter for retry number ``attempt`` (1-based)."""
        base: float = min(self.backoff_base * (2 ** (attempt - 1)), self.backoff_max)
        return base * (0.5 + self._rng.random())

    async def _attempt(self, method: str, path: str, params: dict[str, Any] | None, content: bytes | None,
                       headers: dict[str, str]) -> httpx.Response:
        """One HTTP attempt under the deadline and the size limit; the answer fully read.

        Raises:
            TimeoutError: the deadline passed.
            _TooLarge: the body (declared or read) is over the limit.
            httpx.TransportError: the transport failed.
        """
        limit = self.max_response_bytes
        async with asyncio.timeout(self.deadline):
            async with self.http.stream(method, path, params=params, content=content, headers=headers) as resp:
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise _TooLarge(int(declared), declared=True)
                chunks: list[bytes] = []
                size = 0
                async for chunk in _decoded(resp, limit):
                    size += len(chunk)
                    self.stats.body_bytes += len(chunk)
                    if size > limit:
                        raise _TooLarge(size)
                    chunks.append(chunk)
        # A plain response holding the decoded body (no content-encoding left to apply).
        keep = [(k, v) for k, v in resp.headers.multi_items()
                if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        extensions = {k: v for k, v in resp.extensions.items() if k in ("reason_phrase", "http_version")}
        return httpx.Response(resp.status_code, headers=keep, content=b"".join(chunks), request=resp.request,
                              extensions=extensions)

    def retry_after_delay(self, response: httpx.Response, attempt: int) -> float:
        """How long to wait after a 429: its ``Retry-After`` when usable (at least ``backoff_base``),
        else the normal backoff (at least ``backoff_base``); never more than ``retry_after_cap``."""
        wait = parse_retry_after(response)
        delay = max(wait if wait is not None else self.backoff(attempt), self.backoff_base)
        return min(delay, self.retry_after_cap)

    def _limit_text(self) -> str:
        n = self.max_response_bytes
        return f"{n // 1048576} MiB" if n % 1048576 == 0 else f"{n} bytes"

    async def send(
        self,
        op: str,
        method: str,
        path: str,
        *,
        tier: str,
        expect: Mapping[int, str],
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> Answer:
        """Send one operation with retries; see the module docstring.

        Args:
            expect: each status that is Klaviyo's answer to this call, with its body shape
                (``{201: RESOURCE, 409: ERRORS}``).  A 4xx listed here is returned too.

        Raises:
            KlaviyoAuthError: the credentials were refused (401/403) or cannot be refreshed.
            KlaviyoApiError: Klaviyo rejected the request, the answer was not Klaviyo's for
                this call, or it kept failing.
            KlaviyoConnectionError: the transport kept failing (deadline, size limit included).
        """
        self.stats.calls[op] += 1
        ctype = rev.content_type(self.revision)
        headers = {"revision": self.revision, "accept": ctype, "accept-encoding": "gzip, deflate"}
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
            resp: httpx.Response | None = None
            slot = self.slot(tier)
            async with slot:
                # Budget is taken once a slot is free, right before sending: the stamp is the send time.
                await self.budget.acquire(tier)
                self.stats.requests[op] += 1
                started = time.monotonic()
                try:
                    auth = await self._auth_header(refresh_now)
                except _NoRefresh:
                    assert last_401 is not None
                    raise api_error(last_401, self.secrets()) from None
                except KlaviyoConnectionError as exc:  # the token endpoint could not be reached
                    auth, failure, reason = "", exc, "connection"
                except AuthError as exc:
                    raise auth_failure(exc) from exc
                else:
                    refresh_now = False
                    if auth:
                        headers["authorization"] = auth
                    try:
                        resp = await self._attempt(method, path, params, content, headers)
                        slot.observe(time.monotonic() - started)
                    except TimeoutError:
                        failure, reason = connection_error(
                            f"no complete answer within the request deadline of {self.deadline:g}s "
                            f"(request_deadline)", self.secrets()), "deadline"
                    except _TooLarge as exc:
                        failure, reason = connection_error(
                            f"the answer is larger than the {self._limit_text()} limit (max_response_bytes; "
                            f"{'declared' if exc.declared else 'read'} {exc.size} bytes)", self.secrets()), "too_large"
                    except httpx.TimeoutException as exc:
                        failure, reason = connection_error(exc, self.secrets()), "timeout"
                    except httpx.RequestError as exc:  # transport failures, an undecodable body
                        failure, reason = connection_error(exc, self.secrets()), "connection"
            if resp is not None:
                status = resp.status_code
                log.debug("%s %s %s -> %s (attempt %d)", op, method, path, status, attempt)
                shape = expect.get(status)
                if shape is not None:
                    try:
                        return check(resp, shape)
                    except MalformedAnswerError as exc:
                        if shape == ERRORS or status >= 300:
                            raise api_error(resp, self.secrets()) from None
                        failure, reason = unexpected_answer(resp, op, describe(expect), str(exc), self.secrets()), \
                            "unexpected"
                        delay = self.backoff(attempt)
                elif status < 300:
                    failure = unexpected_answer(resp, op, describe(expect), f"HTTP {status} is not Klaviyo's answer "
                                                "to this call", self.secrets())
                    reason, delay = "unexpected", self.backoff(attempt)
                elif status < 400:
                    raise redirect_error(resp, self.secrets())
                elif status == 401 and self._token_source is not None and not refreshed:
                    refreshed = refresh_now = True
                    last_401 = resp
                    self.stats.retry_reasons["401"] += 1
                    attempt -= 1
                    continue
                else:
                    failure = api_error(resp, self.secrets())
                    if status == 429:
                        reason, delay = "429", self.retry_after_delay(resp, attempt)
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


async def _decoded(resp: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The body's decoded bytes, never more than ``limit + 1`` of them decompressed at once.

    httpx inflates each network chunk in one go, so a small gzip chunk could expand a
    thousandfold before it is counted; gzip and deflate are inflated here in bounded
    steps instead.  Other encodings (never asked for) are left to httpx.
    """
    encoding = resp.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("gzip", "deflate") or resp.is_stream_consumed:
        async for chunk in resp.aiter_bytes():
            yield chunk
        return
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        async for raw in resp.aiter_raw():
            data = raw
            while data:
                out = inflater.decompress(data, limit + 1)
                data = inflater.unconsumed_tail
                if out:
                    yield out
    except zlib.error as exc:
        raise httpx.DecodingError(f"the {encoding} body could not be decoded ({exc})") from None


class HttpSender:
    """Builds each request once and hands it to an httpx transport.

    ``httpx.AsyncClient`` merges the base URL, the default headers and a cookie jar into
    every request and parses every answer's cookies: measured with ``bench/bench_http.py``,
    that was about 40 % of the client's CPU per request, and Klaviyo's API uses none of it
    (no cookies, no redirects followed, one base URL).  Any httpx transport fits
    (``httpx.MockTransport`` in unit tests; :class:`~engine.klaviyo._aiohttp_transport.AiohttpTransport`
    by default); the request it gets carries httpx's ``timeout`` extension as the client would set it.
    """

    _URL_CACHE = 1024

    def __init__(self, transport: httpx.AsyncBaseTransport, *, base_url: str, timeout: float,
                 headers: Mapping[str, str]) -> None:
        self.transport = transport
        self._base = base_url.rstrip("/") + "/"
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._headers = [(k.lower(), v) for k, v in headers.items()]
        self._urls: dict[str, httpx.URL] = {}

    def url(self, path: str, params: Mapping[str, Any] | None = None) -> httpx.URL:
        """``base_url`` + ``path`` (+ ``params``), as ``httpx.AsyncClient(base_url=...)`` joins them."""
        url = self._urls.get(path)
        if url is None:
            url = httpx.URL(self._base + path.lstrip("/"))
            if len(self._urls) < self._URL_CACHE:
                self._urls[path] = url
        return url.copy_merge_params(dict(params)) if params else url

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, params: Mapping[str, Any] | None, content: bytes | None,
                     headers: Mapping[str, str]) -> AsyncIterator[httpx.Response]:
        """The transport's answer, its body not read yet; closed on exit."""
        request = httpx.Request(method, self.url(path, params), headers=[*self._headers, *headers.items()],
                                content=content, extensions={"timeout": self._timeout})
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            yield response
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self.transport.aclose()

    def __repr__(self) -> str:
        return "HttpSender()"


class _TooLarge(Exception):
    """The answer's body is over ``max_response_bytes``."""

    def __init__(self, size: int, declared: bool = False) -> None:
        super().__init__(size)
        self.size = size
        self.declared = declared


class _NoRefresh(Exception):
    """The token source could not repair a 401."""


__all__ = ["Answer", "ClientStats", "HttpSender", "Requester", "TokenSource", "RETRYABLE_STATUS"]
