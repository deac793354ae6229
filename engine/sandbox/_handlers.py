"""The sandbox's endpoint handlers: one coroutine per Klaviyo operation.

Every handler gets a request the middleware already authenticated, rate
limited and whose body it parsed and validated against the revision's spec
(``request["body"]``); handlers apply Klaviyo's semantics on
:class:`~engine.sandbox._state.SandboxState` and render JSON:API answers.
:data:`ROUTES` lists ``(method, path template, handler, tier, capability)``.
"""

from __future__ import annotations

import bisect
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from engine.errors import FilterError
from engine.klaviyo import revision as rev
from engine.sandbox import _filters as flt
from engine.sandbox._accounts import ACCOUNT_KEY, ACCOUNTS_KEY
from engine.sandbox._render import (
    BODY_KEY,
    REVISION_KEY,
    additional_fields,
    body_response,
    event_resource,
    included,
    list_resource,
    metric_resource,
    page_of,
    page_size,
    paginate,
    profile_lists,
    profile_resource,
    sort_keyed,
)
from engine.sandbox._spec import spec_revision_for
from engine.sandbox._state import SandboxState, invalid, not_found

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATE_KEY: web.AppKey[SandboxState] = web.AppKey("state", SandboxState)

_RANGE = {"greater-or-equal", "greater-than", "less-or-equal", "less-than"}
SUPPRESSION = "subscriptions.email.marketing.suppression."
LIST_SUPPRESSION = "subscriptions.email.marketing.list_suppressions."
# GET /api/profiles: the fields and operators both specs list (2023-10-15 and 2026-07-15 agree)
PROFILE_FILTERS = {
    "id": {"any", "equals"}, "email": {"any", "equals"}, "phone_number": {"any", "equals"},
    "external_id": {"any", "equals"}, "_kx": {"equals"},
    "created": {"greater-than", "less-than"}, "updated": {"greater-than", "less-than"},
    SUPPRESSION + "timestamp": _RANGE, SUPPRESSION + "reason": {"equals"},
    LIST_SUPPRESSION + "list_id": {"equals"}, LIST_SUPPRESSION + "reason": {"equals"},
    LIST_SUPPRESSION + "timestamp": _RANGE,
}
PROFILE_DATETIMES = {"created", "updated", SUPPRESSION + "timestamp", LIST_SUPPRESSION + "timestamp"}
PROFILE_SORTS = {"id", "created", "updated", "email", SUPPRESSION + "timestamp", LIST_SUPPRESSION + "timestamp"}
# GET /api/lists/{id}/profiles and /relationships/profiles
MEMBER_FILTERS = {
    "email": {"any", "equals"}, "phone_number": {"any", "equals"}, "push_token": {"any", "equals"},
    "_kx": {"equals"}, "joined_group_at": _RANGE,
}
LIST_FILTERS = {"name": {"any", "equals"}, "id": {"any", "equals"}, "created": {"greater-than"},
                "updated": {"greater-than"}}
LIST_SORTS = {"id", "created", "updated", "name"}
EVENT_FILTERS = {"metric_id": {"equals"}, "profile_id": {"equals"}, "datetime": _RANGE, "timestamp": _RANGE}
METRIC_FILTERS = {"integration.name": {"equals"}, "integration.category": {"equals"}}
INTEGRATION = {"object": "integration", "id": "0rG4eQ", "name": "API", "category": "API"}


def request_state(request: web.Request) -> SandboxState:
    """The state of the request's account (:mod:`engine.sandbox._accounts`): one dict lookup."""
    return request.app[ACCOUNTS_KEY].state_of(request.get(ACCOUNT_KEY))


def filter_conditions(request: web.Request, allowed: dict[str, set[str]],
                datetimes: Collection[str] = ()) -> list[flt.Condition]:
    text = request.query.get("filter")
    if not text:
        return []
    try:
        conds = flt.parse(text, allowed, datetimes)
    except FilterError as exc:
        raise invalid(str(exc), parameter="filter") from None
    return [flt.Condition(c.op, c.field, _lower(c.value)) if c.field == "email" else c for c in conds]


def _sort(request: web.Request, allowed: Collection[str], default: str, what: str) -> tuple[str, bool]:
    """``(field, descending)`` of the request's ``sort``; a field the spec does not list is a 400."""
    sort = request.query.get("sort", default)
    field = sort.removeprefix("-")
    if field not in allowed:
        raise invalid(f"'{sort}' is not a valid sort for {what}. Valid sorts: "
                      f"{', '.join(x for f in sorted(allowed) for x in (f, '-' + f))}.", parameter="sort")
    return field, sort.startswith("-")


def _suppressions(p: dict[str, Any], group: str) -> list[dict[str, Any]]:
    marketing = ((p.get("subscriptions") or {}).get("email") or {}).get("marketing") or {}
    entries = marketing.get("suppression" if group == SUPPRESSION else "list_suppressions") or []
    return [e for e in entries if isinstance(e, dict)]


def _entry_value(entry: dict[str, Any], name: str) -> Any:
    value = entry.get(name)
    if name == "timestamp" and isinstance(value, str):
        try:
            return flt.parse_datetime(value)
        except ValueError:
            return None
    return value


def _check_suppression_filters(conds: list[flt.Condition]) -> None:
    """Klaviyo's rules for the suppression filters (its SDK's changelog for revision 2023-10-15)."""
    fields = [c.field for c in conds]
    if any(f.startswith(SUPPRESSION) for f in fields) and any(f.startswith(LIST_SUPPRESSION) for f in fields):
        raise invalid("List suppression and global suppression filters cannot be combined.", parameter="filter")
    if sum(f.endswith(".timestamp") for f in fields) > 1:
        raise invalid("Only one date filter is allowed on suppressions.", parameter="filter")
    if any(f.startswith(LIST_SUPPRESSION) for f in fields) and LIST_SUPPRESSION + "list_id" not in fields:
        raise invalid("A list_id filter is required to filter on list suppressions.", parameter="filter")


def _suppressed(p: dict[str, Any], conds: list[flt.Condition]) -> bool:
    """Whether one suppression entry of the profile satisfies every suppression condition."""
    if not conds:
        return True
    group = SUPPRESSION if conds[0].field.startswith(SUPPRESSION) else LIST_SUPPRESSION

    def value(e: dict[str, Any], f: str) -> Any:
        return _entry_value(e, f.removeprefix(group))
    return any(flt.matches(conds, partial(value, e)) for e in _suppressions(p, group))


def _suppression_time(p: dict[str, Any], field: str, conds: list[flt.Condition]) -> Any:
    """The sort value of a suppression timestamp: the latest (of the filtered list's, for list suppressions)."""
    group = field.removesuffix("timestamp")
    list_ids = {c.value for c in conds if c.field == LIST_SUPPRESSION + "list_id"}
    times = [_entry_value(e, "timestamp") for e in _suppressions(p, group)
             if group == SUPPRESSION or not list_ids or e.get("list_id") in list_ids]
    found = [t for t in times if t is not None]
    return max(found) if found else None


def _lower(v: Any) -> Any:
    if isinstance(v, list):
        return [_lower(x) for x in v]
    return v.lower() if isinstance(v, str) else v


def body_data(request: web.Request) -> dict[str, Any]:
    data: dict[str, Any] = request[BODY_KEY]["data"]
    return data


# -- profiles ------------------------------------------------------------------------


async def get_profiles(request: web.Request) -> web.Response:
    state = request_state(request)
    conds = filter_conditions(request, PROFILE_FILTERS, PROFILE_DATETIMES)
    plain = [c for c in conds if not c.field.startswith("subscriptions.")]
    subs = [c for c in conds if c.field.startswith("subscriptions.")]
    _check_suppression_filters(subs)
    field, descending = _sort(request, PROFILE_SORTS, "id", "profiles")

    def sort_value(p: dict[str, Any]) -> Any:
        if field.startswith("subscriptions."):
            return _suppression_time(p, field, subs)
        return SandboxState.profile_field(p, field)

    # A poll asks for the same filter and sort page after page: sort once per state version.
    # Filters on `updated` alone, sorted by `updated` (a poll, or its parallel ranges), share
    # one index of every profile and take their range of it by binary search.
    by_updated = field == "updated" and not subs and all(c.field == "updated" for c in plain)
    cache_key = ("profiles", "" if by_updated else request.query.get("filter", ""), field)
    with state.lock:
        cached = state.page_cache.get(cache_key)
        if cached is not None and cached[0] == state.version:
            keyed = cached[1]
        else:
            found = [p for p in state.query_profiles([] if by_updated else plain) if _suppressed(p, subs)]
            keyed = sort_keyed(found, sort_value)
            if len(state.page_cache) > 64:
                state.page_cache.clear()
            state.page_cache[cache_key] = (state.version, keyed)
    lo, hi = _updated_range(keyed[1], plain) if by_updated else (0, None)
    page, links = page_of(request, keyed, descending=descending, page_size=page_size(request, 20, 100),
                          lo=lo, hi=hi)
    extra = additional_fields(request)
    body: dict[str, Any] = {"data": [profile_resource(request, p, extra, lists=profile_lists(state, p["id"]))
                                     for p in page], "links": links}
    if included(request):
        body["included"] = []  # conversations and push tokens: the sandbox has none
    return body_response(body)


class _Updated:
    """A sorted list of profiles seen as the list of their ``updated`` times (for :mod:`bisect`)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> datetime:
        when: datetime = self.items[i]["updated"]
        return when


def _updated_range(items: list[dict[str, Any]], conds: list[flt.Condition]) -> tuple[int, int]:
    """The slice of ``items`` (sorted by ``updated``) that every ``updated`` condition allows."""
    times = _Updated(items)
    lo, hi = 0, len(items)
    for c in conds:
        if not isinstance(c.value, datetime):
            return 0, 0
        if c.op in ("greater-than", "greater-or-equal"):
            cut = (bisect.bisect_right if c.op == "greater-than" else bisect.bisect_left)(times, c.value)
            lo = max(lo, cut)
        else:
            cut = (bisect.bisect_left if c.op == "less-than" else bisect.bisect_right)(times, c.value)
            hi = min(hi, cut)
    return lo, max(lo, hi)


async def get_profile(request: web.Request) -> web.Response:
    state = request_state(request)
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


def attributes_and_patch(data: dict[str, Any], revision: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    attrs = dict(data.get("attributes") or {})
    meta = attrs.pop("meta", None) or data.get("meta") or {}
    return attrs, (meta.get("patch_properties") if isinstance(meta, dict) else None)


async def create_profile(request: web.Request) -> web.Response:
    attrs, patch = attributes_and_patch(body_data(request), request[REVISION_KEY])
    p = request_state(request).create_profile(attrs, patch)
    return body_response({"data": profile_resource(request, p, set(), lists=[])}, status=201)


async def update_profile(request: web.Request) -> web.Response:
    data = body_data(request)
    pid = request.match_info["id"]
    if data.get("id") != pid:
        raise invalid("The id in the body must match the id in the URL.", pointer="/data/id")
    attrs, patch = attributes_and_patch(data, request[REVISION_KEY])
    state = request_state(request)
    p = state.update_profile(pid, attrs, patch)
    return body_response({"data": profile_resource(request, p, set(), lists=profile_lists(state, pid))})


async def profile_import(request: web.Request) -> web.Response:
    data = body_data(request)
    attrs, patch = attributes_and_patch(data, request[REVISION_KEY])
    p, created = request_state(request).import_profile(attrs, data.get("id"), patch)
    lists = profile_lists(request_state(request), p["id"])
    return body_response({"data": profile_resource(request, p, set(), lists=lists)}, status=201 if created else 200)


# -- lists ---------------------------------------------------------------------------


async def get_lists(request: web.Request) -> web.Response:
    state = request_state(request)
    conds = filter_conditions(request, LIST_FILTERS, {"created", "updated"})
    field, descending = _sort(request, LIST_SORTS, "id", "lists")
    with state.lock:
        items = [lst for lst in state.lists.values()
                 if flt.matches(conds, lst.get)]
    page, links = paginate(request, items, sort_value=lambda x: x[field], descending=descending,
                           page_size=page_size(request, 10, 10))
    body: dict[str, Any] = {"data": [list_resource(request, x) for x in page], "links": links}
    if included(request):
        body["included"] = []  # tags and flow triggers: the sandbox has none
    return body_response(body)


async def get_list(request: web.Request) -> web.Response:
    state = request_state(request)
    with state.lock:
        lst = state.get_list(request.match_info["id"])
        resource = list_resource(request, lst, profile_count=len(lst["members"])
                                 if "profile_count" in additional_fields(request, "list") else None)
    body: dict[str, Any] = {"data": resource}
    if included(request):
        body["included"] = []
    return body_response(body)


async def create_list(request: web.Request) -> web.Response:
    state = request_state(request)
    lid = state.add_list(str(body_data(request)["attributes"]["name"]))
    return body_response({"data": list_resource(request, state.lists[lid])}, status=201)


def _ids(request: web.Request) -> list[str]:
    data = body_data(request)
    items = data if isinstance(data, list) else [data]
    return [str(x["id"]) for x in items]


async def add_list_members(request: web.Request) -> web.Response:
    request_state(request).change_members(request.match_info["id"], _ids(request), add=True)
    return web.Response(status=204)


async def remove_list_members(request: web.Request) -> web.Response:
    request_state(request).change_members(request.match_info["id"], _ids(request), add=False)
    return web.Response(status=204)


def _member_field(p: dict[str, Any], at: Any, f: str) -> Any:
    return at if f == "joined_group_at" else SandboxState.profile_field(p, f)


def _members(request: web.Request) -> tuple[list[dict[str, Any]], bool]:
    """The list's members matching the request's filter (``{"id", "profile", "joined"}``) and the sort order."""
    state = request_state(request)
    conds = filter_conditions(request, MEMBER_FILTERS, {"joined_group_at"})
    _field, descending = _sort(request, {"joined_group_at"}, "joined_group_at", "list members")
    with state.lock:
        members = state.get_list(request.match_info["id"])["members"]
        items = []
        for pid, at in members.items():
            p = state.profiles.get(pid)
            if p is None:
                continue
            if conds and not flt.matches(conds, partial(_member_field, p, at)):
                continue
            items.append({"id": pid, "profile": p, "joined": at})
    return items, descending


async def get_list_member_ids(request: web.Request) -> web.Response:
    items, descending = _members(request)
    page, links = paginate(request, items, sort_value=lambda x: x["joined"], descending=descending,
                           page_size=page_size(request, 20, 1000))
    return body_response({"data": [{"type": "profile", "id": x["id"]} for x in page], "links": links})


async def get_list_profiles(request: web.Request) -> web.Response:
    state = request_state(request)
    items, descending = _members(request)
    page, links = paginate(request, items, sort_value=lambda x: x["joined"], descending=descending,
                           page_size=page_size(request, 20, 100))
    extra = additional_fields(request)
    data = [profile_resource(request, x["profile"], extra, lists=profile_lists(state, x["id"]), joined=x["joined"])
            for x in page]
    return body_response({"data": data, "links": links})


# -- events --------------------------------------------------------------------------


def _event_profile_named(state: SandboxState, prof: dict[str, Any], pointer: str = "/data/attributes/profile/data"
                         ) -> dict[str, Any]:
    """The identifier attributes of an event's profile, checked: one identifier at least, an id that exists."""
    pattrs = dict(prof.get("attributes") or {})
    pattrs.pop("meta", None)
    if not prof.get("id") and not any(pattrs.get(k)
                                      for k in ("email", "phone_number", "external_id", "anonymous_id", "_kx")):
        raise invalid("An identifier (id, email, phone_number, external_id or anonymous_id) "
                      "is required for the profile.", pointer=pointer + "/attributes")
    if prof.get("id") and prof["id"] not in state.profiles:
        raise invalid(f"A profile with id {prof['id']} does not exist.", pointer=pointer + "/id")
    return pattrs


def _event_profile(state: SandboxState, prof: dict[str, Any]) -> dict[str, Any]:
    return state.resolve_profile(prof.get("id"), _event_profile_named(state, prof))


def _event_time(state: SandboxState, raw: Any, revision: str, pointer: str) -> datetime | None:
    """The event's ``time``, within Klaviyo's bounds: after the year 2000 (1990 from the specs that say so,
    2026-07-15 here) and at most one year in the future; else a 400 quoting the spec's rule."""
    if not raw:
        return None
    try:
        when = flt.parse_datetime(str(raw))
    except ValueError:
        raise invalid(f"'{raw}' is not a valid datetime.", pointer=pointer + "/time") from None
    floor_year = 1990 if spec_revision_for(revision) == "2026-07-15" else 2000
    now = state.clock()
    try:
        ceiling = now.replace(year=now.year + 1)
    except ValueError:  # 29 February
        ceiling = now.replace(year=now.year + 1, day=28)
    if when < datetime(floor_year, 1, 1, tzinfo=UTC) or when > ceiling:
        raise invalid(f"'{raw}' is not a valid time: the time must be after the year {floor_year} "
                      "and can only be up to 1 year in the future.", pointer=pointer + "/time")
    return when


def _checked(state: SandboxState, attrs: dict[str, Any], pointer: str, revision: str) -> tuple[str, datetime | None]:
    """An event's metric name and time, checked before anything is stored."""
    when = _event_time(state, attrs.get("time"), revision, pointer)
    name = attrs["metric"]["data"]["attributes"]["name"]
    if len(name) >= 128:
        raise invalid("Metric name must be less than 128 characters.", pointer=pointer + "/metric/data/attributes/name")
    return name, when


def _record(state: SandboxState, profile: dict[str, Any], attrs: dict[str, Any],
            checked: tuple[str, datetime | None]) -> None:
    name, when = checked
    state.record_event(profile, name, dict(attrs.get("properties") or {}), when, attrs.get("value"),
                       attrs.get("unique_id"))


async def create_event(request: web.Request) -> web.Response:
    state = request_state(request)
    attrs = body_data(request)["attributes"]
    with state.lock:
        checked = _checked(state, attrs, "/data/attributes", request[REVISION_KEY])
        profile = _event_profile(state, attrs["profile"]["data"])
        _record(state, profile, attrs, checked)
    return web.Response(status=202)


async def bulk_create_events(request: web.Request) -> web.Response:
    state = request_state(request)
    entries = body_data(request)["attributes"]["events-bulk-create"]["data"]
    with state.lock:
        # The whole job is checked before any of it is stored (a bad event fails the request).
        checked = [[_checked(state, ev["attributes"],
                             f"/data/attributes/events-bulk-create/data/{i}/attributes/events/data/{j}/attributes",
                             request[REVISION_KEY])
                    for j, ev in enumerate(entry["attributes"]["events"]["data"])]
                   for i, entry in enumerate(entries)]
        for i, entry in enumerate(entries):  # and every profile it names, before one is created or changed
            _event_profile_named(state, entry["attributes"]["profile"]["data"],
                                 f"/data/attributes/events-bulk-create/data/{i}/attributes/profile/data")
        for entry, entry_checked in zip(entries, checked, strict=True):
            profile = _event_profile(state, entry["attributes"]["profile"]["data"])
            for ev, ev_checked in zip(entry["attributes"]["events"]["data"], entry_checked, strict=True):
                _record(state, profile, ev["attributes"], ev_checked)
    return web.Response(status=202)


async def get_events(request: web.Request) -> web.Response:
    state = request_state(request)
    conds = filter_conditions(request, EVENT_FILTERS, {"datetime"})
    _field, descending = _sort(request, {"datetime", "timestamp"}, "datetime", "events")
    with state.lock:
        def getter(e: dict[str, Any], f: str) -> Any:
            return int(e["datetime"].timestamp()) if f == "timestamp" else e.get(f)
        items = [e for e in state.events if flt.matches(conds, partial(getter, e))]
        page, links = paginate(request, items, sort_value=lambda e: e["datetime"],
                               descending=descending, page_size=page_size(request, 200, 1000))
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
    state = request_state(request)
    conds = filter_conditions(request, METRIC_FILTERS)
    with state.lock:
        items = [m for m in state.metrics.values()
                 if flt.matches(conds, lambda f: INTEGRATION[f.removeprefix("integration.")])]
    page, links = paginate(request, items, sort_value=lambda m: m["id"], descending=False, page_size=200)
    body: dict[str, Any] = {"data": [metric_resource(request, m) for m in page], "links": links}
    if included(request):
        body["included"] = []  # flow triggers: the sandbox has none
    return body_response(body)


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
