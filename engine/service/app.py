"""The aiohttp application of ``klaviyo-sync serve`` and the process around it.

:func:`build_app` wires the hub API (:mod:`._api`), the pages (:mod:`._pages`), ``/healthz``,
``/readyz``, ``/metrics`` and ``/openapi.json`` with one middleware that checks the body size,
the token or session, counts the request for ``/metrics`` and turns every error into a clear
answer (JSON under ``/api`` and for the service routes, HTML for pages): 400 bad JSON, 401 no
token, 403 CSRF, 404 unknown route or record, 405 wrong method, 413 too large, 422 refused
record, 502 Klaviyo failed.  No traceback is ever sent.

:func:`serve` runs the process: the serve lock (a file beside a SQLite hub, an advisory lock per
subscription on PostgreSQL), the service, the other subscriptions of a shared hub
(:mod:`._subscriptions`), the site, and the clean stop on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from engine.errors import (
    EmailExistsError,
    HubNotFoundError,
    InboundError,
    InternalServiceError,
    KlaviyoError,
    KlaviyoSyncError,
    ListenError,
    Location,
    MethodNotAllowedError,
    ProfileNotFoundError,
    ResourceNotFoundError,
    ServiceError,
    SettingsValueError,
    UnauthorizedError,
    UnprotectedHostError,
)
from engine.service import _api, _pages
from engine.service._lock import PgServeLock, ServeLock
from engine.service._metrics import CONTENT_TYPE, Metrics
from engine.service._openapi import document
from engine.service._runtime import Service
from engine.service._security import PUBLIC_PATHS, Guard, is_loopback
from engine.service._subscriptions import DEFAULT_KEEP_OPEN, Subscriptions, load_subscription_settings
from engine.settings import Settings, is_hub_url

log = logging.getLogger("engine.service")
GUARD = web.AppKey("guard", Guard)
METRICS = web.AppKey("metrics", Metrics)
MAX_BODY = _api.MAX_BODY
READY_CACHE = web.AppKey("ready_cache", dict)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READY_CACHE_SECONDS = 5.0
LOCK_CHECK_SECONDS = 10.0


def _status_of(err: KlaviyoSyncError) -> int:
    if isinstance(err, ServiceError):
        return err.status
    if isinstance(err, (HubNotFoundError, ProfileNotFoundError)):
        return 404
    if isinstance(err, EmailExistsError):
        return 409
    if isinstance(err, KlaviyoError):
        return 502
    if isinstance(err, InboundError):
        return 422
    return 422


def error_body(err: KlaviyoSyncError) -> dict[str, Any]:
    """``{"error": {...}}`` (and ``errors`` when several records were refused)."""

    def one(e: KlaviyoSyncError) -> dict[str, Any]:
        loc = e.location
        where = str(Location(file=loc.file, line=loc.line, column=loc.column)) or None
        out = {"code": e.code, "message": e.message, "detail": e.detail, "where": where,
               "line": loc.line, "column": loc.column}
        if loc.record_id is not None:
            out["record_id"] = loc.record_id
        return out

    many = getattr(err, "errors", None)
    body: dict[str, Any] = {"error": one(err)}
    if isinstance(many, list) and many:
        body["errors"] = [one(e) for e in many]
        body["error"] = {**one(many[0]), "message": err.message if len(many) > 1 else many[0].message}
    return body


def _wants_html(request: web.Request) -> bool:
    path = request.path
    if path.startswith("/api/") or path in PUBLIC_PATHS - {"/login"}:
        return False
    return "text/html" in request.headers.get("accept", "") or request.method == "POST" and \
        request.content_type == "application/x-www-form-urlencoded"


def _http_error(exc: web.HTTPException, request: web.Request) -> ServiceError:
    limit = request.app[MAX_BODY]
    if exc.status == 404:
        return ResourceNotFoundError(f"no such route: {request.method} {request.path} "
                                     "(the API is described at /openapi.json)")
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        return MethodNotAllowedError(f"{request.method} is not allowed on {request.path}"
                                     + (f" (allowed: {allowed})" if allowed else ""))
    if exc.status == 413:
        return _api.too_large(limit)
    # any other status aiohttp answers with: its code is data, made from that status
    return ServiceError(exc.reason or "bad request", code=f"V{exc.status}", status=exc.status)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Size limit, authentication, error answers and the request counter."""
    started = time.monotonic()
    route = request.match_info.route.resource
    operation = route.canonical if route is not None else "unmatched"
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        response = _answer(request, _http_error(exc, request))
    except KlaviyoSyncError as err:
        response = _answer(request, err)
    except Exception:  # noqa: BLE001 - an answer, never a traceback; the log has the detail
        log.exception("unexpected error answering %s %s", request.method, request.path)
        response = _answer(request, InternalServiceError("internal error: the service log has the detail"))
    request.app[METRICS].http.labels(operation, request.method, str(response.status)).inc()
    log.debug("%s %s -> %s (%.1f ms)", request.method, request.path, response.status,
              1000 * (time.monotonic() - started))
    return response


def _answer(request: web.Request, err: KlaviyoSyncError) -> web.Response:
    status = _status_of(err)
    headers = {"WWW-Authenticate": 'Bearer realm="klaviyo-sync"'} if status == 401 and \
        request.path.startswith("/api/") else None
    if _wants_html(request):
        return _pages.error_page(request, err, status)
    return web.json_response(error_body(err), status=status, headers=headers)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    limit = request.app[MAX_BODY]
    if request.content_length is not None and request.content_length > limit:
        raise _api.too_large(limit)
    guard = request.app[GUARD]
    unmatched = request.match_info.http_exception
    if unmatched is not None:
        raise unmatched
    if request.path.startswith("/api/"):
        if not guard.enabled:
            raise UnauthorizedError("the API is disabled: set service.token in the settings (e.g. "
                                    "token: ${KLAVIYO_SYNC_TOKEN}) and restart serve")
        if not guard.bearer_ok(request.headers.get("authorization")):
            raise UnauthorizedError("missing or wrong token: send 'Authorization: Bearer <service.token>'")
        return await handler(request)
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    return await _pages.guard_page(request, handler)


# -- service routes ------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _api.ok({"status": "ok", "uptime_seconds": round(time.time() - request.app[_api.SERVICE].started, 1)})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the hub answers a query and Klaviyo's API URL answers HTTP (any status)."""
    svc = request.app[_api.SERVICE]
    checks: dict[str, Any] = {}
    try:
        await svc.db(svc.hub_api.counts)
        checks["hub"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        checks["hub"] = f"not available: {type(exc).__name__}"
    cache = request.app[READY_CACHE]
    if time.monotonic() - cache.get("at", -1e9) > READY_CACHE_SECONDS:
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                await http.get(svc.settings.api_url + "/")
            cache["klaviyo"] = "ok"
        except httpx.HTTPError as exc:
            cache["klaviyo"] = f"not reachable: {type(exc).__name__}"
        cache["at"] = time.monotonic()
    checks["klaviyo"] = cache["klaviyo"]
    ready = all(v == "ok" for v in checks.values())
    return _api.ok({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    svc = request.app[_api.SERVICE]
    queue = await svc.db(svc.hub_api.queue_length)
    return web.Response(body=request.app[METRICS].render(queue), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return _api.ok(document())


def build_app(service: Service, subscriptions: Subscriptions | None = None) -> web.Application:
    """The application for a started or startable :class:`Service`.

    ``subscriptions``: the other subscriptions of a shared hub it shows (default: every one
    the hub lists, read-only); closed when the app is cleaned up.
    """
    limit = service.settings.service.max_body_bytes
    app = web.Application(client_max_size=limit, middlewares=[middleware])
    app[_api.SERVICE] = service
    subs = subscriptions if subscriptions is not None else Subscriptions(service)
    app[_api.SUBSCRIPTIONS] = subs

    async def close_subscriptions(_: web.Application) -> None:
        await subs.close()

    app.on_cleanup.append(close_subscriptions)
    app[GUARD] = Guard(service.settings.service.token)
    app[METRICS] = Metrics(service)
    app[MAX_BODY] = limit
    app[READY_CACHE] = {}
    app.add_routes([web.get("/healthz", healthz, name="healthz"), web.get("/readyz", readyz, name="readyz"),
                    web.get("/metrics", metrics, name="metrics"), web.get("/openapi.json", openapi, name="openapi")])
    app.add_routes(_api.routes())
    app.add_routes(_pages.routes())
    _pages.setup(app)
    return app


# -- the process -----------------------------------------------------------------------------


async def serve(settings: Settings, hub_path: str | Path | None = None, *, host: str | None = None,
                port: int | None = None, lease_seconds: float | None = None,
                announce: Callable[[str], None] = print, stop_deadline: float = 7.0,
                on_listening: Callable[[str, str], None] | None = None, sync: bool = True,
                subscriptions_dir: str | Path | None = None, keep_open: int = DEFAULT_KEEP_OPEN) -> int:
    """Run the service until SIGTERM / SIGINT; return the exit status (0 after a clean stop).

    ``announce`` gets each line to show the user; ``on_listening``, when given, is called once
    with the URL served and the hub (file, or masked URL and subscription) as soon as the service
    listens (``serve --json``).  ``sync=False`` runs no poll or dispatch and takes no serve lock
    (workers do the work).  ``subscriptions_dir`` holds other subscriptions' settings (their
    actions are then allowed); ``keep_open`` caps their open hubs.  Exit status 1 when the
    serve lock was lost (the database went away and another serve took the subscription).

    Raises:
        ServeLockHeldError: the hub (or subscription) is in use by another serve.
        UnprotectedHostError: a non-loopback host without a token.
        ListenError: the address cannot be bound.
        CollectionSetError, SettingsError: as ``poll`` and ``dispatch`` raise them, before anything runs.
    """
    host = host or settings.service.host
    port = settings.service.port if port is None else port
    if not is_loopback(host) and settings.service.token is None:
        raise UnprotectedHostError(f"refusing to listen on {host}: a non-loopback address needs service.token in "
                                   "the settings (every API call and form is then authenticated)")
    location: str | Path = str(hub_path) if hub_path else (settings.hub_url or settings.hub_path)
    if isinstance(location, str) and not is_hub_url(location):
        location = Path(location)
    others: dict[str, Settings] = {}
    if subscriptions_dir is not None:
        if not isinstance(location, str):
            raise SettingsValueError(f"--subscriptions needs a shared PostgreSQL hub (hub: postgresql://...); this "
                                     f"serve's hub is the file {location}", location=Location(file=str(location)))
        others = load_subscription_settings(Path(subscriptions_dir), location, settings.subscription)
    lock: ServeLock | PgServeLock | None = None
    if sync:
        lock = PgServeLock(location, settings.subscription) if isinstance(location, str) else ServeLock(location)
        lock.acquire()
    try:
        return await _run(settings, location, lock, others, host=host, port=port, lease_seconds=lease_seconds,
                          announce=announce, stop_deadline=stop_deadline, on_listening=on_listening, sync=sync,
                          keep_open=keep_open)
    finally:
        if lock is not None:
            lock.release()


async def _run(settings: Settings, location: str | Path, lock: ServeLock | PgServeLock | None,
               others: dict[str, Settings], *, host: str, port: int, lease_seconds: float | None,
               announce: Callable[[str], None], stop_deadline: float,
               on_listening: Callable[[str, str], None] | None, sync: bool, keep_open: int) -> int:
    service = Service(settings, location) if lease_seconds is None else \
        Service(settings, location, lease_seconds=lease_seconds)
    subs = Subscriptions(service, others, keep_open=keep_open)
    runner = web.AppRunner(build_app(service, subs), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        await service.stop()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = runner.addresses[0]
    url = f"http://{bound[0] if ':' not in str(bound[0]) else '[' + str(bound[0]) + ']'}:{bound[1]}"
    stop = asyncio.Event()
    lost = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if sync:
        service.start()
        mode = f"polling every {settings.poll_interval_text}; " + (
            "dispatching continuously" if service.dispatching else "outbound triggers off: not dispatching")
    else:
        mode = "--no-sync: pages and API only, no poll or dispatch"
    token = "" if settings.service.token is not None else "; no service.token: API disabled, pages read-only"
    shown = service.target
    if on_listening is not None:
        on_listening(url, shown)
    extra = f"; settings for {len(others)} other subscription(s)" if others else ""
    announce(f"klaviyo-sync serve: listening on {url} (hub {shown}; {mode}{token}{extra})")
    watchdog = asyncio.create_task(_watch_lock(lock, stop, lost)) if isinstance(lock, PgServeLock) else None
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
    if lost.is_set():
        announce(f"klaviyo-sync serve: lost the serve lock of subscription {service.subscription} (the database "
                 "connection dropped and another serve holds it now): stopping")
    announce("klaviyo-sync serve: stopping (no new work is claimed; finishing what is in flight)")
    await site.stop()
    result = await service.stop(deadline=stop_deadline)
    await runner.cleanup()
    released = f"; {result['released']} change(s) released for the next run" if result["released"] else ""
    announce(f"klaviyo-sync serve: stopped cleanly{', cursor saved' if sync else ''}{released}")
    return 1 if lost.is_set() else 0


async def _watch_lock(lock: PgServeLock, stop: asyncio.Event, lost: asyncio.Event) -> None:
    """Every few seconds, check the PostgreSQL serve lock is still held (taking it again after a
    dropped connection); stop the service when another serve has it now."""
    while not stop.is_set():
        await asyncio.sleep(LOCK_CHECK_SECONDS)
        if not await asyncio.to_thread(lock.held):
            log.error("lost the serve lock of subscription %s", lock.subscription)
            lost.set()
            stop.set()


__all__ = ["build_app", "error_body", "serve"]
