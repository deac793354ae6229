"""Which OAuth scopes a configuration needs, read from Klaviyo's own OpenAPI specs.

Klaviyo documents the scopes of every operation in its specs (``x-klaviyo-scopes``,
e.g. ``GET /api/profiles`` -> ``profiles:read``).  This module reads them from the
shipped specs in ``schemas/klaviyo/`` -- the same file the sandbox validates a
request against (:func:`engine.sandbox._spec.spec_revision_for`) -- so the sandbox,
``auth login``, ``auth status`` and ``validate`` share one source of truth:

* :func:`scopes_for` -- the scopes of one ``(method, path template)`` at a revision;
* :func:`scopes_for_request` -- the same for a concrete URL path (``/api/lists/X/relationships/profiles/``);
* :func:`required_scopes` -- every scope the enabled collections make the engine use,
  each with the reasons (collection, row, file:line:col) so a message can say *why*;
* :func:`missing` -- what a granted scope set lacks.

Spelling: the 2023-10-15 spec writes ``list:read`` / ``list:write`` and
``template:write`` where every later spec (and Klaviyo's scope list) writes
``lists:*`` / ``templates:write``.  A name the newest spec does not know is
rewritten to the newest spec's plural when that one exists (:func:`canonical`), so
the engine requests, and the sandbox enforces, the names Klaviyo grants today.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from engine.errors import Location
from engine.klaviyo import revision as rev
from engine.vocab import LIST_PREFIX, SUBSCRIBE_FLAG, UCLIST_PREFIX

#: The client's operations (the ``op`` of every ``_send``) and the endpoint each calls,
#: written without the trailing slash; the scopes come from the spec, not from here.
OPERATIONS: dict[str, tuple[str, str]] = {
    "get_accounts": ("GET", "/api/accounts"),
    "get_profiles": ("GET", "/api/profiles"),
    "get_profile": ("GET", "/api/profiles/{id}"),
    "create_profile": ("POST", "/api/profiles"),
    "update_profile": ("PATCH", "/api/profiles/{id}"),
    "create_or_update_profile": ("POST", "/api/profile-import"),
    "get_lists": ("GET", "/api/lists"),
    "create_list": ("POST", "/api/lists"),
    "add_profiles_to_list": ("POST", "/api/lists/{id}/relationships/profiles"),
    "remove_profiles_from_list": ("DELETE", "/api/lists/{id}/relationships/profiles"),
    "get_list_profiles": ("GET", "/api/lists/{id}/profiles"),
    "subscribe_profiles": ("POST", "/api/profile-subscription-bulk-create-jobs"),
    "unsubscribe_profiles": ("POST", "/api/profile-subscription-bulk-delete-jobs"),
    "create_event": ("POST", "/api/events"),
    "get_events": ("GET", "/api/events"),
    "bulk_import_profiles": ("POST", "/api/profile-bulk-import-jobs"),
    "get_bulk_import_job": ("GET", "/api/profile-bulk-import-jobs/{job_id}"),
}

#: Klaviyo asks every OAuth app for this one (its OAuth guides: "accounts:read is always required").
ALWAYS = "accounts:read"

_lock = threading.Lock()
_PARAM = re.compile(r"\{[^/]+\}")


def _spec_revision(revision: str | None) -> str:
    from engine.sandbox._spec import spec_revision_for  # lazy: the sandbox package imports this module

    return spec_revision_for(rev.normalize(revision) if revision else rev.DEFAULT_REVISION)


@cache
def _load(spec_revision: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """``{(METHOD, template without slash, params as {}): scopes as written}`` of one spec."""
    from engine.sandbox._spec import SPEC_DIR, SPEC_FILES

    raw = json.loads((SPEC_DIR / SPEC_FILES[spec_revision]).read_text(encoding="utf-8"))
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for path, ops in raw["paths"].items():
        for method, op in ops.items():
            if isinstance(op, dict) and "x-klaviyo-scopes" in op:
                out[(method.upper(), _shape(path))] = tuple(op["x-klaviyo-scopes"])
    return out


def _table(spec_revision: str) -> dict[tuple[str, str], tuple[str, ...]]:
    with _lock:
        return _load(spec_revision)


def _shape(path: str) -> str:
    """A template or URL path reduced to its shape: no trailing slash, every parameter ``{}``."""
    return _PARAM.sub("{}", path.rstrip("/") or "/")


@cache
def vocabulary() -> frozenset[str]:
    """Every scope name the newest shipped spec uses."""
    return frozenset(s for scopes in _table(rev.LATEST_REVISION).values() for s in scopes)


def canonical(scope: str) -> str:
    """Klaviyo's current spelling of ``scope`` (``list:write`` -> ``lists:write``)."""
    known = vocabulary()
    if scope in known:
        return scope
    resource, sep, action = scope.partition(":")
    plural = f"{resource}s{sep}{action}"
    return plural if sep and plural in known else scope


def scopes_for(method: str, template: str, revision: str | None = None) -> tuple[str, ...]:
    """The scopes ``method template`` needs at ``revision`` (Klaviyo's spelling, sorted).

    The spec of the revision is asked first; an endpoint it lacks (``profile-import``
    before 2024-10-15's spec) is looked up in the other shipped spec.  Unknown: ``()``.
    """
    key = (method.upper(), _shape(template))
    first = _spec_revision(revision)
    for spec_rev in dict.fromkeys((first, rev.LATEST_REVISION, rev.DEFAULT_REVISION)):
        found = _table(spec_rev).get(key)
        if found is not None:
            return tuple(sorted({canonical(s) for s in found}))
    return ()


def scopes_for_request(method: str, path: str, revision: str | None = None) -> tuple[str, ...]:
    """The scopes of a concrete request path (ids in it), matched against the client's endpoints."""
    clean = path.split("?", 1)[0].rstrip("/")
    for op_method, template in OPERATIONS.values():
        if op_method != method.upper():
            continue
        pattern = "^" + _PARAM.sub("[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}")) + "$"
        if re.match(pattern, clean):
            return scopes_for(method, template, revision)
    return scopes_for(method, clean, revision)


def scopes_of_operation(op: str, revision: str | None = None) -> tuple[str, ...]:
    """The scopes of one client operation (a key of :data:`OPERATIONS`)."""
    method, template = OPERATIONS[op]
    return scopes_for(method, template, revision)


# -- what a configuration needs ------------------------------------------------------------


@dataclass(frozen=True)
class Reason:
    """Why a scope is needed: the text, and where (a collection row) when one row causes it."""

    text: str
    location: Location | None = None
    collection: str | None = None
    #: what the call does and which endpoint it is, without the where (``text`` has both)
    why: str = ""

    def __str__(self) -> str:
        return self.text


def _where(coll: Any, row: Any) -> tuple[str, Location | None]:
    loc = row.location if row is not None else None
    if row is None:
        return f"collection '{coll.title}'", Location(file=coll.file) if getattr(coll, "file", None) else None
    row_name = loc.row if loc is not None and loc.row else f"rows[{row.index}] {row.destination}"
    pos = f" ({Location(file=loc.file, line=loc.line, column=loc.column)})" if loc is not None and loc.file else ""
    return f"collection '{coll.title}' {row_name}{pos}", loc


def _profile_ops(revision: str) -> list[tuple[str, str]]:
    writes = ["create_or_update_profile"] if rev.supports(revision, "profile_import") else []
    return [("get_profiles", "matches the Customer to a Klaviyo profile"),
            *[(op, "creates or updates the profile") for op in (*writes, "create_profile", "update_profile")]]


def required_scopes(collections: Iterable[Any], settings: Any) -> dict[str, list[Reason]]:
    """Every scope the **enabled** collections make the engine use, with the reasons.

    Args:
        collections: a :class:`~engine.collection.CollectionSet` (or any iterable of collections).
        settings: the :class:`~engine.settings.Settings` (``api_revision``, ``generate_events``).

    Returns:
        ``{scope: [Reason, ...]}`` sorted by scope; :data:`ALWAYS` is always there.

    What is derived (each scope from the spec of the operation):

    * every OAuth app: ``accounts:read``;
    * a profile collection TO the hub (the poll): ``GET /api/profiles`` and ``GET /api/profiles/{id}``;
    * a profile collection FROM the hub: the profile lookup and writes (``profile-import`` at
      2024-02-15 and later, create + patch always, as a 409 falls back to them); the
      unsubscribe job always (an unmapped or false ``SubscribeProfile`` unsubscribes) and the
      subscribe job when ``SubscribeProfile`` is mapped; each ``LIST_`` row: list lookup,
      subscribe job and list membership; each ``UCLIST_`` row: list lookup and membership;
    * an event collection FROM the hub (unless Generate Events is false): ``POST /api/events``
      and the profile lookup by email.
    """
    revision = getattr(settings, "api_revision", None) or rev.DEFAULT_REVISION
    out: dict[str, list[Reason]] = {}

    def need(op: str, why: str, where: str, loc: Location | None, title: str | None) -> None:
        for scope in scopes_of_operation(op, revision):
            what = f"{why} ({' '.join(OPERATIONS[op])})"
            text = f"{where}: {what}"
            reasons = out.setdefault(scope, [])
            if all(r.text != text for r in reasons):
                reasons.append(Reason(text, loc, title, what))

    out[ALWAYS] = [Reason("Klaviyo asks every OAuth app for accounts:read")]
    for coll in collections:
        if not coll.enabled:
            continue
        head, head_loc = _where(coll, None)
        if coll.direction == "to_hub":
            if coll.klaviyo_resource == "profile":
                need("get_profiles", "polls the profiles Klaviyo changed", head, head_loc, coll.title)
                need("get_profile", "reads a profile again to retry it", head, head_loc, coll.title)
            continue
        if coll.klaviyo_resource == "event":
            if getattr(settings, "generate_events", True) is False:
                continue
            need("create_event", "sends the event", head, head_loc, coll.title)
            need("get_profiles", "finds the event's profile by email", head, head_loc, coll.title)
            continue
        if coll.klaviyo_resource != "profile":
            continue
        for op, why in _profile_ops(revision):
            need(op, why, head, head_loc, coll.title)
        subscribe_row = next((r for r in coll.rows if r.destination == SUBSCRIBE_FLAG), None)
        if subscribe_row is None:
            need("unsubscribe_profiles", "SubscribeProfile is not mapped, so every profile is unsubscribed",
                 head, head_loc, coll.title)
        else:
            where, loc = _where(coll, subscribe_row)
            need("subscribe_profiles", "subscribes the profile when true", where, loc, coll.title)
            need("unsubscribe_profiles", "unsubscribes the profile when false or empty", where, loc, coll.title)
        for row in coll.rows:
            dest = row.destination
            if dest.startswith(UCLIST_PREFIX):
                where, loc = _where(coll, row)
                need("get_lists", "finds the list by name", where, loc, coll.title)
                need("add_profiles_to_list", "adds the profile to the list", where, loc, coll.title)
            elif dest.startswith(LIST_PREFIX):
                where, loc = _where(coll, row)
                need("get_lists", "finds the list by name", where, loc, coll.title)
                need("subscribe_profiles", "subscribes the profile to the list", where, loc, coll.title)
                need("add_profiles_to_list", "adds the profile to the list (when it unsubscribes)",
                     where, loc, coll.title)
    return {scope: sorted(out[scope], key=_row_first) for scope in sorted(out)}


def _row_first(reason: Reason) -> tuple[bool, str, int]:
    """Reasons at a row first, in file and line order; then those of a whole collection."""
    loc = reason.location
    if loc is None or loc.line is None:
        return True, "", 0
    return False, loc.file or "", loc.line


def missing(required: Mapping[str, Any] | Iterable[str], granted: Iterable[str]) -> list[str]:
    """The scopes of ``required`` not in ``granted`` (spelling made canonical on both sides)."""
    have = {canonical(s) for s in granted}
    return [s for s in required if canonical(s) not in have]


def describe(scope: str, reasons: list[Reason], limit: int = 3) -> str:
    """``lists:write -- collection 'X' rows[12] LIST_VIP (file:92:5): ... (and 2 more)``."""
    shown = "; ".join(r.text for r in reasons[:limit])
    more = f" (and {len(reasons) - limit} more)" if len(reasons) > limit else ""
    return f"{scope} -- {shown}{more}"


__all__ = ["ALWAYS", "OPERATIONS", "Reason", "canonical", "describe", "missing", "required_scopes",
           "scopes_for", "scopes_for_request", "scopes_of_operation", "vocabulary"]
