"""The shipped hub store: one SQLite file (WAL), created on first use with mode 0600.

:class:`SqliteHub` implements :class:`~engine.hub.HubStore`.  Customers and
addresses live here; transactions, links, sync state, the queue and OAuth tokens
come from the mixins in ``_transactions.py`` and ``_state.py``, and the error log
from ``_errorlog.py``.  All of them share one connection in autocommit mode and
group their statements with :meth:`SqliteHub.transaction`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine import catalog
from engine.errors import EmailExistsError, HubFileError, HubLockedError, HubNotFoundError, HubRecordError, Location
from engine.formula.helpers import e164
from engine.hub._bulk import OnStored, new_in_batch, taken, upsert_in_runs
from engine.hub._errorlog import ErrorLog
from engine.hub._migrations import migrate
from engine.hub._records import SQLITE_MAX, address_key, check_address, check_customer
from engine.hub._state import StateMixin
from engine.hub._transactions import TransactionsMixin
from engine.hub._util import dumps as _json, iter_with_children, record_with_children, utc_now

_CUSTOMER_COLUMNS = {
    "EmailAddress": "email",
    "CustomerNumber": "customer_number",
    "FirstName": "first_name",
    "LastName": "last_name",
    "Company": "company",
    "Comment": "comment",
    "Phone": "phone",
}
_ADDRESS_COLUMNS = {
    "Address1": "address1",
    "Address2": "address2",
    "City": "city",
    "Region": "region",
    "PostalCode": "postal_code",
    "Country": "country",
    "IsPrimaryBilling": "is_primary_billing",
    "IsPrimaryShipping": "is_primary_shipping",
}
_FLAGS = ("IsPrimaryBilling", "IsPrimaryShipping")
_QUEUE_CHANGE = ("INSERT INTO outbound_queue(entity, hub_id, op, queued_at, changed_at) VALUES (?, ?, ?, ?, ?)"
                 " ON CONFLICT(entity, hub_id) DO UPDATE SET version = outbound_queue.version + 1,"
                 " changed_at = excluded.changed_at")
_INSERT_ADDRESS = (f"INSERT INTO customer_addresses(customer_id, {', '.join(_ADDRESS_COLUMNS.values())}, created_at,"
                   f" updated_at) VALUES (?, {', '.join('?' * len(_ADDRESS_COLUMNS))}, ?, ?)")
_FLAG_COLUMNS = tuple(1 + list(_ADDRESS_COLUMNS).index(flag) for flag in _FLAGS)  # in an _INSERT_ADDRESS row
_INSERT_CUSTOMER = ("INSERT INTO customers(id, email, customer_number, first_name, last_name, company, comment, phone,"
                    " phone_e164, number_e164, custom_fields, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
#: the tables whose ids :meth:`SqliteHub._reserve_ids` hands out
RESERVED_IDS = frozenset({"customers", "transactions"})


def to_e164(value: str | None, region: str = "US", country: str | None = None) -> str | None:
    """Normalise a phone number to E.164 (``+15551234567``), or None when it is not one.

    The same rule as the formulas' ``e164()`` (one rule for matching and sending): numbers
    without a ``+`` prefix are read as numbers of ``country`` (a code or a name, e.g. the
    primary billing address's or the Klaviyo profile's), else of ``region``; text longer
    than 64 characters is refused before parsing.
    """
    return e164(value, country, region)


def _billing_country(record: Mapping[str, Any]) -> str | None:
    """The ``Country`` of a Customer record's primary billing address, if it has one."""
    for address in record.get("Addresses") or []:
        if isinstance(address, Mapping) and address.get("IsPrimaryBilling"):
            country = address.get("Country")
            return country if isinstance(country, str) else None
    return None


class SqliteHub(TransactionsMixin, StateMixin):
    """The hub on one SQLite file.

    Args:
        path: the database file; created (mode 0600, parent folders too) on first use.
        outbound_triggers: entities whose changes are queued for Klaviyo
            (``{"Customer", "Transaction"}`` or a subset; usually from settings).
        secrets: literal secret values (API key, client secret) the error log
            masks wherever they appear, beside the shapes it always masks.
        default_region: region for phone numbers written without ``+``.
        busy_timeout: seconds a write waits for another process's write lock on the
            file; past it the write raises :class:`HubLockedError` (nothing written).

    Raises:
        HubVersionError: the file was written by a newer release.
        HubFileError: the path is a folder or a file that is not a SQLite database (left untouched).
        HubLockedError: another process kept the file locked longer than ``busy_timeout``.
    """

    # The two spots where SQLite's dialect and PostgreSQL's part (engine/hub/_postgres.py overrides them):
    #: emails equal but for ASCII letter case
    _SQL_EMAIL_IGNORING_CASE = "SELECT id FROM customers WHERE email = ? COLLATE NOCASE AND email != ? ORDER BY id"
    #: a LIMIT clause that limits nothing (SQLite wants one before an OFFSET)
    SQL_NO_LIMIT = "LIMIT -1"
    _open_key: str | None  # the file's entry in _OPEN_HERE while connected

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        outbound_triggers: Iterable[str] = (),
        secrets: Iterable[str] = (),
        default_region: str = "US",
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._setup(outbound_triggers, default_region, busy_timeout)
        with _OPEN_LOCK:
            key = os.path.realpath(self.path)
            _create_private(self.path, read_header=not _OPEN_HERE[key])
            _OPEN_HERE[key] += 1
            self._open_key = key
        try:
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
            )
        except BaseException:
            self._forget_open()
            raise
        self._conn.row_factory = sqlite3.Row
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is safe in WAL mode: an application crash loses no committed
            # transaction; a power cut may lose the last ones, never consistency.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self.schema_version = migrate(self._conn, str(self.path))
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            self._forget_open()
            if _is_locked(exc):
                raise self.locked_error() from None
            if not _not_a_database(exc):
                raise
            raise HubFileError(f"the hub path {self.path} is not a usable hub ({exc}); it was left untouched",
                               location=Location(file=str(self.path))) from None
        except BaseException:
            self._conn.close()
            self._forget_open()
            raise
        self.errors = ErrorLog(self, self._conn, secrets)

    def _setup(self, outbound_triggers: Iterable[str], default_region: str, busy_timeout: float) -> None:
        """The state every hub store keeps beside its connection (PostgresHub shares it)."""
        self.busy_timeout = float(busy_timeout)
        self.outbound_triggers = frozenset(outbound_triggers)
        unknown = self.outbound_triggers - {"Customer", "Transaction"}
        if unknown:
            raise ValueError(f"unknown outbound trigger(s): {', '.join(sorted(unknown))}")
        self.default_region = default_region
        self._lock = threading.RLock()
        self._depth = 0
        self._flat = False
        self._enqueue_on = True
        self._queued: list[tuple[str, int, str, str, str]] | None = None  # see queue_at_end()
        self._open_key = None

    # -- lifecycle and transactions -------------------------------------------------

    def close(self) -> None:
        """Close the connection (the file stays)."""
        self._conn.close()
        self._forget_open()

    def _forget_open(self) -> None:
        with _OPEN_LOCK:
            if self._open_key is not None:
                _OPEN_HERE[self._open_key] -= 1
                self._open_key = None

    def __enter__(self) -> SqliteHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def target(self) -> str:
        """Where this hub lives, for people: the SQLite file's path."""
        return str(self.path)

    def __repr__(self) -> str:
        return f"SqliteHub({str(self.path)!r}, outbound_triggers={sorted(self.outbound_triggers)})"

    @contextmanager
    def transaction(self, *, enqueue: bool = True, flat: bool = False) -> Iterator[SqliteHub]:
        """Group writes atomically: all of them commit, or none (queue rows included).

        Nested calls become savepoints: an exception caught inside an outer
        transaction undoes only the inner block.  ``enqueue=False`` suppresses
        outbound-queue rows for writes inside the block.

        ``flat=True`` (on the outermost call) makes the calls nested in it join it without
        savepoints, two statements fewer each: for a block that catches no exception of a
        write inside it, where any exception undoes the whole block anyway (a dispatched
        record's links, log entries and ack).
        """
        with self._lock:
            depth = self._depth
            if depth and self._flat:
                previous = self._enqueue_on
                self._enqueue_on = previous and enqueue
                try:
                    yield self
                finally:
                    self._enqueue_on = previous
                return
            savepoint = f"sp{depth}"
            self._begin(savepoint if depth else None)
            previous = self._enqueue_on
            self._enqueue_on = previous and enqueue
            self._depth = depth + 1
            if depth == 0:
                self._flat = flat
            held = None if self._queued is None else len(self._queued)
            try:
                yield self
            except BaseException:
                self._depth = depth
                self._enqueue_on = previous
                if depth == 0:
                    self._flat = False
                if held is not None and self._queued is not None:
                    del self._queued[held:]  # the queue rows of writes undone
                if depth == 0:
                    self._conn.execute("ROLLBACK")
                else:
                    self._conn.execute(f"ROLLBACK TO {savepoint}")
                    self._conn.execute(f"RELEASE {savepoint}")
                raise
            self._depth = depth
            self._enqueue_on = previous
            if depth == 0:
                self._flat = False
                try:
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
            else:
                self._conn.execute(f"RELEASE {savepoint}")

    def _begin(self, savepoint: str | None) -> None:
        """Open the outermost transaction (taking the write lock at once), or a savepoint inside it."""
        try:
            self._conn.execute("BEGIN IMMEDIATE" if savepoint is None else f"SAVEPOINT {savepoint}")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise self.locked_error() from None
            raise

    def locked_error(self) -> HubLockedError:
        """The error for a write that waited ``busy_timeout`` for another process's lock in vain."""
        return HubLockedError(f"the hub file {self.path} is locked by another process; retry later",
                              detail=f"waited {self.busy_timeout:g} s for its write lock; nothing was written",
                              location=Location(file=str(self.path)))

    def _enqueue(self, entity: str, hub_id: int, op: str) -> None:
        """Queue (or coalesce) a change; caller is inside a transaction."""
        if not self._enqueue_on or entity not in self.outbound_triggers:
            return
        now = utc_now()
        if self._queued is not None:
            self._queued.append((entity, hub_id, op, now, now))
        else:
            self._conn.execute(_QUEUE_CHANGE, (entity, hub_id, op, now, now))

    @contextmanager
    def queue_at_end(self) -> Iterator[None]:
        """Inside a transaction: hold the queue rows of the block's writes and write them in one
        statement as it ends without an error (the same rows, coalesced in the same order).
        The writes in the block must not read the queue."""
        if self._depth == 0:
            raise RuntimeError("queue_at_end() belongs inside a transaction")
        self._queued = []
        try:
            yield
            rows = self._queued
        finally:
            self._queued = None
        if rows:
            self._conn.executemany(_QUEUE_CHANGE, rows)

    # -- customers ------------------------------------------------------------------

    def add_customer(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Add a Customer (and its nested ``Addresses``); return it as stored.

        Raises:
            HubRecordError: a required field is missing, a type is wrong, or the Id is taken.
            EmailExistsError: another Customer has this email (``existing_id`` names it).
        """
        check_customer(record)
        with self.transaction():
            customer_id = self._insert_customer(record)
        return self._require_customer(customer_id)

    def update_customer(self, customer_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply the fields in ``changes`` to a Customer; return it as stored.

        Fields absent from ``changes`` keep their values; ``CustomFields`` merge key
        by key; each of ``Addresses`` updates the address with its ``Id`` or is added
        unless an identical address exists.  A change that alters nothing queues nothing.

        Raises:
            HubNotFoundError, HubRecordError, EmailExistsError.
        """
        check_customer(changes, partial=True)
        if changes.get("Id") not in (None, customer_id):
            raise HubRecordError(f"Id {changes['Id']} does not match Customer {customer_id}")
        with self.transaction():
            self._update_customer(customer_id, changes)
        return self._require_customer(customer_id)

    def upsert_customer(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        """Add or update a whole Customer record: by ``Id`` when it has one, else by email.

        Returns:
            The stored record and what happened: ``"added"``, ``"updated"`` or ``"unchanged"``.
        """
        check_customer(record)
        with self.transaction():
            customer_id, outcome = self.upsert_checked_customer(record)
        return self._require_customer(customer_id), outcome

    def upsert_checked_customer(self, record: Mapping[str, Any]) -> tuple[int, str]:
        """:meth:`upsert_customer` of a record :func:`~engine.hub._records.check_customer` passed, inside
        the caller's transaction, without reading it back: ``(Id, "added"|"updated"|"unchanged")``
        (the JSONL import writes batches this way)."""
        record_id = record.get("Id")
        existing: int | None = None
        if record_id is not None:
            if self._conn.execute("SELECT 1 FROM customers WHERE id = ?", (record_id,)).fetchone():
                existing = record_id
        else:
            existing = self._email_owner(record["EmailAddress"])
        if existing is None:
            return self._insert_customer(record, free=record_id is None), "added"
        changed = self._update_customer(existing, record)
        return existing, "updated" if changed else "unchanged"

    def upsert_checked_customers(self, records: Sequence[Mapping[str, Any]],
                                 on_stored: OnStored | None = None) -> list[str]:
        """:meth:`upsert_checked_customer` of each record in order, inside the caller's transaction;
        returns the outcomes.  The plainly new records (see :mod:`engine.hub._bulk`) are inserted a run
        at a time; ``on_stored(index, Id)`` hears of each record once it is written."""
        held = taken(self._conn, "customers", "email", (r["EmailAddress"] for r in records))
        new = new_in_batch(records, "EmailAddress", held, "Addresses")
        return upsert_in_runs(records, new, self._insert_new_customers, self.upsert_checked_customer, on_stored)

    def _reserve_ids(self, table: str, count: int) -> int:
        """The first of ``count`` consecutive free ids of ``table`` (one of :data:`RESERVED_IDS`), for
        rows inserted with their ids given: those SQLite would give them one by one (past the largest).
        Inside the write transaction, so no other writer takes them meanwhile."""
        if table not in RESERVED_IDS:
            raise ValueError(f"no ids are reserved in {table!r}")
        row = self._conn.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}", ()).fetchall()
        return int(row[0][0])

    def _insert_new_customers(self, records: list[Mapping[str, Any]]) -> list[int] | None:
        """Insert Customers without Ids whose emails are free (and their Addresses, none with an Id) in
        two statements; their new Ids, or None when the ids left past the largest are too few."""
        first = self._reserve_ids("customers", len(records))
        if first + len(records) - 1 > SQLITE_MAX:
            return None
        ids = list(range(first, first + len(records)))
        rows, address_rows = [], []
        now = utc_now()  # the rows of one statement share one time stamp
        for customer_id, record in zip(ids, records, strict=True):
            rows.append(self._customer_row(customer_id, record, now))
            if record.get("Addresses"):
                address_rows.extend(_new_address_rows(customer_id, record["Addresses"], now))
        self._conn.executemany(_INSERT_CUSTOMER, rows)
        if address_rows:
            self._conn.executemany(_INSERT_ADDRESS, address_rows)
        for customer_id in ids:
            self._enqueue("Customer", customer_id, "add")
        return ids

    def _customer_row(self, customer_id: int | None, record: Mapping[str, Any], now: str) -> tuple[Any, ...]:
        """The ``_INSERT_CUSTOMER`` parameters of a new Customer record."""
        country = _billing_country(record)
        phone, number, custom = record.get("Phone"), record.get("CustomerNumber"), record.get("CustomFields")
        return (customer_id, record.get("EmailAddress"), number, record.get("FirstName"), record.get("LastName"),
                record.get("Company"), record.get("Comment"), phone, to_e164(phone, self.default_region, country),
                to_e164(number, self.default_region, country), _json(custom) if custom else "{}", now, now)

    def get_customer(self, customer_id: int) -> dict[str, Any] | None:
        """The Customer with its ``Addresses``, or None."""
        row = self._conn.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)).fetchone()
        if row is None:
            return None
        return self._customer_dict(row, self.list_addresses(customer_id))

    def find_customer_by_email(self, email: str) -> dict[str, Any] | None:
        """The Customer whose email is exactly ``email`` (case-sensitive), or None."""
        owner = self._email_owner(email)
        return None if owner is None else self.get_customer(owner)

    def find_customers_by_email_ignoring_case(self, email: str) -> list[dict[str, Any]]:
        """Customers whose email equals ``email`` but for ASCII letter case and surrounding spaces,
        the exact match excluded, lowest Id first (the case-only differences the seeds ask to review)."""
        text = email.strip()
        rows = self._conn.execute(self._SQL_EMAIL_IGNORING_CASE, (text, email)).fetchall()
        found = [self.get_customer(int(r[0])) for r in rows]
        return [c for c in found if c is not None]

    def find_customer_by_phone(self, phone: str, country: str | None = None) -> dict[str, Any] | None:
        """The Customer whose Phone (or, failing that, CustomerNumber) is the same E.164 number.

        Both sides are normalised with ``phonenumbers``; a value that is not a phone
        number matches nothing.  Ties go to a Phone match, then the lowest Id.
        """
        e164 = to_e164(phone, self.default_region, country)
        if e164 is None:
            return None
        row = self._conn.execute(
            "SELECT id FROM customers WHERE phone_e164 = ? OR number_e164 = ?"
            " ORDER BY CASE WHEN phone_e164 = ? THEN 0 ELSE 1 END, id LIMIT 1",
            (e164, e164, e164),
        ).fetchone()
        return None if row is None else self.get_customer(row[0])

    def iter_customers(self, *, batch: int = 500, after: int = 0) -> Iterator[dict[str, Any]]:
        """Every Customer with its Addresses, by Id, read in batches (no long-held cursor);
        ``after``: only those with a larger Id (where an interrupted run stopped)."""
        for row, addresses in iter_with_children(self._conn, "customers", "customer_addresses", "customer_id",
                                                 "id", batch, after):
            yield self._customer_dict(row, [_address_dict(a) for a in addresses])

    # -- addresses ------------------------------------------------------------------

    def add_address(self, customer_id: int, address: Mapping[str, Any]) -> dict[str, Any]:
        """Add an address to a Customer (no duplicate check); return it."""
        check_address(address)
        with self.transaction():
            self._require_customer_row(customer_id)
            address_id = self._insert_address(customer_id, address)
            self._touch_customer(customer_id)
        return self._address(address_id)

    def add_address_if_new(
        self, customer_id: int, address: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Add an address unless the Customer already has one with identical address fields.

        Compares Address1, Address2, City, Region, PostalCode and Country exactly
        (a missing field equals an empty one).  Returns ``(address, added)``.
        """
        check_address(address)
        with self.transaction():
            self._require_customer_row(customer_id)
            same = self._find_same_address(customer_id, address)
            if same is not None:
                return self._address(same), False
            address_id = self._insert_address(customer_id, address)
            self._touch_customer(customer_id)
        return self._address(address_id), True

    def list_addresses(self, customer_id: int) -> list[dict[str, Any]]:
        """The Customer's addresses, oldest first."""
        rows = self._conn.execute(
            "SELECT * FROM customer_addresses WHERE customer_id = ? ORDER BY id", (customer_id,)
        )
        return [_address_dict(r) for r in rows]

    # -- internals ------------------------------------------------------------------

    def _email_owner(self, email: str) -> int | None:
        row = self._conn.execute("SELECT id FROM customers WHERE email = ?", (email,)).fetchone()
        return None if row is None else int(row[0])

    def _require_customer_row(self, customer_id: int) -> sqlite3.Row:
        row: sqlite3.Row | None = self._conn.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)).fetchone()
        if row is None:
            raise HubNotFoundError(f"no Customer with Id {customer_id}", location=Location(record_id=str(customer_id)))
        return row

    def _require_customer(self, customer_id: int) -> dict[str, Any]:
        record = self.get_customer(customer_id)
        if record is None:
            raise HubNotFoundError(f"no Customer with Id {customer_id}", location=Location(record_id=str(customer_id)))
        return record

    def _email_conflict(self, email: str, customer_id: int | None) -> None:
        owner = self._email_owner(email)
        if owner is not None and owner != customer_id:
            raise EmailExistsError(
                catalog.EMAIL_ALREADY_EXISTS,
                existing_id=owner,
                location=Location(record_id=str(owner)),
                detail=f"Customer {owner} already has this email address",
            )

    def _insert_customer(self, record: Mapping[str, Any], *, free: bool = False) -> int:
        """Insert a new Customer with its Addresses; ``free``: the record has no Id and the
        caller has just found its email unused, so it is not looked up again."""
        record_id: Any = record.get("Id")
        if not free:
            if record_id is not None and self._conn.execute(
                "SELECT 1 FROM customers WHERE id = ?", (record_id,)
            ).fetchone():
                raise HubRecordError(f"Customer {record_id} already exists",
                                     location=Location(record_id=str(record_id)))
            self._email_conflict(record["EmailAddress"], None)
        now = utc_now()
        cur = self._conn.execute(_INSERT_CUSTOMER, self._customer_row(record_id, record, now))
        customer_id = int(cur.lastrowid or record_id)
        addresses = record.get("Addresses") or []
        if any(address.get("Id") is not None for address in addresses):
            for address in addresses:
                self._upsert_address(customer_id, address)
        elif addresses:
            self._insert_new_addresses(customer_id, addresses, now)
        self._enqueue("Customer", customer_id, "add")
        return customer_id

    def _insert_new_addresses(self, customer_id: int, addresses: list[Mapping[str, Any]], now: str) -> None:
        """The Addresses (none with an Id) of a Customer just inserted, in one statement."""
        self._conn.executemany(_INSERT_ADDRESS, _new_address_rows(customer_id, addresses, now))

    def _update_customer(self, customer_id: int, changes: Mapping[str, Any]) -> bool:
        row = self._require_customer_row(customer_id)
        if "EmailAddress" in changes and changes["EmailAddress"] != row["email"]:
            self._email_conflict(changes["EmailAddress"], customer_id)
        sets: dict[str, Any] = {}
        for key, col in _CUSTOMER_COLUMNS.items():
            if key in changes and changes[key] != row[col]:
                sets[col] = changes[key]
        if "phone" in sets:
            sets["phone_e164"] = to_e164(sets["phone"], self.default_region)
        if "customer_number" in sets:
            sets["number_e164"] = to_e164(sets["customer_number"], self.default_region)
        if changes.get("CustomFields"):
            old = json.loads(row["custom_fields"])
            merged = {**old, **changes["CustomFields"]}
            if merged != old:
                sets["custom_fields"] = _json(merged)
        changed = bool(sets)
        if sets:
            sets["updated_at"] = utc_now()
            assignments = ", ".join(f"{col} = ?" for col in sets)
            self._conn.execute(
                f"UPDATE customers SET {assignments} WHERE id = ?", (*sets.values(), customer_id)
            )
        for address in changes.get("Addresses") or []:
            changed = self._upsert_address(customer_id, address) or changed
        if changed:
            if not sets:
                self._conn.execute(
                    "UPDATE customers SET updated_at = ? WHERE id = ?", (utc_now(), customer_id)
                )
            self._enqueue("Customer", customer_id, "update")
        return changed

    def _touch_customer(self, customer_id: int) -> None:
        self._conn.execute("UPDATE customers SET updated_at = ? WHERE id = ?", (utc_now(), customer_id))
        self._enqueue("Customer", customer_id, "update")

    def _find_same_address(self, customer_id: int, address: Mapping[str, Any]) -> int | None:
        key = address_key(address)
        for row in self._conn.execute(
            "SELECT * FROM customer_addresses WHERE customer_id = ? ORDER BY id", (customer_id,)
        ):
            if address_key(_address_dict(row)) == key:
                return int(row["id"])
        return None

    def _upsert_address(self, customer_id: int, address: Mapping[str, Any]) -> bool:
        """Update the address with this Id, else add unless identical; True if anything changed."""
        address_id = address.get("Id")
        if address_id is not None:
            row = self._conn.execute(
                "SELECT * FROM customer_addresses WHERE id = ?", (address_id,)
            ).fetchone()
            if row is not None:
                if row["customer_id"] != customer_id:
                    raise HubRecordError(
                        f"Address {address_id} belongs to Customer {row['customer_id']}, not {customer_id}"
                    )
                return self._update_address(row, address)
        elif self._find_same_address(customer_id, address) is not None:
            return False
        self._insert_address(customer_id, address)
        return True

    def _insert_address(self, customer_id: int, address: Mapping[str, Any]) -> int:
        now = utc_now()
        self._clear_other_flags(customer_id, address, None)
        cols = list(_ADDRESS_COLUMNS.values())
        values = [_address_value(address, key) for key in _ADDRESS_COLUMNS]
        cur = self._conn.execute(
            f"INSERT INTO customer_addresses(id, customer_id, {', '.join(cols)}, created_at, updated_at)"
            f" VALUES (?, ?, {', '.join('?' * len(cols))}, ?, ?)",
            (address.get("Id"), customer_id, *values, now, now),
        )
        return int(cur.lastrowid or address["Id"])

    def _update_address(self, row: sqlite3.Row, address: Mapping[str, Any]) -> bool:
        sets = {
            col: _address_value(address, key)
            for key, col in _ADDRESS_COLUMNS.items()
            if key in address and _address_value(address, key) != row[col]
        }
        if not sets:
            return False
        self._clear_other_flags(row["customer_id"], address, row["id"])
        sets["updated_at"] = utc_now()
        assignments = ", ".join(f"{col} = ?" for col in sets)
        self._conn.execute(
            f"UPDATE customer_addresses SET {assignments} WHERE id = ?", (*sets.values(), row["id"])
        )
        return True

    def _clear_other_flags(self, customer_id: int, address: Mapping[str, Any], keep: int | None) -> None:
        """A Customer has at most one primary billing and one primary shipping address."""
        for flag in _FLAGS:
            if address.get(flag):
                col = _ADDRESS_COLUMNS[flag]
                self._conn.execute(
                    f"UPDATE customer_addresses SET {col} = 0 WHERE customer_id = ? AND id <> COALESCE(?, 0)",
                    (customer_id, keep),
                )

    def _address(self, address_id: int) -> dict[str, Any]:
        row = self._conn.execute("SELECT * FROM customer_addresses WHERE id = ?", (address_id,)).fetchone()
        return _address_dict(row)

    def _customer_dict(self, row: sqlite3.Row, addresses: list[dict[str, Any]]) -> dict[str, Any]:
        return record_with_children(row, _CUSTOMER_COLUMNS, "Addresses", addresses)


def _new_address_rows(customer_id: int, addresses: list[Mapping[str, Any]], now: str) -> list[list[Any]]:
    """The ``_INSERT_ADDRESS`` rows of a new Customer's Addresses (none with an Id).

    The same rows :meth:`SqliteHub._upsert_address` gives one by one: an address identical
    to an earlier one is skipped, and of the addresses flagged primary billing (shipping)
    only the last keeps the flag.
    """
    if len(addresses) == 1:
        return [_address_row(customer_id, addresses[0], now)]
    rows: dict[tuple[str, ...], list[Any]] = {}
    for address in addresses:
        key = address_key(address)
        if key not in rows:
            rows[key] = _address_row(customer_id, address, now)
    kept = list(rows.values())
    if len(kept) > 1:
        for col in _FLAG_COLUMNS:
            flagged = [row for row in kept if row[col]]
            for row in flagged[:-1]:
                row[col] = 0
    return kept


def _address_row(customer_id: int, address: Mapping[str, Any], now: str) -> list[Any]:
    """The ``_INSERT_ADDRESS`` row of one address (the columns of ``_ADDRESS_COLUMNS`` in order)."""
    get = address.get
    return [customer_id, get("Address1"), get("Address2"), get("City"), get("Region"), get("PostalCode"),
            get("Country"), 1 if get("IsPrimaryBilling") else 0, 1 if get("IsPrimaryShipping") else 0, now, now]


def _address_value(address: Mapping[str, Any], key: str) -> Any:
    value = address.get(key)
    if key in _FLAGS:
        return 1 if value else 0
    return value


def _address_dict(row: sqlite3.Row) -> dict[str, Any]:
    record: dict[str, Any] = {"Id": row["id"], "CustomerId": row["customer_id"]}
    for key, col in _ADDRESS_COLUMNS.items():
        record[key] = bool(row[col]) if key in _FLAGS else row[col]
    return record


SQLITE_HEADER = b"SQLite format 3\x00"
#: The files SQLite keeps beside a hub in WAL mode (and the rollback journal).
SIDE_FILES = ("-wal", "-shm", "-journal")


def is_sqlite_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a file starting with SQLite's 16-byte header (a hub or any other database)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


#: Hub files this process holds a connection to (by real path, with how many).  A file open here is
#: never read again with open(): closing any descriptor of a file drops every POSIX lock the process
#: holds on it, SQLite's included, and another process then deletes the WAL under our connection
#: (SQLite's "How To Corrupt An SQLite Database File", 2.2).
_OPEN_HERE: Counter[str] = Counter()
_OPEN_LOCK = threading.Lock()


def _create_private(path: Path, *, read_header: bool = True) -> None:
    """Check the hub path, create the file owner-only (0600) if missing, make an existing one 0600.
    ``read_header=False``: the file is open in this process already (checked then); do not open it.

    A folder, or a non-empty file that is not a SQLite database (a text file, a
    typo'd path), is refused with :class:`HubFileError` before SQLite touches it.
    An existing hub (and its -wal / -shm) owned by this user is made 0600 whatever
    its mode: it holds the OAuth tokens.  SQLite gives new -wal and -shm files
    the database file's permissions, so they stay private too.
    """
    if path.is_dir():
        raise HubFileError(f"the hub path {path} is a folder, not a hub file; give a file path "
                           "(--hub, KLAVIYO_SYNC_HUB or the settings' hub key)",
                           location=Location(file=str(path)))
    try:
        if path.exists():
            if read_header and path.stat().st_size and not is_sqlite_file(path):
                raise HubFileError(f"the hub path {path} is not a hub: the file exists and is not a "
                                   "SQLite database; it was left untouched",
                                   location=Location(file=str(path)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        for file in (path, *(path.with_name(path.name + side) for side in SIDE_FILES)):
            _make_private(file)
    except OSError as exc:
        raise HubFileError(f"cannot open the hub file {path}: {exc.strerror or exc}",
                           location=Location(file=str(path))) from None


def _make_private(file: Path) -> None:
    """chmod 0600 when ``file`` exists, is ours and is readable by others."""
    try:
        st = file.stat()
    except FileNotFoundError:
        return
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(file, 0o600)


def _not_a_database(exc: sqlite3.DatabaseError) -> bool:
    """True for SQLite's answers that mean the file is no usable database (not "locked" or "busy")."""
    text = str(exc).lower()
    return any(s in text for s in ("not a database", "malformed", "unable to open"))


def _is_locked(exc: sqlite3.Error) -> bool:
    """True for SQLite's "database is locked" / "database is busy" (another process holds the lock)."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text
