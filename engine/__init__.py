"""klaviyo-sync: a Klaviyo integration engine run from declarative YAML mapping collections.

Where each step of one record's way lives (read the modules in this order):

1. **collection** -- ``collections/*.yaml`` is read by :mod:`engine.collection.load` (YAML with
   line marks, JSON Schema), compiled file by file by :mod:`engine.collection.compile` (each row
   through ``ROW_KINDS``, formulas through :mod:`engine.formula`) and tied together by
   :mod:`engine.collection.graph` (parents, children) into a :class:`CollectionSet`.
2. **plan** -- a compiled :class:`Collection` (:mod:`engine.collection.model`): its rows,
   ``let`` names, filter and children, frozen; destinations checked against :mod:`engine.vocab`.
3. **record** -- :class:`~engine.runner.Runner` runs one record through a collection and its
   children; :class:`~engine.mapper.Mapper` evaluates the rows into a payload, or the located
   problems (:class:`~engine.errors.KlaviyoSyncError`) that make it invalid.
4. **payload** -- :mod:`engine.payloads` turns a mapped payload into the pieces of Klaviyo
   requests (profile attributes, lists, consent; an event's metric, properties, unique id).
5. **Klaviyo** -- the flows decide the calls: :mod:`engine.flows.outbound` (dispatch / push, through
   ``_outbound_profiles`` and ``_outbound_orders``) and :mod:`engine.flows.inbound` (poll / sync,
   through ``_inbound_transfer`` into the hub); they hold a :class:`~engine.hub.HubStore` and a
   :class:`~engine.klaviyo.KlaviyoApi`, which :class:`~engine.klaviyo.KlaviyoClient` implements over
   HTTP (:mod:`engine.klaviyo._transport`).

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
