"""The hub's error log: the seeds' Integration Monitoring / Error Logs.

Every entry has a time, the flow (the collection's title), a level
(``error``, or ``warning`` for messages such as "could not link ... may result
in duplicate"), the catalog message and an optional detail, and the record's
id on each side where known.  Text is masked with :func:`redact` before it is
stored, so a secret in an exception message never lands in the file.

An entry commits at once.  Log *after* leaving a failed ``hub.transaction()``
block: an entry written inside a block that then rolls back goes with it.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.catalog import pair_texts
from engine.errors import HubNotFoundError, HubRecordError, Location
from engine.hub._redact import redact
from engine.hub._util import utc_now

if TYPE_CHECKING:
    from engine.hub._sqlite import SqliteHub

LEVELS = ("error", "warning")


class ErrorLog:
    """The error log of one :class:`SqliteHub` (reached as ``hub.errors``).

    Args:
        hub: the hub whose ``transaction()`` each write runs in.
        conn: that hub's SQLite connection, which the log reads and writes.
        secrets: texts masked in every message and detail.
    """

    def __init__(self, hub: SqliteHub, conn: sqlite3.Connection, secrets: Iterable[str] = ()) -> None:
        self._hub = hub
        self._conn = conn
        self._secrets = tuple(s for s in secrets if s)

    def _mask(self, text: str | None) -> str | None:
        # NUL shown as \x00: PostgreSQL's text cannot hold it, and a log entry must always store
        return None if text is None else redact(str(text), self._secrets).replace("\0", "\\x00")

    def log(
        self,
        flow: str,
        message: str,
        *,
        level: str = "error",
        entity: str | None = None,
        hub_id: int | None = None,
        klaviyo_id: str | None = None,
        detail: str | None = None,
        code: str | None = None,
    ) -> int:
        """Store one entry with secrets masked; return its id.

        Args:
            flow: the collection title, e.g. ``"Add Klaviyo Profile TO Hub"``.
            message: the catalog text (``engine.catalog``) or a one-line diagnosis.
            level: ``"error"`` or ``"warning"``.
            entity / hub_id / klaviyo_id: the record on each side, where known.
            detail: longer text (Klaviyo's answer, the offending value).
            code: the stable error code (``KlaviyoSyncError.code``).
        """
        if level not in LEVELS:
            raise HubRecordError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        # One error worded by two articles: the catalog's text is the message, the other in the detail.
        message, detail = pair_texts(flow, message, detail)
        with self._hub.transaction():
            cur = self._conn.execute(
                "INSERT INTO error_log(at, flow, level, code, message, detail, entity, hub_id,"
                " klaviyo_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    utc_now(), self._mask(flow), level, code, self._mask(message),
                    self._mask(detail), entity, hub_id, self._mask(klaviyo_id),
                ),
            )
        return int(cur.lastrowid or 0)

    def list(
        self,
        *,
        flow: str | None = None,
        level: str | None = None,
        code: str | None = None,
        record: str | None = None,
        text: str | None = None,
        unresolved_only: bool = False,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Entries newest first, filtered by flow, level, code, record (a hub id or a Klaviyo id),
        text (in the message or the detail) and resolution; ``offset`` skips that many."""
        where, args = _where(flow, level, code, record, text, unresolved_only)
        paging = f" {self._hub.SQL_NO_LIMIT} OFFSET ?" if limit is None else " LIMIT ? OFFSET ?"
        rows = self._conn.execute(f"SELECT * FROM error_log{where} ORDER BY id DESC{paging}",
                                  (*args, offset) if limit is None else (*args, limit, offset))
        return [_entry(r) for r in rows]

    # list's filters again (not its paging), each keyword spelled out; both build the WHERE in _where.
    def count(
        self,
        *,
        flow: str | None = None,
        level: str | None = None,
        code: str | None = None,
        record: str | None = None,
        text: str | None = None,
        unresolved_only: bool = False,
    ) -> int:
        """How many entries :meth:`list` would give with the same filters and no limit."""
        where, args = _where(flow, level, code, record, text, unresolved_only)
        return int(self._conn.execute(f"SELECT COUNT(*) FROM error_log{where}", args).fetchone()[0])

    def facets(self) -> dict[str, builtins.list[str]]:
        """The flows and codes present in the log (for filter menus)."""
        conn = self._conn
        return {"flows": [r[0] for r in conn.execute("SELECT DISTINCT flow FROM error_log ORDER BY flow")],
                "codes": [r[0] for r in conn.execute(
                    "SELECT DISTINCT code FROM error_log WHERE code IS NOT NULL ORDER BY code")]}

    def for_record(self, entity: str, hub_id: int, klaviyo_id: str | None = None, *,
                   limit: int = 200) -> builtins.list[dict[str, Any]]:
        """Entries newest first about one hub record, or about its Klaviyo id."""
        if klaviyo_id:
            rows = self._conn.execute(
                "SELECT * FROM error_log WHERE (entity = ? AND hub_id = ?) OR klaviyo_id = ? ORDER BY id DESC LIMIT ?",
                (entity, hub_id, klaviyo_id.replace("\0", "\\x00"), limit))
        else:
            rows = self._conn.execute(
                "SELECT * FROM error_log WHERE entity = ? AND hub_id = ? ORDER BY id DESC LIMIT ?",
                (entity, hub_id, limit))
        return [_entry(r) for r in rows]

    def get(self, entry_id: int) -> dict[str, Any] | None:
        """One entry, or None."""
        row = self._conn.execute("SELECT * FROM error_log WHERE id = ?", (entry_id,)).fetchone()
        return None if row is None else _entry(row)

    def resolve(self, entry_id: int) -> dict[str, Any]:
        """Mark an entry resolved (keeps the first resolution time) and return it."""
        with self._hub.transaction():
            cur = self._conn.execute(
                "UPDATE error_log SET resolved_at = COALESCE(resolved_at, ?) WHERE id = ?",
                (utc_now(), entry_id),
            )
        if cur.rowcount == 0:
            raise HubNotFoundError(
                f"no error log entry with Id {entry_id}", location=Location(record_id=str(entry_id))
            )
        entry = self.get(entry_id)
        assert entry is not None
        return entry


def _where(flow: str | None, level: str | None, code: str | None, record: str | None, text: str | None,
           unresolved_only: bool) -> tuple[str, list[Any]]:
    """The WHERE clause (or "") and its arguments for :meth:`ErrorLog.list` / :meth:`ErrorLog.count`."""
    where: list[str] = []
    args: list[Any] = []
    # NUL as the log stores it (see ErrorLog._mask)
    record, text = (None if v is None else v.replace("\0", "\\x00") for v in (record, text))
    for column, value in (("flow", flow), ("level", level), ("code", code)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if record:
        where.append("(CAST(hub_id AS TEXT) = ? OR klaviyo_id = ?)")
        args += [record, record]
    if text:
        where.append("(message LIKE ? ESCAPE '\\' OR detail LIKE ? ESCAPE '\\')")
        like = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        args += [like, like]
    if unresolved_only:
        where.append("resolved_at IS NULL")
    return (" WHERE " + " AND ".join(where)) if where else "", args


def _entry(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "Id": row["id"],
        "At": row["at"],
        "Flow": row["flow"],
        "Level": row["level"],
        "Code": row["code"],
        "Message": row["message"],
        "Detail": row["detail"],
        "Entity": row["entity"],
        "HubId": row["hub_id"],
        "KlaviyoId": row["klaviyo_id"],
        "ResolvedAt": row["resolved_at"],
    }
