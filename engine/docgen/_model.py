"""What a collection's page says, computed once from the compiled plan; the templates only lay it out.

The mapping table follows the specification's articles: ``Mapping Type | Source Field (system) |
Destination Field (system) | Description``, the type named as the articles name it (Field,
Static, Dynamic Formula), the description opening with the row's importance.  A formula of one
line stands in the table; a longer one is "See <destination> formula below" and is shown in
full after the table, as the Placed Order article shows its ProfileId formula.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.collection import ROW_KINDS, Collection, CollectionSet, Row
from engine.docgen._messages import LoggedMessage, logged_messages

_SYSTEMS = {"hub": "Hub", "klaviyo": "Klaviyo"}
_ON_MISSING = {"null": "A missing value is sent as null.", "error": "A missing value makes the record invalid."}


def slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@dataclass(frozen=True)
class RowDoc:
    """One line of the mapping table.

    Attributes:
        mapping_type: Field, Static or Dynamic Formula.
        source: the source path, the static value (as JSON), a one-line formula, or the
            "See <destination> formula below" pointer (``source_is_code`` False).
        formula: a formula of more than one line, in full (shown below the table).
    """

    mapping_type: str
    source: str
    source_is_code: bool
    destination: str
    description: str
    formula: str | None = None


# A frozen two-field dataclass, alike settings.TierLimit in shape only.
@dataclass(frozen=True)
class Named:
    """A titled formula or list shown beside the table (a ``let`` name, the filter)."""

    name: str
    text: str


@dataclass(frozen=True)
class CollectionDoc:
    """One collection's page."""

    title: str
    slug: str
    page: str  # the page's file name stem (the collection file's)
    file: str
    description: str
    status: str
    action: str
    direction: str  # "Klaviyo profile → Hub Customer"
    source_system: str
    destination_system: str
    parent: str | None
    children: tuple[str, ...]
    each: str | None
    filter: str | None
    lets: tuple[Named, ...]
    duplicate_check: str | None
    requires_one_of: str | None
    rows: tuple[RowDoc, ...]
    messages: tuple[LoggedMessage, ...]

    @property
    def formulas(self) -> list[RowDoc]:
        """The rows whose formula is shown in full below the table."""
        return [r for r in self.rows if r.formula is not None]


def _row_description(row: Row) -> str:
    parts = [f"{row.importance.capitalize()}."]
    if row.description:
        parts.append(row.description.strip())
    if row.required and row.importance != "required":
        parts.append("Must have a value.")
    if row.expect:
        parts.append(f"Must be {'an' if row.expect[0] in 'aeiou' else 'a'} {row.expect}.")
    if row.max_length is not None:
        parts.append(f"At most {row.max_length} characters.")
    if row.on_missing in _ON_MISSING and not row.required:  # a required row's missing value is M002
        parts.append(_ON_MISSING[row.on_missing])
    return " ".join(parts)


def _row(row: Row) -> RowDoc:
    description = _row_description(row)
    kind = ROW_KINDS[row.type]
    step, _ = kind.plan(row)
    if step == "read":
        return RowDoc(kind.title, row.source or "", False, row.destination, description)
    if step == "constant":
        return RowDoc(kind.title, _value(row.value), True, row.destination, description)
    assert row.formula is not None  # a compiled formula row always has its formula
    source = row.formula.source.strip("\n")
    if "\n" in source.strip():
        return RowDoc(kind.title, f"See {row.destination} formula below", False, row.destination, description,
                      formula=source.rstrip())
    return RowDoc(kind.title, source.strip(), True, row.destination, description)


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _direction(c: Collection) -> tuple[str, str, str]:
    (src_system, src), (dst_system, dst) = c.source_kind, c.target_kind
    source, destination = _SYSTEMS[src_system], _SYSTEMS[dst_system]
    return f"{source} {src} → {destination} {dst}", source, destination


def collection_doc(c: Collection, collections: CollectionSet) -> CollectionDoc:
    """The page of ``c`` (``collections`` gives its children)."""
    direction, source, destination = _direction(c)
    dup = c.duplicate_check
    return CollectionDoc(
        title=c.title, slug=slug(c.title), page=Path(c.file).stem, file=Path(c.file).name,
        description=" ".join(c.description.split()), status=c.status.capitalize(), action=c.action.capitalize(),
        direction=direction, source_system=source, destination_system=destination, parent=c.parent,
        children=tuple(child.title for child in collections.children_of(c.title)), each=c.each,
        filter=c.filter.source.strip() if c.filter is not None else None,
        lets=tuple(Named(let.name, let.formula.source.strip()) for let in c.lets),
        duplicate_check=(f"{dup.get('match', 'exact')} match on {', '.join(dup['fields'])}" if dup else None),
        requires_one_of=", ".join(c.requires_one_of) or None,
        rows=tuple(_row(r) for r in c.rows), messages=tuple(logged_messages(c)),
    )


def collection_docs(collections: CollectionSet) -> list[CollectionDoc]:
    """Every collection's page: each top-level collection (in file order) followed by its children."""
    ordered: list[Collection] = []

    def visit(c: Collection) -> None:
        ordered.append(c)
        for child in sorted(collections.children_of(c.title), key=lambda x: x.file):
            visit(child)

    for c in sorted((c for c in collections if c.parent is None), key=lambda x: x.file):
        visit(c)
    return [collection_doc(c, collections) for c in ordered]
