"""The runner core: one record through a collection and its children, as a pure function.

:func:`run_record` decides, for one source record, whether it is *filtered*
(the collection's filter said no), *invalid* (a row could not be mapped) or
*ok* (here is the payload), and expands the collection's enabled children:
one child run per item of the child's ``each`` list (one Ordered Product per
transaction line), or one run on the parent's own source record (the address
of a Klaviyo profile).  Each child outcome carries a deterministic identity
derived from the parent's identity and the item (its ``Id`` when it has
one, else its position), so a retry maps to the same identities.

There is no I/O here.  Helpers that need the hub or Klaviyo reach them through
the functions the caller passes in (:func:`engine.formula.helpers.bind_helpers`), so
tests can fake them and the flows (poll, dispatch) can supply real ones.
The flows add the fourth outcome, ``failed`` (the destination refused a
mapped record), when they write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.collection import Collection, CollectionSet, parse_path
from engine.errors import ChildItemsError, KlaviyoSyncError, Location, UnexpectedMappingError
from engine.formula.guards import shorten_text
from engine.mapper import MISSING, Mapper, read_path

OK, FILTERED, INVALID, FAILED = "ok", "filtered", "invalid", "failed"


@dataclass
class Outcome:
    """One record's result in one collection (and its children's)."""

    collection: str
    record_id: str | None
    status: str
    payload: dict[str, Any] | None = None
    problems: list[KlaviyoSyncError] = field(default_factory=list)
    children: list[Outcome] = field(default_factory=list)
    source: Mapping[str, Any] | None = None
    warnings: list[KlaviyoSyncError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for ``map`` output and golden files)."""
        out: dict[str, Any] = {"collection": self.collection, "record_id": self.record_id, "status": self.status}
        if self.payload is not None:
            out["payload"] = self.payload
        if self.problems:
            out["problems"] = [p.to_dict(compact=True) for p in self.problems]
        if self.warnings:
            out["warnings"] = [w.to_dict(compact=True) for w in self.warnings]
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out


def record_identity(record: Mapping[str, Any], fallback: str | None = None) -> str | None:
    """The id a record is known by: hub ``Id``, Klaviyo ``id``, else ``fallback``."""
    if isinstance(record, Mapping):
        for key in ("Id", "id"):
            value = record.get(key)
            if value not in (None, ""):
                return str(value)
    return fallback


class Runner:
    """Runs records through a :class:`CollectionSet`, reusing one :class:`Mapper` per collection.

    Args:
        collections: the loaded set (children are found by their ``parent``).
        functions: formula helper functions bound to the run's resolver, or None.
        settings: a plain, secret-free dict for formulas.
    """

    def __init__(self, collections: CollectionSet, *, functions: Mapping[str, Callable[..., Any]] | None = None,
                 settings: Mapping[str, Any] | None = None) -> None:
        self.collections = collections
        self._mappers = {
            c.title: Mapper(c, functions=functions, settings=settings) for c in collections
        }

    def mapper(self, title: str) -> Mapper:
        return self._mappers[title]

    def run(self, collection: Collection | str, record: Mapping[str, Any], *,
            existing: Mapping[str, Any] | None = None, parent: Mapping[str, Any] | None = None,
            parent_mapped: Mapping[str, Any] | None = None, record_id: str | None = None,
            with_children: bool = True) -> Outcome:
        """Map ``record`` through ``collection`` and, when it maps, through its enabled children."""
        coll = self.collections[collection] if isinstance(collection, str) else collection
        rid = record_id if record_id is not None else record_identity(record)
        try:
            result = self._mappers[coll.title].map(record, parent=parent, parent_mapped=parent_mapped,
                                                   existing=existing)
            for diagnostic in (*result.problems, *result.warnings):
                diagnostic.at(record_id=rid)  # the mapper said where in the collection; this says which record
            out = Outcome(coll.title, rid, result.status, result.payload, result.problems, source=record,
                          warnings=result.warnings)
            if result.status != OK or not with_children:
                return out
            for child in self.collections.children_of(coll.title):
                if not child.enabled:
                    continue
                out.children.extend(self.run_children(child, record, result.payload or {}, rid))
            return out
        except Exception as exc:  # noqa: BLE001 - one record's failure is that record's alone
            return Outcome(coll.title, rid, INVALID, problems=[unexpected_problem(coll, exc).at(record_id=rid)],
                           source=record)

    def run_children(self, child: Collection, parent_record: Mapping[str, Any],
                     parent_payload: Mapping[str, Any], parent_id: str | None) -> list[Outcome]:
        """Expand ``child`` from one parent record: per item of ``each``, or once on the parent's source."""
        if child.each:
            items = read_path(parent_record, parse_path(child.each))
            if items is MISSING or items is None:
                return []
            if not isinstance(items, list):
                rid = f"{parent_id}/{child.each}"
                return [Outcome(child.title, rid, INVALID, problems=[ChildItemsError(
                    f"{child.each} must be a list to expand {child.title!r}, got {type(items).__name__}",
                    location=Location(file=child.file, record_id=rid))])]
            outs = []
            for i, item in enumerate(items):
                ident = record_identity(item, f"{i}") if isinstance(item, Mapping) else f"{i}"
                outs.append(self.run(child, item if isinstance(item, Mapping) else {"value": item},
                                     parent=parent_record, parent_mapped=parent_payload,
                                     record_id=f"{parent_id}/{child.each}/{ident}"))
            return outs
        return [self.run(child, parent_record, parent=parent_record, parent_mapped=parent_payload,
                         record_id=f"{parent_id}/{child.title}")]


def unexpected_problem(coll: Collection, exc: BaseException) -> UnexpectedMappingError:
    """The record's error (M020) for an exception nobody expected while mapping it
    (a RecursionError from a deeply nested value, a MemoryError, a helper's bug)."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    return UnexpectedMappingError(f"the record could not be mapped: {type(exc).__name__}"
                                  + (f": {shorten_text(text)}" if text else ""), location=Location(file=coll.file))


def flatten_jsonapi(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A Klaviyo JSON:API resource (``{"type", "id", "attributes"}``, or ``{"data": ...}``) as the
    flat record collections read: its attributes plus ``id``. Flat records pass through unchanged."""
    if "data" in resource and isinstance(resource["data"], Mapping) and len(resource) <= 3:
        resource = resource["data"]
    if isinstance(resource.get("attributes"), Mapping) and "type" in resource:
        flat = dict(resource["attributes"])
        if "id" in resource:
            flat["id"] = resource["id"]
        return flat
    return dict(resource)


__all__ = ["OK", "FILTERED", "INVALID", "FAILED", "Outcome", "Runner", "flatten_jsonapi", "record_identity"]
