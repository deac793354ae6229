"""The sandbox's endpoint handlers: one coroutine per Klaviyo operation.

Every handler gets a request the middleware already authenticated, rate
limited and whose body it parsed and validated against the revision's spec
(``request["body"]``); handlers apply Klaviyo's semantics on
:class:`~engine.sandbox._state.SandboxState` and render JSON:API answers.
:data:`ROUTES` lists ``(method, path template, handler, tier, capability)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.klaviyo import revision as rev
from engine.sandbox import _filters as flt
from engine.sandbox._render import (
    BODY_KEY, REVISION_KEY,
    additional_fields, body_response, event_resource, included, list_resource, metric_resource, page_size,
    page_of, paginate, profile_lists, profile_resource, sort_keyed,
)
from engine.sandbox._state import SandboxState, invalid, not_found

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE_KEY: web.AppKey[SandboxState] = web.AppKey("state", SandboxState)

PROFILE_FILTERS = {
    "id": {"any", "equals"}, "email": {"any", "equals"}, "phone_number": {"any", "equals"},
    "external_id": {"any", "equals"}, "_kx": {"equals"},
    "created": {"greater-than", "less-than"}, "updated": {"greater-than", "less-than"},
}
LIST_FILTERS = {"name": {"any", "equals"}, "id": {"any", "equals"}, "created": {"greater-than"}, "updated": {"greater-than"}}
EVENT_FILTERS = {
    "metric_id": {"equals"}, "profile_id": {"equals"},
    "datetime": {"greater-or-equal", "greater-than", "less-or-equal", "less-than"},
    "timestamp": {"greater-or-equal", "greater-than", "less-or-equal", "less-than"},
}


def _state(request: web.Request) -> SandboxState:
    return request.app[STATE_KEY]


def _conditions(request: web.Request, allowed: dict[str, set[str]]) -> list[flt.Condition]:
    text = request.query.get("filter")
    if not text:
        return []
    try:
        conds = flt.parse(text, allowed)
    except flt.FilterError as exc:
        raise invalid(str(exc), parameter="filter") from None
    return [flt.Condition(c.op, c.field, _lower(c.value)) if c.field == "email" else c for c in conds]


def _lower(v: Any) -> Any:
    if isinstance(v, list):
        return [_lower(x) for x in v]
    return v.lower() if isinstance(v, str) else v


def _data(request: web.Request) -> dict[str, Any]:
    return request[BODY_KEY]["data"]


# -- profiles ------------------------------------------------------------------------


async def get_profiles(request: web.Request) -> web.Response:
    state = _state(request)
    conds = _conditions(request, PROFILE_FILTERS)
    sort = request.query.get("sort", "id")
    field = sort.lstrip("-")
    if field not in ("id", "created", "updated", "email"):
        raise invalid(f"'{sort}' is not a supported sort for profiles in the sandbox.", parameter="sort")
    # A poll asks for the same filter and sort page after page: sort once per state version.
    cache_key = ("profiles", request.query.get("filter", ""), field)
    with state.lock:
        cached = state.page_cache.get(cache_key)
        if cached is not None and cached[0] == state.version:
            keyed = cached[1]
        else:
            keyed = sort_keyed(state.query_profiles(conds), lambda p: SandboxState.profile_field(p, field))
            if len(state.page_cache) > 64:
                state.page_cache.clear()
            state.page_cache[cache_key] = (state.version, keyed)
    page, links = page_of(request, keyed, descending=sort.startswith("-"), page_size=page_size(request, 20, 100))
    extra = additional_fields(request)
    body: dict[str, Any] = {"data": [profile_resource(request, p, extra, lists=profile_lists(state, p["id"]))
                                     for p in page], "links": links}
    if included(request):
        body["included"] = []  # conversations and push tokens: the sandbox has none
    return body_response(body)


async def get_profile(request: web.Request) -> web.Response:
    state = _state(request)
    pid = request.match_info["id"]
    with state.lock:
        p = state.profiles.get(pid)
        if p is None:
            raise not_found(f"A profile with id {pid} does not exist.")
        lists = profile_lists(state, pid)
        extra: list[dict[str, Any]] = []
        if "lists" in included(request):
            extra = [list_resource(request, state.lists[lid]) for lid in lists]
        return body_response({"data": profile_resource(request, p, additional_fields(request), lists=lists),
                              "included": extra})


def _attrs_and_patch(data: dict[str, Any], revision: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    attrs = dict(data.get("attributes") or {})
    meta = attrs.pop("meta", None) or data.get("meta") or {}
    return attrs, (meta.get("patch_properties") if isinstance(meta, dict) else None)


async def create_profile(request: web.Request) -> web.Response:
    attrs, patch = _attrs_and_patch(_data(request), request[REVISION_KEY])
    p = _state(request).create_profile(attrs, patch)
    return body_response({"data": profile_resource(request, p, set(), lists=[])}, status=201)


async def update_profile(request: web.Request) -> web.Response:
    data = _data(request)
    pid = request.match_info["id"]
    if data.get("id") != pid:
        raise invalid("The id in the body must match the id in the URL.", pointer="/data/id")
    attrs, patch = _attrs_and_patch(data, request[REVISION_KEY])
    p = _state(request).update_profile(pid, attrs, patch)
    return body_response({"data": profile_resource(request, p, set(), lists=profile_lists(_state(request), pid))})


async def profile_import(request: web.Request) -> web.Response:
    data = _data(request)
    attrs, patch = _attrs_and_patch(data, request[REVISION_KEY])
    p, created = _state(request).import_profile(attrs, data.get("id"), patch)
    lists = profile_lists(_state(request), p["id"])
    return body_response({"data": profile_resource(request, p, set(), lists=lists)}, status=201 if created else 200)


# -- lists ---------------------------------------------------------------------------


async def get_lists(request: web.Request) -> web.Response:
    state = _state(request)
    conds = _conditions(request, LIST_FILTERS)
    with state.lock:
        items = [lst for lst in state.lists.values()
                 if flt.matches(conds, lambda f, lst=lst: lst.get(f))]
    page, links = paginate(request, items, sort_value=lambda x: x["id"], descending=False,
                           page_size=page_size(request, 10, 10))
    return body_response({"data": [list_resource(request, x) for x in page], "links": links})


async def get_list(request: web.Request) -> web.Response:
    return body_response({"data": list_resource(request, _state(request).get_list(request.match_info["id"]))})


async def create_list(request: web.Request) -> web.Response:
    state = _state(request)
    lid = state.add_list(str(_data(request)["attributes"]["name"]))
    return body_response({"data": list_resource(request, state.lists[lid])}, status=201)


def _ids(request: web.Request) -> list[str]:
    data = _data(request)
    items = data if isinstance(data, list) else [data]
    return [str(x["id"]) for x in items]


async def add_list_members(request: web.Request) -> web.Response:
    _state(request).change_members(request.match_info["id"], _ids(request), add=True)
    return web.Response(status=204)


async def remove_list_members(request: web.Request) -> web.Response:
    _state(request).change_members(request.match_info["id"], _ids(request), add=False)
    return web.Response(status=204)


async def get_list_member_ids(request: web.Request) -> web.Response:
    state = _state(request)
    with state.lock:
        members = state.get_list(request.match_info["id"])["members"]
        items = [{"id": pid, "joined": at} for pid, at in members.items()]
    page, links = paginate(request, items, sort_value=lambda x: x["joined"], descending=False,
                           page_size=page_size(request, 20, 1000))
    return body_response({"data": [{"type": "profile", "id": x["id"]} for x in page], "links": links})


async def get_list_profiles(request: web.Request) -> web.Response:
    state = _state(request)
    with state.lock:
        members = state.get_list(request.match_info["id"])["members"]
        items = [{"id": pid, "profile": state.profiles[pid], "joined": at}
                 for pid, at in members.items() if pid in state.profiles]
    page, links = paginate(request, items, sort_value=lambda x: x["joined"], descending=False,
                           page_size=page_size(request, 20, 100))
    extra = additional_fields(request)
    data = [profile_resource(request, x["profile"], extra, lists=profile_lists(state, x["id"]), joined=x["joined"])
            for x in page]
    return body_response({"data": data, "links": links})


# -- events --------------------------------------------------------------------------


def _event_profile(state: SandboxState, prof: dict[str, Any]) -> dict[str, Any]:
    pattrs = dict(prof.get("attributes") or {})
    pattrs.pop("meta", None)
    if not prof.get("id") and not any(pattrs.get(k) for k in ("email", "phone_number", "external_id", "anonymous_id", "_kx")):
        raise invalid("An identifier (id, email, phone_number, external_id or anonymous_id) is required for the profile.",
                      pointer="/data/attributes/profile/data/attributes")
    return state.resolve_profile(prof.get("id"), pattrs)


def _record(state: SandboxState, profile: dict[str, Any], attrs: dict[str, Any], pointer: str) -> None:
    when = None
    if attrs.get("time"):
        try:
            when = flt.parse_datetime(str(attrs["time"]))
        except ValueError:
            raise invalid(f"'{attrs['time']}' is not a valid datetime.", pointer=pointer + "/time") from None
    name = attrs["metric"]["data"]["attributes"]["name"]
    if len(name) >= 128:
        raise invalid("Metric name must be less than 128 characters.", pointer=pointer + "/metric/data/attributes/name")
    state.record_event(profile, name, dict(attrs.get("properties") or {}), when, attrs.get("value"), attrs.get("unique_id"))


async def create_event(request: web.Request) -> web.Response:
    state = _state(request)
    attrs = _data(request)["attributes"]
    with state.lock:
        profile = _event_profile(state, attrs["profile"]["data"])
        _record(state, profile, attrs, "/data/attributes")
    return web.Response(status=202)


async def bulk_create_events(request: web.Request) -> web.Response:
    state = _state(request)
    entries = _data(request)["attributes"]["events-bulk-create"]["data"]
    with state.lock:
        for i, entry in enumerate(entries):
            profile = _event_profile(state, entry["attributes"]["profile"]["data"])
            for j, ev in enumerate(entry["attributes"]["events"]["data"]):
                _record(state, profile, ev["attributes"],
                        f"/data/attributes/events-bulk-create/data/{i}/attributes/events/data/{j}/attributes")
    return web.Response(status=202)


async def get_events(request: web.Request) -> web.Response:
    state = _state(request)
    conds = _conditions(request, EVENT_FILTERS)
    sort = request.query.get("sort", "datetime")
    with state.lock:
        def getter(e: dict[str, Any], f: str) -> Any:
            return int(e["datetime"].timestamp()) if f == "timestamp" else e.get(f)
        items = [e for e in state.events if flt.matches(conds, lambda f, e=e: getter(e, f))]
        page, links = paginate(request, items, sort_value=lambda e: e["datetime"],
                               descending=sort.startswith("-"), page_size=200)
        include = included(request)
        extra: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        for e in page:
            if "metric" in include and ("metric", e["metric_id"]) not in seen:
                seen.add(("metric", e["metric_id"]))
                extra.append(metric_resource(request, state.metrics[e["metric_id"]]))
            if "profile" in include and ("profile", e["profile_id"]) not in seen:
                seen.add(("profile", e["profile_id"]))
                extra.append(profile_resource(request, state.profiles[e["profile_id"]], set(),
                                              lists=profile_lists(state, e["profile_id"])))
        body: dict[str, Any] = {"data": [event_resource(request, e) for e in page], "links": links}
        if include:
            body["included"] = extra
    return body_response(body)


async def get_metrics(request: web.Request) -> web.Response:
    state = _state(request)
    with state.lock:
        items = list(state.metrics.values())
    page, links = paginate(request, items, sort_value=lambda m: m["id"], descending=False, page_size=200)
    return body_response({"data": [metric_resource(request, m) for m in page], "links": links})


# (method, template without trailing slash, handler, tier, capability needed or None)
ROUTES: list[tuple[str, str, Handler, str, str | None]] = [
    ("GET", "/api/profiles", get_profiles, "L", None),
    ("POST", "/api/profiles", create_profile, "L", None),
    ("GET", "/api/profiles/{id}", get_profile, "L", None),
    ("PATCH", "/api/profiles/{id}", update_profile, "L", None),
    ("POST", "/api/profile-import", profile_import, "L", "profile_import"),
    ("GET", "/api/lists", get_lists, "L", None),
    ("POST", "/api/lists", create_list, "M", None),
    ("GET", "/api/lists/{id}", get_list, "L", None),
    ("GET", "/api/lists/{id}/relationships/profiles", get_list_member_ids, "L", None),
    ("POST", "/api/lists/{id}/relationships/profiles", add_list_members, "M", None),
    ("DELETE", "/api/lists/{id}/relationships/profiles", remove_list_members, "M", None),
    ("GET", "/api/lists/{id}/profiles", get_list_profiles, "L", None),
    ("GET", "/api/events", get_events, "XL", None),
    ("POST", "/api/events", create_event, "XL", None),
    ("GET", "/api/metrics", get_metrics, "M", None),
    ("POST", "/api/event-bulk-create-jobs", bulk_create_events, "M", "bulk_events"),
]

__all__ = ["ROUTES", "rev"]
