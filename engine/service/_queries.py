"""Read-only views of the hub for the API and the pages (run on the API's worker thread),
through the hub's own API (the error log's filters and paging, the queue row of one record)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from engine.hub import SqliteHub
from engine.service._runtime import OUTCOMES_KEY


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


def search_errors(hub: SqliteHub, flt: ErrorFilter, *, limit: int = 50,
                  offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Entries newest first matching ``flt``, one page of them, and how many match in all."""
    filters = {"flow": flt.flow, "level": flt.level, "code": flt.code, "record": flt.record, "text": flt.text,
               "unresolved_only": not flt.include_resolved}
    return hub.errors.list(**filters, limit=limit, offset=offset), hub.errors.count(**filters)  # type: ignore[arg-type]


def error_facets(hub: SqliteHub) -> dict[str, list[str]]:
    """The flows and codes present in the error log (for the filter menus)."""
    return hub.errors.facets()


def queue_state(hub: SqliteHub, entity: str, hub_id: int) -> dict[str, Any] | None:
    """The record's row in the outbound queue, or None when nothing waits for it."""
    change = hub.queued_change(entity, hub_id)
    if change is None:
        return None
    lease = change.lease_until
    return {"op": change.op, "version": change.version, "queued_at": change.queued_at,
            "changed_at": change.changed_at, "attempts": change.attempts,
            "state": "in flight" if lease and lease > time.time() else "waiting"}


def record_view(hub: SqliteHub, entity: str, hub_id: int) -> dict[str, Any] | None:
    """A Customer or Transaction with its Klaviyo link, queue state and error-log entries."""
    record = hub.get_customer(hub_id) if entity == "Customer" else hub.get_transaction(hub_id)
    if record is None:
        return None
    link = hub.get_klaviyo_id(entity, hub_id)
    links: dict[str, Any] = {"Klaviyo": link}
    if entity == "Transaction":
        for line in record.get("Lines") or []:
            lk = hub.get_klaviyo_id("TransactionLine", int(line["Id"]))
            if lk:
                links[f"Line {line['Id']}"] = lk
    return {"entity": entity, "id": hub_id, "record": record, "links": links,
            "queue": queue_state(hub, entity, hub_id), "errors": hub.errors.for_record(entity, hub_id, link)}


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
