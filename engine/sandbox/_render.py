"""JSON:API rendering and cursor pagination for the sandbox's responses."""

from __future__ import annotations

import base64
import bisect
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from engine.klaviyo import revision as rev
from engine.sandbox._state import PROFILE_FIELDS, SandboxState, invalid, iso

JSONAPI = "application/vnd.api+json"
REVISION_KEY: web.RequestKey[str] = web.RequestKey("revision", str)
BODY_KEY: web.RequestKey[dict[str, Any]] = web.RequestKey("body", dict)


def body_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON:API response (Klaviyo always answers ``application/vnd.api+json``)."""
    return web.Response(
        status=status, body=json.dumps(data, default=str).encode(), content_type=JSONAPI, headers=headers
    )


def link(request: web.Request, *segments: str) -> str:
    """Absolute link to ``/api/<segments>`` in the path style of the request's revision."""
    revision = request[REVISION_KEY]
    base = f"{request.scheme}://{request.host}"
    return base + rev.api_path(revision, *segments)


def profile_resource(request: web.Request, p: dict[str, Any], additional: set[str], *,
                     lists: list[str] | None = None, joined: datetime | None = None) -> dict[str, Any]:
    """A profile as Klaviyo shows it, with the request's sparse fieldset applied.

    ``subscriptions`` and ``predictive_analytics`` appear only when ``additional`` asks for them;
    ``lists`` (ids of the lists it is in) fills ``relationships.lists.data``; ``joined`` is the
    ``joined_group_at`` of a list member (``GET /api/lists/{id}/profiles``).
    """
    a = p["attributes"]
    revision = request[REVISION_KEY]
    fields = [f for f in PROFILE_FIELDS if f != "anonymous_id"]
    if not rev.supports(revision, "jsonapi_content_type"):
        fields.remove("locale")
    attrs: dict[str, Any] = {f: a.get(f) for f in fields}
    attrs.update({
        "created": iso(p["created"]), "updated": iso(p["updated"]),
        "last_event_date": iso(p["last_event_date"]),
        "location": dict(a.get("location") or {}), "properties": dict(a.get("properties") or {}),
    })
    if joined is not None:
        attrs["joined_group_at"] = iso(joined)
    if "subscriptions" in additional:
        attrs["subscriptions"] = json.loads(json.dumps(p["subscriptions"]))
    if "predictive_analytics" in additional:
        attrs["predictive_analytics"] = dict.fromkeys(PREDICTIVE_FIELDS)  # the sandbox predicts nothing
    pid = p["id"]
    linkage = {"lists": [{"type": "list", "id": lid} for lid in (lists or [])], "segments": []}
    return sparse(request, {
        "type": "profile", "id": pid, "attributes": attrs,
        "relationships": {
            rel: {"data": linkage[rel],
                  "links": {"self": link(request, "profiles", pid, "relationships", rel),
                            "related": link(request, "profiles", pid, rel)}}
            for rel in ("lists", "segments")
        },
        "links": {"self": link(request, "profiles", pid)},
    })


PREDICTIVE_FIELDS = (
    "historic_clv", "predicted_clv", "total_clv", "historic_number_of_orders", "predicted_number_of_orders",
    "average_days_between_orders", "average_order_value", "churn_probability", "expected_date_of_next_order",
)


def profile_lists(state: SandboxState, pid: str) -> list[str]:
    """Ids of the lists a profile belongs to (``relationships.lists.data``)."""
    with state.lock:
        return [lid for lid, lst in state.lists.items() if pid in lst["members"]]


def list_resource(request: web.Request, lst: dict[str, Any], *, profile_count: int | None = None) -> dict[str, Any]:
    """A list as Klaviyo shows it; ``profile_count`` only when given (``additional-fields[list]``)."""
    # No ``relationships``: the 2023-10-15 spec wants the members' ids in them (a list can hold millions).
    attrs: dict[str, Any] = {"name": lst["name"], "created": iso(lst["created"]), "updated": iso(lst["updated"]),
                             "opt_in_process": "single_opt_in"}
    if profile_count is not None:
        attrs["profile_count"] = profile_count
    return sparse(request, {
        "type": "list", "id": lst["id"],
        "attributes": attrs,
        "links": {"self": link(request, "lists", lst["id"])},
    })


def metric_resource(request: web.Request, m: dict[str, Any]) -> dict[str, Any]:
    return sparse(request, {
        "type": "metric", "id": m["id"],
        "attributes": {"name": m["name"], "created": iso(m["created"]), "updated": iso(m["updated"]),
                       "integration": {"object": "integration", "id": "0rG4eQ", "name": "API", "category": "API"}},
        "links": {"self": link(request, "metrics", m["id"])},
    })


def event_resource(request: web.Request, e: dict[str, Any]) -> dict[str, Any]:
    props = dict(e["properties"])
    if e.get("value") is not None:
        props["$value"] = e["value"]
    props["$event_id"] = e["unique_id"]
    when: datetime = e["datetime"]
    return sparse(request, {
        "type": "event", "id": e["id"],
        "attributes": {"timestamp": int(when.timestamp()), "event_properties": props,
                       "datetime": iso(when), "uuid": e["id"]},
        "relationships": {
            rel: {"data": {"type": rel, "id": e[rel + "_id"]},
                  "links": {"self": link(request, "events", e["id"], "relationships", rel),
                            "related": link(request, "events", e["id"], rel)}}
            for rel in ("metric", "profile")
        },
        "links": {"self": link(request, "events", e["id"])},
    })


def sparse(request: web.Request, resource: dict[str, Any]) -> dict[str, Any]:
    """Apply ``fields[<type>]=a,b.c`` (JSON:API sparse fieldsets): only the attributes asked for.

    A dotted name keeps that nested value only (``location.city``); ``id`` is always kept.
    """
    raw = request.query.get(f"fields[{resource['type']}]")
    if not raw:
        return resource
    attrs = resource.get("attributes") or {}
    picked: dict[str, Any] = {}
    for name in (x.strip() for x in raw.split(",")):
        parts = [x for x in name.split(".") if x]
        src: Any = attrs
        for part in parts:
            src = src.get(part, _MISSING) if isinstance(src, dict) else _MISSING
        if not parts or src is _MISSING:
            continue
        dst = picked
        for part in parts[:-1]:
            dst = dst.setdefault(part, {})
        dst[parts[-1]] = src
    return {**resource, "attributes": picked}


_MISSING = object()


def included(request: web.Request) -> set[str]:
    """The ``include=`` names of the request."""
    return {x.strip() for x in request.query.get("include", "").split(",") if x.strip()}


def _key(value: Any, ident: str) -> list[Any]:
    if isinstance(value, datetime):
        value = value.isoformat()
    return [0 if value is None else 1, "" if value is None else value, ident]


def paginate(
    request: web.Request,
    items: Sequence[dict[str, Any]],
    *,
    sort_value: Callable[[dict[str, Any]], Any],
    descending: bool,
    page_size: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Keyset pagination: sort by (value, id), resume after the cursor's key.

    The cursor holds the last key returned, so records changing while a client
    pages cannot make it skip or repeat unchanged records.  Returns the page and
    the ``links`` object (``next`` only when more records follow).
    """
    return page_of(request, sort_keyed(items, sort_value), descending=descending, page_size=page_size)


def sort_keyed(items: Sequence[dict[str, Any]],
               sort_value: Callable[[dict[str, Any]], Any]) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    """The items sorted ascending by (value, id), as parallel lists of keys and items.

    Callers that page through an unchanged result many times (a poll over 100,000 profiles)
    keep this and pass it to :func:`page_of`, so each page costs a binary search, not a sort.
    """
    keyed = sorted(((_key(sort_value(it), it["id"]), it) for it in items), key=lambda t: t[0])
    return [k for k, _ in keyed], [it for _, it in keyed]


def page_of(request: web.Request, keyed: tuple[list[list[Any]], list[dict[str, Any]]], *, descending: bool,
            page_size: int, lo: int = 0, hi: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One page of an ascending :func:`sort_keyed` result, after the request's cursor.

    ``lo``/``hi`` narrow the result to ``keys[lo:hi]`` without copying it (a range of a
    sorted index, e.g. the profiles whose ``updated`` lies between two times).
    """
    keys, items = keyed
    hi = len(keys) if hi is None else hi
    cursor = request.query.get("page[cursor]")
    after: Any = None
    if cursor:
        try:
            after = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"==="))
        except (ValueError, json.JSONDecodeError):
            raise invalid("Invalid page cursor.", parameter="page[cursor]") from None
        if not isinstance(after, list):
            raise invalid("Invalid page cursor.", parameter="page[cursor]")
    try:
        if descending:
            end = hi if after is None else max(lo, bisect.bisect_left(keys, after, lo, hi))
            idx = list(range(end - 1, max(end - page_size - 1, lo) - 1, -1))
        else:
            start = lo if after is None else min(hi, bisect.bisect_right(keys, after, lo, hi))
            idx = list(range(start, min(start + page_size + 1, hi)))
    except TypeError:
        raise invalid("Invalid page cursor.", parameter="page[cursor]") from None
    more = len(idx) > page_size
    idx = idx[:page_size]
    # Klaviyo's CollectionLinks: ``self`` always, ``next`` / ``prev`` only when there is such a page.
    links: dict[str, Any] = {"self": str(request.url)}
    if more:
        token = base64.urlsafe_b64encode(json.dumps(keys[idx[-1]]).encode()).decode().rstrip("=")
        links["next"] = str(request.url.update_query({"page[cursor]": token}))
    return [items[i] for i in idx], links


def page_size(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("page[size]")
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise invalid("'page[size]' must be an integer.", parameter="page[size]") from None
    if not 1 <= size <= maximum:
        raise invalid(f"'page[size]' must be between 1 and {maximum}.", parameter="page[size]")
    return size


def additional_fields(request: web.Request, kind: str = "profile") -> set[str]:
    """The names in ``additional-fields[<kind>]``."""
    raw = request.query.get(f"additional-fields[{kind}]", "")
    return {x for x in raw.split(",") if x}


__all__ = [
    "body_response", "profile_resource", "list_resource", "metric_resource", "event_resource",
    "paginate", "page_size", "additional_fields", "link", "SandboxState", "sparse", "included", "profile_lists",
]
