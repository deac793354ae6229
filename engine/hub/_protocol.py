"""The hub's narrow seam: the :class:`HubStore` protocol and its small value types.

Flows talk to the hub only through this protocol, so a larger deployment can
put another store behind it.  :class:`engine.hub.SqliteHub` is the shipped
implementation.

Contract every implementation keeps:

- **Records are plain dicts** with the seeds' PascalCase names.  Customer:
  ``Id, EmailAddress, CustomerNumber, FirstName, LastName, Company, Comment,
  Phone, CustomFields, Addresses, CreatedAt, UpdatedAt``.  CustomerAddress:
  ``Id, CustomerId, Address1, Address2, City, Region, PostalCode, Country,
  IsPrimaryBilling, IsPrimaryShipping``.  Transaction: ``Id,
  TransactionNumber, CustomerId, EmailAddress, Total, TransactionDate, Status,
  CustomFields, Lines, CreatedAt, UpdatedAt``.  TransactionLine: ``Id,
  TransactionId, Sku, Description, Qty, UnitPrice, ExtendedPrice``.  Ids are
  integers.  Returned dicts are fresh copies; inputs are never mutated.
- **Customer rules**: an email address and a customer number are required
  (``catalog.EMAIL_REQUIRED`` / ``catalog.CUSTOMER_NUMBER_REQUIRED``, raised as
  :class:`~engine.errors.HubRecordError`); the email is unique within the hub
  (exact, case-sensitive match).  A write that would duplicate an email raises
  :class:`~engine.errors.EmailExistsError` (message
  ``catalog.EMAIL_ALREADY_EXISTS``) whose ``existing_id`` is the Customer to link.
- **Atomic writes**: every write method is all-or-nothing.  ``transaction()``
  groups several writes; an exception inside it rolls all of them back,
  including the outbound-queue rows they produced.  Transactions nest (inner
  ones are savepoints).  ``transaction(enqueue=False)`` makes writes inside it
  queue nothing (an inbound flow writing what came *from* Klaviyo uses this so
  the change does not echo back).
- **Outbound queue**: a write that adds or changes a Customer (including its
  addresses) or a Transaction (including its lines) queues one change for that
  record, in the same SQLite transaction, when that entity's outbound trigger
  is enabled.  A write that changes nothing queues nothing.  Changes to a record
  already queued coalesce into its row (``version`` grows); acknowledging a
  stale version keeps the row so the newer change is still sent.
- **Error log** entries never hold secrets: messages and details are masked
  before they are stored.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

Entity = Literal["Customer", "Transaction", "TransactionLine"]
Level = Literal["error", "warning"]
Record = dict[str, Any]


@dataclass(frozen=True)
class QueuedChange:
    """One record waiting to be sent to Klaviyo.

    Attributes:
        id: queue row id (stable while the row lives).
        entity: ``"Customer"`` or ``"Transaction"``.
        hub_id: the record's hub Id.
        op: ``"add"`` when the record was created since it was last sent, else ``"update"``.
        version: grows with each coalesced change; pass the change back to ``ack_change``.
        queued_at / changed_at: first and latest change time (ISO 8601, UTC).
        attempts: sends tried that failed for a reason that may pass (a claim that
            sent nothing, or a run stopped by a 401/403, does not count).
    """

    id: int
    entity: str
    hub_id: int
    op: str
    version: int
    queued_at: str
    changed_at: str
    attempts: int
    lease_until: float | None = None  # a claim's lease (epoch seconds) while a process holds it


# Mirrors hub/_errorlog.py ErrorLog.log / list / count: the Protocol states the signatures.
class ErrorLogStore(Protocol):
    """The error log (the seeds' Integration Monitoring / Error Logs)."""

    def log(
        self,
        flow: str,
        message: str,
        *,
        level: Level = "error",
        entity: str | None = None,
        hub_id: int | None = None,
        klaviyo_id: str | None = None,
        detail: str | None = None,
        code: str | None = None,
    ) -> int:
        """Store one entry (secrets masked) and return its id. Commits at once."""
        ...

    def list(
        self,
        *,
        flow: str | None = None,
        level: Level | None = None,
        code: str | None = None,
        record: str | None = None,
        text: str | None = None,
        unresolved_only: bool = False,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[Record]:
        """Entries newest first: ``Id, At, Flow, Level, Code, Message, Detail, Entity, HubId,
        KlaviyoId, ResolvedAt``; ``record`` matches a hub id or a Klaviyo id, ``text`` the
        message or the detail."""
        ...

    # list's filters again (not its paging), each keyword spelled out so callers and mypy see it.
    def count(
        self,
        *,
        flow: str | None = None,
        level: Level | None = None,
        code: str | None = None,
        record: str | None = None,
        text: str | None = None,
        unresolved_only: bool = False,
    ) -> int:
        """How many entries ``list`` gives with the same filters and no limit."""
        ...

    def facets(self) -> dict[str, builtins.list[str]]:
        """The flows and codes present in the log."""
        ...

    def for_record(self, entity: str, hub_id: int, klaviyo_id: str | None = None, *,
                   limit: int = 200) -> builtins.list[Record]:
        """Entries newest first about one hub record, or about its Klaviyo id."""
        ...

    def resolve(self, entry_id: int) -> Record:
        """Mark an entry resolved and return it; ``HubNotFoundError`` if there is none."""
        ...


@runtime_checkable
class HubStore(Protocol):
    """What flows may ask of the hub. See the module docstring for the contract."""

    @property
    def errors(self) -> ErrorLogStore: ...

    def transaction(self, *, enqueue: bool = True, flat: bool = False) -> AbstractContextManager[Any]: ...

    # Customers and addresses
    def add_customer(self, record: Mapping[str, Any]) -> Record: ...
    def update_customer(self, customer_id: int, changes: Mapping[str, Any]) -> Record: ...
    def upsert_customer(self, record: Mapping[str, Any]) -> tuple[Record, str]: ...
    def get_customer(self, customer_id: int) -> Record | None: ...
    def find_customer_by_email(self, email: str) -> Record | None: ...
    def find_customers_by_email_ignoring_case(self, email: str) -> list[Record]: ...
    def find_customer_by_phone(self, phone: str, country: str | None = None) -> Record | None:
        """The Customer whose Phone (or CustomerNumber) is the same E.164 number; a number without
        ``+`` is read in ``country``, else in the hub's default region."""
        ...

    def iter_customers(self, *, batch: int = 500, after: int = 0) -> Iterator[Record]:
        """Every Customer with its Addresses by Id (``after``: only larger Ids), read ``batch`` at a time."""
        ...

    def add_address(self, customer_id: int, address: Mapping[str, Any]) -> Record: ...
    def add_address_if_new(self, customer_id: int, address: Mapping[str, Any]) -> tuple[Record, bool]: ...
    def list_addresses(self, customer_id: int) -> list[Record]: ...

    # Transactions
    def upsert_transaction(self, record: Mapping[str, Any]) -> tuple[Record, str]: ...
    def get_transaction(self, transaction_id: int) -> Record | None: ...
    def find_transaction_by_number(self, number: str) -> Record | None: ...
    def iter_transactions(self, *, batch: int = 500, after: int = 0) -> Iterator[Record]: ...
    # the versions of an order sent to Klaviyo (see engine/flows/_outbound_orders.py)
    def transaction_versions(self, transaction_id: int) -> list[Record]: ...
    def latest_transaction_version(self, transaction_id: int) -> Record | None: ...
    def record_transaction_version(self, transaction_id: int, version: int, unique_id: str, digest: str | None,
                                   profile_id: str | None, complete: bool, sent_at: str | None = None) -> None: ...

    # External-id links. ``entity`` is an :data:`Entity` name; any other raises HubRecordError
    # (it is a plain str because formulas name it: ``get_external_id("Customer", CustomerId)``).
    def set_link(self, entity: str, hub_id: int, klaviyo_id: str) -> None: ...
    def get_klaviyo_id(self, entity: str, hub_id: int) -> str | None: ...
    def get_hub_id(self, entity: str, klaviyo_id: str) -> int | None: ...
    def klaviyo_ids(self, entity: str, hub_ids: Iterable[int]) -> dict[int, str]:
        """The Klaviyo ids linked to these hub records (those without a link are left out)."""
        ...

    # Sync state
    def get_cursor(self, name: str) -> str | None: ...
    def set_cursor(self, name: str, value: str) -> None: ...
    def get_state(self, key: str, default: Any = None) -> Any: ...
    def set_state(self, key: str, value: Any) -> None: ...

    # Outbound queue
    def queued_change(self, entity: str, hub_id: int) -> QueuedChange | None: ...
    def queue_length(self) -> int: ...

    def pending_changes(self, limit: int | None = 100) -> list[QueuedChange]: ...
    def claim_changes(self, limit: int = 100, *, lease_seconds: float = 300.0) -> list[QueuedChange]: ...
    def ack_change(self, change: QueuedChange | int) -> bool: ...
    def release_change(self, change: QueuedChange | int, *, delay: float = 0.0, failed: bool = False) -> None: ...
