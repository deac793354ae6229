"""klaviyo-sync: a Klaviyo integration engine run from declarative YAML mapping collections.

Table of contents:

Collections and mapping (pure, no I/O)
- :mod:`engine.vocab`       the vocabulary: enum-like keys as Literals, the hub records as TypedDicts,
                            the one table of Klaviyo destinations
- :mod:`engine.collection`  load, check and compile YAML collections into frozen plans, one step a
                            module: ``load`` (files, YAML with marks, schema), ``compile`` (one file,
                            rows through ``ROW_KINDS``), ``graph`` (parents and children), ``model``
- :mod:`engine.formula`     the sandboxed formula interpreter (asteval behind a load-time checker and
                            run-time guards); :mod:`engine.formula.helpers` the functions formulas
                            may call (get, e164, present, ...)
- :mod:`engine.mapper`      one record through one collection's rows
- :mod:`engine.runner`      one record through a collection and its children: ok / filtered / invalid
- :mod:`engine.entities`    the fields of Klaviyo resources and hub entities
- :mod:`engine.payloads`    a mapped payload split into the pieces of Klaviyo requests

The two seams
- :mod:`engine.hub`         the hub: Customers, Addresses, Transactions, links, error log, queue (SQLite)
- :mod:`engine.klaviyo`     the Klaviyo REST client (revisions, throttling, retries, catalog errors)
- :mod:`engine.connect`     open both from the settings

Running
- :mod:`engine.settings`    the subscription settings file
- :mod:`engine.flows`       the collections at work (inbound poll / sync, outbound dispatch / push)
- :mod:`engine.sandbox`     a local Klaviyo for tests, benchmarks and the demo
- :mod:`engine.docgen`      the mapping documentation generated from the collections (jinja2)
- :mod:`engine.cli`         the ``klaviyo-sync`` command line

Errors
- :mod:`engine.errors`      the exception hierarchy and stable error codes
- :mod:`engine.catalog`     the specification's error texts, word for word
"""

from __future__ import annotations

from engine import catalog
from engine.collection import Collection, CollectionSet, LoadReport, load_collections
from engine.errors import KlaviyoSyncError
from engine.formula import FormulaEngine
from engine.mapper import Mapper
from engine.runner import Outcome, Runner

__all__ = [
    "catalog",
    "Collection",
    "CollectionSet",
    "FormulaEngine",
    "KlaviyoSyncError",
    "LoadReport",
    "Mapper",
    "Outcome",
    "Runner",
    "load_collections",
]
