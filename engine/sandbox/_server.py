"""The sandbox HTTP server (aiohttp): routing, auth, rate tiers, faults, latency.

Request pipeline for ``/api/...`` (one middleware, in this order):

1. *drop* fault: the connection is closed without an answer (nothing applied);
2. ``revision`` header required and well-formed (400 ``invalid`` otherwise);
3. auth via the replaceable :attr:`SandboxServer.auth` hook (401 ``not_authenticated``);
4. rate tier of the endpoint, fixed 1 s / 60 s windows per account (429 + ``Retry-After``);
5. latency; 6. *5xx* fault (503, nothing applied);
7. content type and JSON body checked, then validated against the revision's spec;
8. the handler applies the change; 9. *timeout* fault: the answer is held back
   longer than a client waits, although the change WAS applied (so a retry
   must not duplicate).  Normal answers carry ``RateLimit-*`` headers.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.errors import SandboxApiError
from engine.klaviyo import revision as rev
from engine.klaviyo.ratelimit import Tier, resolve_tiers
from engine.sandbox import _accounts, _jobs
from engine.sandbox._accounts import ACCOUNT_KEY, Accounts, key_account
from engine.sandbox._handlers import ROUTES, STATE_KEY, Handler
from engine.sandbox._render import BODY_KEY, JSONAPI, REVISION_KEY, body_response
from engine.sandbox._spec import spec_for
from engine.sandbox._state import SandboxState, invalid


@dataclass
class SandboxOptions:
    """How a sandbox behaves.  Mutable: tests may change faults between requests.

    Attributes:
        host / port: where to listen (port 0 = a free port).
        api_keys: accepted private keys; empty = any key starting with ``pk_``.
        latency_ms: added to every API request.
        fault_5xx / fault_timeout / fault_drop: share (0..1) of requests that get a
            503, an answer held back ``timeout_hold_s`` after applying, or a dropped connection.
        rate_limits: enforce Klaviyo's tiers (429 + Retry-After).
        tiers: per-tier overrides, e.g. ``{"XL": {"burst": 5, "steady": 20}}``.
        rate_window_scale: multiplies the 1 s / 60 s windows (tests use e.g. 0.02).
        state_file: load from / save to this JSON file.
        seed: seeds fault choice and ids (reproducible runs).
        validate: check requests against the OpenAPI spec.
        oauth_clients: OAuth client id -> secret; empty = any id with a non-empty secret.
        oauth_decision: what the authorize page does: "approve", "deny" or "page" (a form).
        oauth_access_ttl_s: access-token lifetime; oauth_rotate_refresh: new refresh token per refresh.
        job_delay_s: how long every asynchronous job (subscribe, unsubscribe, bulk import) stays
            ``queued`` before the sandbox starts it (0 = at once, after the 202 is sent).
        accounts_by_key: each private key (each listed one, or each ``pk_`` key that calls) and each
            OAuth client is its own Klaviyo account with its own data (:mod:`engine.sandbox._accounts`);
            False (the default): every key sees one shared account.
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_keys: tuple[str, ...] = ()
    latency_ms: float = 0.0
    fault_5xx: float = 0.0
    fault_timeout: float = 0.0
    fault_drop: float = 0.0
    timeout_hold_s: float = 30.0
    rate_limits: bool = True
    tiers: dict[str, dict[str, int]] | None = None
    rate_window_scale: float = 1.0
    state_file: str | None = None
    seed: int | None = None
    validate: bool = True
    counters: dict[str, int] = field(default_factory=dict)  # faults injected, 429s sent
    oauth_clients: dict[str, str] = field(default_factory=dict)
    oauth_decision: str = "approve"
    oauth_access_ttl_s: float = 3600.0
    oauth_rotate_refresh: bool = True
    oauth_grant_scopes: tuple[str, ...] | None = None  # None: grant what is asked; else only these of it
    job_delay_s: float = 0.0
    accounts_by_key: bool = False

    def __post_init__(self) -> None:
        """Refuse options no sandbox can honour (ValueError), before anything listens."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        for name in ("fault_5xx", "fault_timeout", "fault_drop"):
            rate = getattr(self, name)
            if not (isinstance(rate, (int, float)) and 0 <= rate <= 1):  # NaN fails both comparisons
                raise ValueError(f"{name} must be a share between 0 and 1, got {rate}")
        if not 0 <= self.latency_ms <= 3_600_000 or not 0 <= self.timeout_hold_s <= 86_400:
            raise ValueError("latency_ms and timeout_hold_s must be non-negative (and finite)")


ROUTE_META_KEY: web.AppKey[dict[str, dict[str, dict[str, Any]]]] = web.AppKey("route_meta", dict)
#: the app's :class:`RateLimiter` (benchmarks read its window counts)
LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")

AuthHook = Callable[[web.Request, SandboxOptions], Awaitable[str]]


def error_body(*errors: SandboxApiError) -> dict[str, Any]:
    """Klaviyo's JSON:API ``errors`` document."""
    out = []
    for e in errors:
        source: dict[str, str] = {}
        if e.pointer:
            source["pointer"] = e.pointer
        if e.parameter:
            source["parameter"] = e.parameter
        out.append({"id": str(uuid.uuid4()), "status": e.status, "code": e.code, "title": e.title,
                    "detail": e.detail, "source": source, "links": {}, "meta": e.meta})
    return {"errors": out}


def not_authenticated(detail: str = "Missing or invalid private key.") -> SandboxApiError:
    """Klaviyo's 401 answer for a missing or unknown key."""
    return SandboxApiError(401, "not_authenticated", "Authentication credentials were not provided.",
                           detail, pointer="/data/")


def unknown_revision(revision: str) -> SandboxApiError:
    """The answer to a well-formed revision Klaviyo does not publish.

    Klaviyo answers such a request with a 400 ``invalid`` error on the ``revision``
    header (its docs: "the revision passed in must be a valid revision"); the detail
    names the revision and, as a help the real API does not give, the newest ones.
    Retired revisions (more than two years old) are still served, as Klaviyo may do
    ("silently falls forward"): ``status`` and ``validate`` warn about them instead.
    """
    newest = ", ".join(rev.known_names()[-3:])
    return invalid(f"Invalid revision '{revision}'. The revision must be a valid revision "
                   f"(the newest are {newest}).", parameter="revision")


async def private_key_auth(request: web.Request, options: SandboxOptions) -> str:
    """Default auth hook: ``Klaviyo-API-Key pk_...``; returns the account id (rate bucket, and the
    data's account under ``accounts_by_key``): :func:`~engine.sandbox._accounts.key_account`, a digest.

    Replace :attr:`SandboxServer.auth` to accept ``Bearer`` tokens (OAuth).
    """
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme != "Klaviyo-API-Key" or not key.strip():
        raise not_authenticated()
    key = key.strip()
    if options.api_keys and key not in options.api_keys:
        raise not_authenticated()
    if not options.api_keys and not key.startswith("pk_"):
        raise not_authenticated()
    return key_account(key)


class RateLimiter:
    """Klaviyo's fixed windows per account and tier (burst 1 s, steady 60 s, scalable).

    The limits are those of the request's revision (:func:`engine.klaviyo.ratelimit.tiers_for`:
    the L tier allows 750 a minute from 2026-01-15), with the sandbox's overrides applied.
    """

    def __init__(self, overrides: dict[str, dict[str, int]] | None, scale: float) -> None:
        self._overrides = overrides
        self._by_revision: dict[bool, dict[str, Tier]] = {}
        self.tiers = self.tiers_at(None)
        self.burst_len = 1.0 * scale
        self.steady_len = 60.0 * scale
        self.counts: dict[tuple[str, str, str, int], int] = {}

    def tiers_at(self, revision: str | None) -> dict[str, Tier]:
        """The tier table at ``revision`` (overrides applied)."""
        key = bool(revision) and rev.supports(revision, "l_tier_750")
        if key not in self._by_revision:
            self._by_revision[key] = resolve_tiers(self._overrides, revision)
        return self._by_revision[key]

    def check(self, account: str, tier_name: str, now: float,
              revision: str | None = None) -> tuple[float | None, dict[str, str]]:
        """``(retry_after, headers)``: a wait when over a limit, else headers of the counted request."""
        tier = self.tiers_at(revision)[tier_name]
        b_idx, s_idx = int(now // self.burst_len), int(now // self.steady_len)
        b_key, s_key = (account, tier_name, "b", b_idx), (account, tier_name, "s", s_idx)
        b_used, s_used = self.counts.get(b_key, 0), self.counts.get(s_key, 0)
        if s_used >= tier.steady:
            return (s_idx + 1) * self.steady_len - now, {}
        if b_used >= tier.burst:
            return (b_idx + 1) * self.burst_len - now, {}
        self.counts[b_key], self.counts[s_key] = b_used + 1, s_used + 1
        if len(self.counts) > 10000:
            self.counts = {k: v for k, v in self.counts.items()
                           if k[3] >= (b_idx if k[2] == "b" else s_idx)}
        reset = (s_idx + 1) * self.steady_len - now
        return None, {"RateLimit-Limit": str(tier.steady), "RateLimit-Remaining": str(tier.steady - s_used - 1),
                      "RateLimit-Reset": str(max(1, math.ceil(reset)))}


def _without_nulls(body: Any) -> Any:
    """A copy of a PATCH body without null attributes.

    Klaviyo clears a field sent as ``null`` since 2023-02-22, but the 2023-10-15
    spec does not mark fields ``nullable`` (a spec gap, API-NOTES §2.5), so nulls
    are not held against the schema.
    """
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("attributes"), dict):
        return body
    attrs = {k: v for k, v in data["attributes"].items() if v is not None}
    if isinstance(attrs.get("location"), dict):
        attrs["location"] = {k: v for k, v in attrs["location"].items() if v is not None}
    return {**body, "data": {**data, "attributes": attrs}}


def _retry_after_text(seconds: float, scale: float) -> str:
    return str(max(1, math.ceil(seconds))) if scale >= 1 else f"{max(seconds, 0.001):.3f}"


def build_app(state: SandboxState, options: SandboxOptions, auth_ref: Callable[[], AuthHook],
              accounts: Accounts | None = None) -> web.Application:
    """The aiohttp application serving :data:`ROUTES` at both path styles.

    ``accounts`` holds the states by account (default: ``state`` for every key, or one state
    per key when ``options.accounts_by_key``, ``state`` being the default account's).
    """
    if accounts is None:
        accounts = Accounts(state, separate=options.accounts_by_key, seed=options.seed)
    throttled = accounts.throttled
    rng = random.Random(options.seed)
    resolve_tiers(options.tiers)  # refuse bad overrides before anything listens
    limiter = RateLimiter(options.tiers, options.rate_window_scale)
    count = options.counters

    def bump(name: str) -> None:
        count[name] = count.get(name, 0) + 1

    @web.middleware
    async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        headers: dict[str, str] = {}
        try:
            if options.fault_drop and rng.random() < options.fault_drop:
                bump("drop")
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError()
            revision = request.headers.get("revision", "")
            if not revision:
                raise invalid("Missing required header 'revision'.", parameter="revision")
            try:
                request[REVISION_KEY] = rev.normalize(revision)
            except ValueError:
                raise invalid(f"Invalid revision '{revision}': expected YYYY-MM-DD[.suffix].",
                              parameter="revision") from None
            if not rev.is_known(revision):
                raise unknown_revision(revision)
            account = await auth_ref()(request, options)
            request[ACCOUNT_KEY] = account
            route = request.match_info.route
            canonical = route.resource.canonical if route.resource else ""
            meta = request.app[ROUTE_META_KEY].get(canonical, {}).get(request.method)
            if meta is not None and options.rate_limits:
                wait, headers = limiter.check(account, meta["tier"], time.monotonic(), request[REVISION_KEY])
                if wait is not None:
                    bump("429")
                    throttled[account] = throttled.get(account, 0) + 1
                    secs = max(1, math.ceil(wait))
                    err = SandboxApiError(429, "throttled", "Request was throttled.",
                                          "Request was throttled. "
                                          f"Expected available in {secs} second{'s' if secs != 1 else ''}.",
                                          pointer="/data")
                    body = error_body(err)
                    body["errors"][0]["links"] = {"type": "https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling#rate-limits"}
                    return body_response(body, 429, {"Retry-After": _retry_after_text(wait, options.rate_window_scale)})
            if options.latency_ms:
                await asyncio.sleep(options.latency_ms / 1000.0)
            if options.fault_5xx and rng.random() < options.fault_5xx:
                bump("5xx")
                err = SandboxApiError(503, "error", "Service Unavailable.", "The service is temporarily unavailable.")
                return body_response(error_body(err), 503)
            if meta is not None:
                if meta["capability"] and not rev.supports(request[REVISION_KEY], meta["capability"]):
                    raise SandboxApiError(404, "not_found", "Not found.", f"The path {request.path} was not found.")
                await _read_body(request, meta["template"])
            timeout = bool(options.fault_timeout and rng.random() < options.fault_timeout)
            response = await handler(request)
            for k, v in headers.items():
                response.headers[k] = v
            if timeout:
                bump("timeout")
                await asyncio.sleep(options.timeout_hold_s)
            return response
        except SandboxApiError as exc:  # counted against the tier: Klaviyo's RateLimit headers too
            return body_response(error_body(exc), exc.status, headers)
        except web.HTTPNotFound:
            err = SandboxApiError(404, "not_found", "Not found.", f"The path {request.path} was not found.")
            return body_response(error_body(err), 404)
        except web.HTTPMethodNotAllowed:
            err = SandboxApiError(405, "method_not_allowed", "Method not allowed.",
                                  f'Method "{request.method}" not allowed.')
            return body_response(error_body(err), 405)

    async def _read_body(request: web.Request, template: str) -> None:
        spec = spec_for(request[REVISION_KEY]) if options.validate else None
        if spec is not None:
            spec.validate_query(request.method, template, dict(request.query))
        if request.method not in ("POST", "PATCH", "DELETE"):
            return
        ctype = request.content_type
        if ctype not in ("application/json", JSONAPI):
            raise SandboxApiError(415, "unsupported_media_type", "Unsupported media type.",
                                  f'Unsupported media type "{ctype}" in request.')
        raw = await request.read()
        try:
            body = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise invalid(f"JSON parse error - {exc}", pointer="/data") from None
        if not isinstance(body, dict) or "data" not in body:
            raise invalid("'data' is a required field.", pointer="/data")
        if spec is not None:
            spec.validate_body(request.method, template, _without_nulls(body) if request.method == "PATCH" else body,
                               request[REVISION_KEY])
        request[BODY_KEY] = body

    app = web.Application(middlewares=[_jobs.payload_limit, pipeline], client_max_size=_jobs.CLIENT_MAX_SIZE)
    app[STATE_KEY] = state
    route_meta: dict[str, dict[str, dict[str, Any]]] = {}
    for method, template, handler, tier, capability in [*ROUTES, *_jobs.ROUTES]:
        for path in (template, template + "/"):
            app.router.add_route(method, path, handler)
            route_meta.setdefault(path, {})[method] = {"tier": tier, "capability": capability, "template": template}
    app[ROUTE_META_KEY] = route_meta
    app[LIMITER_KEY] = limiter
    _jobs.mount(app, accounts, options)
    _accounts.mount(app, accounts, options, auth_ref)
    return app


__all__ = ["SandboxOptions", "AuthHook", "private_key_auth", "build_app", "error_body", "not_authenticated",
           "unknown_revision", "RateLimiter", "LIMITER_KEY"]
