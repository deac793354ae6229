"""Read-only views of the hub for the API and the pages (run on the API's worker thread).

The error-log search (flow, level, code, record id, text, paging) reads the ``error_log``
table directly: :meth:`ErrorLog.list` filters by flow and level only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from engine.hub import SqliteHub
from engine.service._runtime import OUTCOMES_KEY

_COLUMNS = {"Id": "id", "At": "at", "Flow": "flow", "Level": "level", "Code": "code", "Message": "message",
            "Detail": "detail", "Entity": "entity", "HubId": "hub_id", "KlaviyoId": "klaviyo_id",
            "ResolvedAt": "resolved_at"}


@dataclass(frozen=True)
class ErrorFilter:
    """What the Error Logs page and ``GET /api/errors`` filter by (every part optional)."""

    flow: str | None = None
    level: str | None = None
    code: str | None = None
    record: str | None = None  # a hub id or a Klaviyo id
    text: str | None = None  # in the message or the detail
    include_resolved: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False, "")}


def search_errors(hub: SqliteHub, flt: ErrorFilter, *, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Entries newest first matching ``flt``, one page of them, and how many match in all."""
    where, args = [], []
    for column, value in (("flow", flt.flow), ("level", flt.level), ("code", flt.code)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    if flt.record:
        where.append("(CAST(hub_id AS TEXT) = ? OR klaviyo_id = ?)")
        args += [flt.record, flt.record]
    if flt.text:
        where.append("(message LIKE ? ESCAPE '\\' OR detail LIKE ? ESCAPE '\\')")
        like = "%" + flt.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        args += [like, like]
    if not flt.include_resolved:
        where.append("resolved_at IS NULL")
    sql_where = (" WHERE " + " AND ".join(where)) if where else ""
    conn = hub._conn
    total = int(conn.execute(f"SELECT COUNT(*) FROM error_log{sql_where}", args).fetchone()[0])
    rows = conn.execute(f"SELECT * FROM error_log{sql_where} ORDER BY id DESC LIMIT ? OFFSET ?",
                        (*args, limit, offset)).fetchall()
    return [{k: r[c] for k, c in _COLUMNS.items()} for r in rows], total


def error_facets(hub: SqliteHub) -> dict[str, list[str]]:
    """The flows and codes present in the error log (for the filter menus)."""
    conn = hub._conn
    return {"flows": [r[0] for r in conn.execute("SELECT DISTINCT flow FROM error_log ORDER BY flow")],
            "codes": [r[0] for r in conn.execute("SELECT DISTINCT code FROM error_log WHERE code IS NOT NULL"
                                                 " ORDER BY code")]}


def queue_state(hub: SqliteHub, entity: str, hub_id: int) -> dict[str, Any] | None:
    """The record's row in the outbound queue, or None when nothing waits for it."""
    row = hub._conn.execute("SELECT * FROM outbound_queue WHERE entity = ? AND hub_id = ?", (entity, hub_id)).fetchone()
    if row is None:
        return None
    lease = row["lease_until"]
    return {"op": row["op"], "version": row["version"], "queued_at": row["queued_at"], "changed_at": row["changed_at"],
            "attempts": row["attempts"],
            "state": "in flight" if lease and lease > time.time() else "waiting"}


def record_view(hub: SqliteHub, entity: str, hub_id: int) -> dict[str, Any] | None:
    """A Customer or Transaction with its Klaviyo link, queue state and error-log entries."""
    record = hub.get_customer(hub_id) if entity == "Customer" else hub.get_transaction(hub_id)
    if record is None:
        return None
    link = hub.get_klaviyo_id(entity, hub_id)  # type: ignore[arg-type]
    links: dict[str, Any] = {"Klaviyo": link}
    if entity == "Transaction":
        for line in record.get("Lines") or []:
            lk = hub.get_klaviyo_id("TransactionLine", int(line["Id"]))
            if lk:
                links[f"Line {line['Id']}"] = lk
    rows = hub._conn.execute(
        "SELECT * FROM error_log WHERE (entity = ? AND hub_id = ?) OR (klaviyo_id IS NOT NULL AND klaviyo_id = ?)"
        " ORDER BY id DESC LIMIT 200", (entity, hub_id, link or "\0")).fetchall()
    entries = [{k: r[c] for k, c in _COLUMNS.items()} for r in rows]
    return {"entity": entity, "id": hub_id, "record": record, "links": links,
            "queue": queue_state(hub, entity, hub_id), "errors": entries}


def outcome_history(hub: SqliteHub, now: float | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """Per flow, outcome counts of the last hour and the last day (5-minute buckets)."""
    now = time.time() if now is None else now
    history = hub.get_state(OUTCOMES_KEY, {}) or {}
    out: dict[str, dict[str, dict[str, int]]] = {}
    for start, flows in history.items():
        age = now - float(start)
        for flow, counts in flows.items():
            slot = out.setdefault(flow, {"hour": {}, "day": {}})
            for outcome, n in counts.items():
                if age <= 24 * 3600:
                    slot["day"][outcome] = slot["day"].get(outcome, 0) + n
                if age <= 3600:
                    slot["hour"][outcome] = slot["hour"].get(outcome, 0) + n
    return dict(sorted(out.items()))


def hub_status(hub: SqliteHub) -> dict[str, Any]:
    """Counts, cursors and the outcome history."""
    cursors = {}
    for name, cursor in hub.cursors().items():
        value = cursor["value"]
        try:
            parsed = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            parsed = value
        watermark = parsed.get("watermark") if isinstance(parsed, dict) else parsed
        cursors[name] = {**cursor, "watermark": watermark}
    return {"counts": hub.counts(), "cursors": cursors, "outcomes": outcome_history(hub)}


__all__ = ["ErrorFilter", "error_facets", "hub_status", "outcome_history", "queue_state", "record_view",
           "search_errors"]
