"""Mapping collections: load, check and compile YAML files into frozen plans.

Glossary
--------
collection
    One YAML file describing how records of one kind become records of
    another (e.g. a Klaviyo profile becomes a hub Customer).
row
    One line of a collection: a ``field`` (copy a source path), a ``static``
    (a fixed value) or a ``formula`` (the specification's "Dynamic Formula").
source record
    The record a collection reads: a Klaviyo resource for ``to_hub``
    collections, a hub entity for ``to_klaviyo`` ones.
destination
    The dotted path a row writes in the mapped payload.
hub
    Our embedded store of Customers, Addresses and Transactions.
flow
    A collection at work; the error log names flows by collection title.

The pipeline
------------
Loading is *compile, then run*: :func:`load_collections` runs three steps, one module each,
and returns a :class:`LoadReport` of frozen plans (:mod:`.model`):

1. :mod:`.load` finds the files, reads each YAML file with the line and column of every
   value, and checks it against ``schemas/collection.schema.json``;
2. :mod:`.compile` compiles one checked file: every formula, filter and ``let`` once, the
   names they read, the destinations, the warnings to review before go-live;
3. :mod:`.graph` links the compiled collections by title and parent into a
   :class:`CollectionSet`, parents first.

Every problem is reported, each with file, line and column and a stable code
(engine/errors.py); warnings (placeholders to replace before go-live, an unmapped
``SubscribeProfile``) are reported beside them.  The mapper (engine/mapper.py) then runs
the plans, record by record.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from engine.collection.compile import ROW_KINDS, RowKind, compile_collection, parse_path
from engine.collection.graph import build_set
from engine.collection.load import (
    DEFAULT_COLLECTIONS_DIR,
    collection_files,
    display_path,
    formula_location,
    read_collection,
)
from engine.collection.model import Collection, CollectionSet, Let, LoadReport, Row, RowPlan
from engine.errors import CollectionReadError, KlaviyoSyncError, Location, NoCollectionFilesError
from engine.formula import FormulaEngine


def load_collections(paths: Iterable[str | Path] | None = None, engine: FormulaEngine | None = None) -> LoadReport:
    """Load, check and compile collections; report every problem.

    Args:
        paths: files or directories (default: the shipped ``collections/``).
        engine: the formula engine (default: one with the standard helper table).

    Returns:
        A :class:`LoadReport`; ``report.collections`` holds the collections that compiled
        (and whose parents resolved), ``report.errors`` every problem, file:line:col each.
    """
    engine = engine or FormulaEngine()
    files = collection_files([DEFAULT_COLLECTIONS_DIR] if paths is None else paths)
    errors: list[KlaviyoSyncError] = []
    warnings: list[KlaviyoSyncError] = []
    loaded: list[Collection] = []
    if not files:
        errors.append(NoCollectionFilesError("no collection files found"))
    for f in files:
        if not f.exists():
            errors.append(CollectionReadError("no such file", location=Location(file=display_path(f))))
            continue
        checked, problems = read_collection(f, display_path(f))
        errors.extend(problems)
        if checked is None:
            continue
        coll, errs, warns = compile_collection(checked, engine)
        errors.extend(errs)
        warnings.extend(warns)
        if coll is not None:
            loaded.append(coll)
    collections, problems = build_set(loaded)
    errors.extend(problems)

    def where(e: KlaviyoSyncError) -> tuple[str, int, int]:
        return (e.location.file or "", e.location.line or 0, e.location.column or 0)

    return LoadReport(collections, sorted(errors, key=where), sorted(warnings, key=where))


__all__ = [
    "DEFAULT_COLLECTIONS_DIR",
    "ROW_KINDS",
    "Collection",
    "CollectionSet",
    "LoadReport",
    "Let",
    "Row",
    "RowKind",
    "RowPlan",
    "load_collections",
    "collection_files",
    "formula_location",
    "parse_path",
]
