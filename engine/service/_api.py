"""The hub API: JSON over HTTP, described by :mod:`engine.service._openapi` at ``/openapi.json``.

Records have the shape of ``hub import`` lines (PascalCase, nested ``Addresses`` / ``Lines``)
and pass the same checks (:func:`engine.hub._records.check_customer` / ``check_transaction``),
so a bad record gets the message ``hub import`` gives, located in the request body instead of
a file line.  A body holding a list is all-or-nothing: every item is checked first, and one bad
item stores none of them.  Writes queue outbound changes exactly as imports do (the hub's
outbound triggers) and wake the dispatch loop.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from engine.errors import (
    BadRequestError,
    BodyTooLargeError,
    HubError,
    HubNotFoundError,
    HubRecordError,
    Location,
    RefusedRecordsError,
    ResourceNotFoundError,
)
from engine.hub import SqliteHub
from engine.hub._db import INTEGRITY_ERRORS
from engine.hub._records import check_customer, check_transaction
from engine.klaviyo import revision as rev
from engine.service._queries import ErrorFilter, hub_status, record_view, search_errors
from engine.service._runtime import Service
from engine.service._subscriptions import Subscriptions, Target, acting

SERVICE = web.AppKey("service", Service)
SUBSCRIPTIONS = web.AppKey("subscriptions", Subscriptions)
#: the path prefix that addresses one subscription: ``/api/subscriptions/{subscription}/...``
PREFIX = "/api/subscriptions/{subscription}"
Scoped = Callable[[web.Request, Target], Awaitable[web.StreamResponse]]
MAX_BODY = web.AppKey("max_body_bytes", int)
BODY = "request body"
MAX_PAGE = 500


def scoped(handler: Scoped) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler of one subscription's route: the one in the path, else the serve's own."""

    async def run(request: web.Request) -> web.StreamResponse:
        async with request.app[SUBSCRIPTIONS].use(request.match_info.get("subscription")) as target:
            return await handler(request, target)

    run.__name__ = handler.__name__
    return run


def ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False, default=str))


async def read_json(request: web.Request) -> Any:
    """The request's JSON body.

    Raises:
        BadRequestError: not UTF-8 or not JSON (with line and column).
        BodyTooLargeError: larger than ``service.max_body_bytes``.
    """
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(request.app[MAX_BODY]) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequestError("the request body is not UTF-8 text", location=Location(file=BODY)) from None
    except json.JSONDecodeError as err:
        raise BadRequestError(f"invalid JSON: {err.msg}",
                              location=Location(file=BODY, line=err.lineno, column=err.colno)) from None


def too_large(limit: int) -> BodyTooLargeError:
    return BodyTooLargeError(f"the request body is larger than {limit} bytes (service.max_body_bytes)",
                             location=Location(file=BODY))


def query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequestError(f"query parameter {name} must be an integer, got {text[:40]!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequestError(f"query parameter {name} must be {bound}, got {value}")
    return value


def path_id(request: web.Request, name: str = "id") -> int:
    text = request.match_info[name]
    try:
        return int(text)
    except ValueError:
        raise ResourceNotFoundError(f"{name} must be an integer, got {text[:40]!r}") from None


# -- records -------------------------------------------------------------------------------

Checker = Callable[..., None]
_KINDS: dict[str, tuple[str, Checker]] = {"customers": ("Customer", check_customer),
                                          "transactions": ("Transaction", check_transaction)}


def _where(single: bool, i: int) -> str:
    return BODY if single else f"{BODY}[{i}]"


def _check_items(items: list[Any], checker: Checker, single: bool, *, partial: bool = False) -> list[HubError]:
    errors: list[HubError] = []
    for i, record in enumerate(items):
        try:
            if not isinstance(record, dict):
                kind = "null" if record is None else type(record).__name__.replace("dict", "object")
                raise HubRecordError(f"each record must be a JSON object, got {kind}")
            if partial:
                checker(record, partial=True)
            else:
                checker(record)
        except HubError as err:
            errors.append(err.at(file=_where(single, i)))
    return errors


def _store(hub: SqliteHub, entity: str, items: list[dict[str, Any]], single: bool,
           partial_id: int | None) -> list[tuple[dict[str, Any], str]]:
    """Write every item in one hub transaction (all or none); runs on the API's worker thread."""
    out: list[tuple[dict[str, Any], str]] = []
    with hub.transaction():
        for i, record in enumerate(items):
            try:
                if partial_id is not None:
                    before = hub.get_customer(partial_id)
                    if before is None:
                        raise HubNotFoundError(f"no Customer with Id {partial_id}",
                                               location=Location(record_id=str(partial_id)))
                    after = hub.update_customer(partial_id, record)
                    out.append((after, "unchanged" if after == before else "updated"))
                elif entity == "Customer":
                    out.append(hub.upsert_customer(record))
                else:
                    out.append(hub.upsert_transaction(record))
            except HubError as err:
                raise err.at(file=_where(single, i)) from None
            except INTEGRITY_ERRORS as err:
                raise HubRecordError(f"refused by the store: {err}",
                                     location=Location(file=_where(single, i))) from None
    return out


async def _write(request: web.Request, target: Target, kind: str, *, record_id: int | None = None,
                  partial: bool = False) -> web.Response:
    svc = acting(target, f"writing {kind}")
    entity, checker = _KINDS[kind]
    body = await read_json(request)
    single = not isinstance(body, list)
    items = [body] if single else list(body)
    if not items:
        raise BadRequestError("the request body is an empty list: nothing to store", location=Location(file=BODY))
    if record_id is not None:
        if not single:
            raise BadRequestError(f"PUT/PATCH /api/{kind}/{{id}} takes one record, not a list",
                                  location=Location(file=BODY))
        if isinstance(body, dict):
            if body.get("Id") not in (None, record_id):
                raise HubRecordError(f"Id {body['Id']} does not match {entity} {record_id}",
                                     location=Location(file=BODY, record_id=str(record_id)))
            if not partial:
                items = [{**body, "Id": record_id}]
    errors = _check_items(items, checker, single, partial=partial)
    if errors:
        raise RefusedRecordsError(errors)
    stored = await svc.db(_store, svc.hub_api, entity, items, single, record_id if partial else None)
    queued = await svc.db(svc.hub_api.queue_length)
    if any(outcome != "unchanged" for _, outcome in stored):
        svc.wake_dispatch()
    results: list[dict[str, Any]] = [{"record": await svc.db(_with_link, svc.hub_api, entity, rec), "outcome": outcome}
               for rec, outcome in stored] if single else \
        [{"Id": rec["Id"], "outcome": outcome} for rec, outcome in stored]
    created = all(outcome == "added" for _, outcome in stored)
    data: dict[str, Any] = results[0] if single else {"results": results}
    data["queue_length"] = queued
    return ok(data, status=201 if created else 200)


def _with_link(hub: SqliteHub, entity: str, record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "KlaviyoId": hub.get_klaviyo_id(entity, int(record["Id"]))}


async def create_customers(request: web.Request, target: Target) -> web.Response:
    return await _write(request, target, "customers")


async def put_customer(request: web.Request, target: Target) -> web.Response:
    return await _write(request, target, "customers", record_id=path_id(request))


async def patch_customer(request: web.Request, target: Target) -> web.Response:
    return await _write(request, target, "customers", record_id=path_id(request), partial=True)


async def create_transactions(request: web.Request, target: Target) -> web.Response:
    return await _write(request, target, "transactions")


async def put_transaction(request: web.Request, target: Target) -> web.Response:
    return await _write(request, target, "transactions", record_id=path_id(request))


async def _get(request: web.Request, svc: Target, entity: str) -> web.Response:
    hub_id = path_id(request)
    view = await svc.db(record_view, svc.hub_api, entity, hub_id)
    if view is None:
        raise HubNotFoundError(f"no {entity} with Id {hub_id}", location=Location(record_id=str(hub_id)))
    return ok({**view["record"], "KlaviyoId": view["links"]["Klaviyo"], "Queue": view["queue"]})


async def get_customer(request: web.Request, target: Target) -> web.Response:
    return await _get(request, target, "Customer")


async def get_transaction(request: web.Request, target: Target) -> web.Response:
    return await _get(request, target, "Transaction")


# -- error log, queue, Manual Sync ---------------------------------------------------------


def error_filter(query: Mapping[str, str]) -> ErrorFilter:
    level = query.get("level") or None
    if level is not None and level not in ("error", "warning"):
        raise BadRequestError(f"level must be error or warning, got {level[:40]!r}")
    return ErrorFilter(flow=query.get("flow") or None, level=level, code=query.get("code") or None,
                       record=query.get("record") or None, text=query.get("q") or None,
                       include_resolved=query.get("all", "") in ("1", "true", "yes", "on"))


async def list_errors(request: web.Request, svc: Target) -> web.Response:
    flt = error_filter(request.query)
    limit = query_int(request, "limit", 50, low=1, high=MAX_PAGE)
    offset = query_int(request, "offset", 0)
    entries, total = await svc.db(search_errors, svc.hub_api, flt, limit=limit, offset=offset)
    return ok({"total": total, "limit": limit, "offset": offset, "filter": flt.to_dict(), "entries": entries})


async def resolve_error(request: web.Request, target: Target) -> web.Response:
    svc = acting(target, "resolving an error-log entry")
    return ok(await svc.db(svc.hub_api.errors.resolve, path_id(request)))


async def retry_error(request: web.Request, target: Target) -> web.Response:
    return ok(await acting(target, "a retry").retry(path_id(request)))


async def get_queue(request: web.Request, svc: Target) -> web.Response:
    limit = query_int(request, "limit", 100, low=1, high=MAX_PAGE)
    changes = await svc.db(svc.hub_api.pending_changes, limit)
    length = await svc.db(svc.hub_api.queue_length)
    return ok({"length": length, "dispatching": svc.dispatching, "changes": [asdict(c) for c in changes]})


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object", location=Location(file=BODY))
    return body


async def sync_pull(request: web.Request, target: Target) -> web.Response:
    svc = acting(target, "a Manual Sync")
    body = _object(await read_json(request))
    pid = body.get("profile_id")
    if not isinstance(pid, (str, int)) or isinstance(pid, bool):
        raise BadRequestError("profile_id is required: a Klaviyo profile id such as 01H8TVABCDEF1234567890 or 44552",
                              location=Location(file=BODY))
    return ok(await svc.pull(str(pid)))


def push_args(body: Mapping[str, Any]) -> tuple[str, int, bool]:
    entity = str(body.get("entity") or "").capitalize()
    if entity not in ("Customer", "Transaction"):
        raise BadRequestError(f"entity must be customer or transaction, got {str(body.get('entity'))[:40]!r}",
                              location=Location(file=BODY))
    hub_id = body.get("id")
    if isinstance(hub_id, str) and hub_id.strip().isdigit():
        hub_id = int(hub_id)
    if not isinstance(hub_id, int) or isinstance(hub_id, bool):
        raise BadRequestError("id must be the record's hub Id (an integer)", location=Location(file=BODY))
    dry = body.get("dry_run", False)
    return entity, hub_id, dry in (True, "1", "true", "on")


async def sync_push(request: web.Request, target: Target) -> web.Response:
    svc = acting(target, "a Manual Sync")
    entity, hub_id, dry = push_args(_object(await read_json(request)))
    report = await svc.push(entity, hub_id, dry_run=dry)
    data = report.to_dict()
    data["ok"] = all(r.outcome not in ("failed", "invalid") for r in report.results)
    return ok(data)


async def status(request: web.Request, svc: Target) -> web.Response:
    data = await svc.db(hub_status, svc.hub_api)
    return ok({**data, **overview(svc)})


def overview(svc: Target) -> dict[str, Any]:
    """What the dashboard shows beside the hub's counts (never a secret)."""
    base = {"subscription": svc.subscription, "hub": svc.hub_api.target, "syncing": svc.syncing,
            "dispatching": svc.dispatching, "actions": isinstance(svc, Service)}
    if not isinstance(svc, Service):
        return base
    s = svc.settings
    return {**base, "connection": svc.connection_method(), "api_url": _public_url(s.api_url),
            "revision": s.api_revision,
            "revision_support": rev.support(s.api_revision).to_dict(),
            "generate_events": s.generate_events, "outbound_triggers": sorted(s.outbound_triggers.entities()),
            "poll_interval": s.poll_interval_text, "klaviyo": svc.client_stats(),
            "last_poll": dict(svc.last_poll),
            "started": svc.started}


def _public_url(url: str) -> str:
    """The API URL without any user or password written into it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def list_subscriptions(request: web.Request) -> web.Response:
    subs = request.app[SUBSCRIPTIONS]
    own = subs.own
    return ok({"hub": own.target, "own": own.subscription, "shared": own.shared,
               "subscriptions": await subs.summaries()})


async def get_subscription(request: web.Request) -> web.Response:
    subs = request.app[SUBSCRIPTIONS]
    name = request.match_info["subscription"]
    async with subs.use(name):  # 404 for an unknown one
        pass
    return ok(await subs.summary(name))


#: (method, path below /api or the subscription's prefix, handler, operation id): the OpenAPI
#: document lists the same ones, twice (``{op}`` and ``{op}InSubscription``).
SCOPED: list[tuple[str, str, Scoped, str]] = [
    ("POST", "/customers", create_customers, "createCustomers"),
    ("GET", "/customers/{id}", get_customer, "getCustomer"),
    ("PUT", "/customers/{id}", put_customer, "putCustomer"),
    ("PATCH", "/customers/{id}", patch_customer, "patchCustomer"),
    ("POST", "/transactions", create_transactions, "createTransactions"),
    ("GET", "/transactions/{id}", get_transaction, "getTransaction"),
    ("PUT", "/transactions/{id}", put_transaction, "putTransaction"),
    ("GET", "/errors", list_errors, "listErrors"),
    ("POST", "/errors/{id}/resolve", resolve_error, "resolveError"),
    ("POST", "/errors/{id}/retry", retry_error, "retryError"),
    ("GET", "/queue", get_queue, "getQueue"),
    ("POST", "/sync/pull", sync_pull, "syncPull"),
    ("POST", "/sync/push", sync_push, "syncPush"),
    ("GET", "/status", status, "getStatus"),
]


def routes() -> list[web.RouteDef]:
    """The API's routes (the OpenAPI document lists the same ones)."""
    out = [web.get("/api/subscriptions", list_subscriptions, name="listSubscriptions"),
           web.get(PREFIX, get_subscription, name="getSubscription")]
    for method, path, handler, name in SCOPED:
        out.append(web.route(method, "/api" + path, scoped(handler), name=name))
        out.append(web.route(method, PREFIX + path, scoped(handler), name=name + "InSubscription"))
    return out


__all__ = ["PREFIX", "SCOPED", "SERVICE", "SUBSCRIPTIONS", "error_filter", "ok", "overview", "push_args",
           "read_json", "routes", "scoped", "too_large"]
