"""What the collection pipeline produces: the frozen plans, and the report that carries them.

Not a step of its own: the steps build these.  :mod:`.load` reads and checks the YAML,
:mod:`.compile` turns one checked file into a :class:`Collection` of :class:`Row` and
:class:`Let` plans, :mod:`.graph` links the collections into a :class:`CollectionSet`, and
:func:`engine.collection.load_collections` returns it in a :class:`LoadReport`.  After them the
mapper (engine/mapper.py) runs the plans record by record; it never sees the YAML.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from engine._yaml import Mark
from engine.errors import KlaviyoSyncError, Location, UnknownCollectionError
from engine.formula import CompiledFormula
from engine.vocab import (
    Action,
    CollectionStatus,
    Direction,
    ExpectedType,
    HubEntity,
    Importance,
    KlaviyoResource,
    OnMissing,
    RowType,
    System,
)

#: How the mapper evaluates a row: ``constant`` (a static value), ``read`` (follow a source path) or
#: ``formula`` (run it in the sandbox).
RowStep = Literal["constant", "read", "formula"]


class RowPlan(NamedTuple):
    """What the mapper does with one compiled row: the step, and its argument (the value, the path, the formula)."""

    step: RowStep
    argument: Any


@dataclass(frozen=True)
class Row:
    """One compiled mapping row."""

    index: int
    type: RowType
    destination: str
    dest_path: tuple[str, ...]
    location: Location
    source: str | None = None
    source_path: tuple[str | int, ...] = ()
    value: Any = None
    formula: CompiledFormula | None = None
    formula_origin: Mark | None = None
    description: str = ""
    importance: Importance = "optional"
    required: bool = False
    required_message: str | None = None
    on_missing: OnMissing = "omit"
    expect: ExpectedType | None = None
    max_length: int | None = None

    @property
    def label(self) -> str:
        """How errors name the row: ``rows[3] EmailAddress``."""
        return f"rows[{self.index}] {self.destination}"


@dataclass(frozen=True)
class Let:
    """One compiled ``let``: a name every later formula, the filter and the rows may read."""

    name: str
    formula: CompiledFormula
    location: Location
    origin: Mark | None


@dataclass(frozen=True)
class Collection:
    """A compiled, frozen mapping collection (the plan the mapper runs)."""

    title: str
    file: str
    direction: Direction
    hub_entity: HubEntity
    klaviyo_resource: KlaviyoResource
    action: Action
    status: CollectionStatus
    rows: tuple[Row, ...]
    description: str = ""
    parent: str | None = None
    each: str | None = None
    filter: CompiledFormula | None = None
    filter_origin: Mark | None = None
    lets: tuple[Let, ...] = ()
    duplicate_check: Mapping[str, Any] | None = None
    required_message: str | None = None
    unreadable_message: str | None = None
    requires_one_of: tuple[str, ...] = ()
    requires_one_of_message: str | None = None
    on_missing: OnMissing = "omit"
    parent_location: Location | None = None
    requires_one_of_location: Location | None = None

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"

    @property
    def source_kind(self) -> tuple[System, str]:
        """("klaviyo", resource) or ("hub", entity): what a source record is."""
        return ("klaviyo", self.klaviyo_resource) if self.direction == "to_hub" else ("hub", self.hub_entity)

    @property
    def target_kind(self) -> tuple[System, str]:
        return ("hub", self.hub_entity) if self.direction == "to_hub" else ("klaviyo", self.klaviyo_resource)


@dataclass
class CollectionSet:
    """Collections by title, with children resolved and an order where parents come first."""

    collections: dict[str, Collection] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def __getitem__(self, title: str) -> Collection:
        return self.collections[title]

    def __iter__(self) -> Iterator[Collection]:
        return (self.collections[t] for t in self.order)

    def __len__(self) -> int:
        return len(self.collections)

    def children_of(self, title: str) -> list[Collection]:
        return [c for c in self if c.parent == title]

    def find(self, name: str) -> Collection:
        """A collection by title, or by file name / stem (``add-profile-to-hub``)."""
        if name in self.collections:
            return self.collections[name]
        for c in self.collections.values():
            p = Path(c.file)
            if name in (p.name, p.stem, str(p)):
                return c
        valid = ", ".join(sorted(self.collections))
        raise UnknownCollectionError(f"no collection named {name!r}; known: {valid}")


@dataclass
class LoadReport:
    """What loading found: the usable collections, every error and every warning."""

    collections: CollectionSet
    errors: list[KlaviyoSyncError]
    warnings: list[KlaviyoSyncError]

    @property
    def ok(self) -> bool:
        return not self.errors


__all__ = ["Collection", "CollectionSet", "Let", "LoadReport", "Row", "RowPlan", "RowStep"]
