"""The hub: our own store of Customers, Addresses and Transactions (the seeds' "iPaaS.com").

It also keeps the external-id links to Klaviyo, the error log, the poll cursors
and the outbound change queue.  Flows depend on :class:`HubStore` (the narrow
seam); :class:`SqliteHub` keeps one subscription in one SQLite file (the default) and
:class:`PostgresHub` many subscriptions in one PostgreSQL database.

- :mod:`engine.hub._protocol`     the ``HubStore`` protocol and its contract
- :mod:`engine.hub._sqlite`       ``SqliteHub``: customers and addresses
- :mod:`engine.hub._postgres`     ``PostgresHub``: the same store in a shared PostgreSQL database,
  one schema per subscription (``_pgconn``: the SQL adapter; ``_pgschema``: its migrations)
- :mod:`engine.hub._transactions` transactions and lines
- :mod:`engine.hub._state`        links, cursors, queue, OAuth tokens
- :mod:`engine.hub._errorlog`     the error log
- :mod:`engine.hub._migrations`   versioned schema migrations
- :mod:`engine.hub._jsonl`        JSONL import and export
- :mod:`engine.hub._redact`       masking secrets
"""

from __future__ import annotations

from engine.hub._errorlog import ErrorLog
from engine.hub._jsonl import ImportReport, export_jsonl, import_jsonl
from engine.hub._postgres import PostgresHub
from engine.hub._protocol import Entity, ErrorLogStore, HubStore, Level, QueuedChange
from engine.hub._redact import MASK, redact, secret_forms
from engine.hub._sqlite import SqliteHub, to_e164

__all__ = [
    "HubStore",
    "ErrorLogStore",
    "QueuedChange",
    "Entity",
    "Level",
    "SqliteHub",
    "PostgresHub",
    "ErrorLog",
    "ImportReport",
    "import_jsonl",
    "export_jsonl",
    "redact",
    "secret_forms",
    "MASK",
    "to_e164",
]
