"""The inbound poll's cursor: a watermark, an overlap window, a de-duplication set and a retry list.

Klaviyo sends no change webhooks, so the poll asks for profiles with
``greater-than(updated, <time>)`` sorted by ``updated``.  Two facts shape the cursor:

- ``updated`` has one-second resolution and ``greater-than`` is strict.  A profile
  changed later within the same second as the last one handled would be missed by
  ``greater-than(watermark)``, so the query starts ``overlap`` seconds *before* the
  watermark (at least one second), and profiles already handled in that window are
  skipped by their fingerprint (profile id + ``updated`` + a digest of the
  attributes, so two changes inside one second are still told apart).
- The cursor may only pass a profile once it was handled (transferred, or its error
  logged).  Profiles arrive sorted by ``updated``, so after handling a profile
  every profile with a smaller ``updated`` has been handled: the watermark is the
  ``updated`` of the last handled profile.  A profile whose transfer *failed* (the
  hub or Klaviyo was unavailable, not a data error) goes on the retry list, kept
  in the same state value, and is fetched again at the start of the next poll.
  A failed change never joins the seen set, and a profile fetched from the retry
  list is always transferred: it leaves the list only once it is stored (or its
  data error logged), never because it was "already seen".

The whole cursor is one JSON value in the hub's sync state (``cursor:<name>``),
written after every page and on a clean stop, so a killed process re-does at most
the page it was in (and re-doing a profile is harmless: it then matches by its
link and goes through the Update collection).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: Seen-set entries kept at most; past this the oldest are dropped (a dropped entry can
#: only cause a harmless second transfer of an unchanged profile).
MAX_SEEN = 50_000


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (``Z`` or offset; naive means UTC) as an aware UTC datetime."""
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


def format_time(dt: datetime) -> str:
    """``2024-05-01T10:00:00Z``: the form sent in Klaviyo filters and kept in the cursor."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fingerprint(resource: Mapping[str, Any]) -> tuple[str, str]:
    """``(updated, digest)`` of a profile resource: what "the same change" means."""
    attrs = resource.get("attributes") or {}
    updated = str(attrs.get("updated") or "")
    blob = json.dumps(attrs, sort_keys=True, default=str, separators=(",", ":")).encode()
    return updated, hashlib.blake2b(blob, digest_size=8).hexdigest()


@dataclass
class PollCursor:
    """Where the inbound poll stands.

    Attributes:
        name: the cursor's name in the hub (``cursor:<name>``).
        watermark: every profile whose ``updated`` is before this was handled (None: never polled).
        seen: profile id -> ``[updated, digest]`` for profiles handled inside the overlap window.
        retry: profile ids whose transfer failed and must be fetched again.
        overlap: seconds the next query reaches back before the watermark (>= 1).
    """

    name: str = "profiles"
    watermark: datetime | None = None
    seen: dict[str, list[str]] = field(default_factory=dict)
    retry: list[str] = field(default_factory=list)
    overlap: float = 2.0

    @classmethod
    def load(cls, hub: Any, name: str = "profiles", *, overlap: float = 2.0) -> PollCursor:
        """Read the cursor from the hub's sync state (a fresh one when there is none)."""
        raw = hub.get_cursor(name)
        cursor = cls(name=name, overlap=max(1.0, overlap))
        if not raw:
            return cursor
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            # A plain timestamp (set by hand or by an older release) is a watermark alone.
            cursor.watermark = parse_time(raw)
            return cursor
        if data.get("watermark"):
            cursor.watermark = parse_time(data["watermark"])
        cursor.seen = {str(k): list(v) for k, v in (data.get("seen") or {}).items()}
        cursor.retry = [str(x) for x in data.get("retry") or []]
        return cursor

    def save(self, hub: Any) -> None:
        """Write the cursor to the hub (one state value)."""
        hub.set_cursor(self.name, json.dumps(self.to_dict(), separators=(",", ":")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "watermark": format_time(self.watermark) if self.watermark else None,
            "seen": self.seen,
            "retry": self.retry,
        }

    def query_from(self, since: datetime | None = None) -> datetime | None:
        """The time the next query starts after: ``since`` if given, else the watermark less the overlap."""
        if since is not None:
            return since
        if self.watermark is None:
            return None
        return self.watermark - timedelta(seconds=self.overlap)

    def filter(self, since: datetime | None = None) -> str | None:
        """Klaviyo's filter text for the next poll (None: every profile)."""
        start = self.query_from(since)
        return None if start is None else f"greater-than(updated,{format_time(start)})"

    def already_handled(self, profile_id: str, mark: tuple[str, str]) -> bool:
        """Whether this exact change of this profile was handled in an earlier, overlapping poll."""
        return self.seen.get(profile_id) == list(mark)

    def handled(self, profile_id: str, mark: tuple[str, str], *, failed: bool = False,
                advance: bool = True) -> None:
        """Record a handled profile: it moves the watermark (``advance``: only for profiles taken
        from the sorted stream) and joins the seen set, or (``failed``) goes on the retry list
        instead, so the same change met again is transferred again, not skipped."""
        if failed:
            self.seen.pop(profile_id, None)
        else:
            self.seen[profile_id] = list(mark)
        if advance and mark[0]:
            try:
                updated = parse_time(mark[0])
            except ValueError:
                updated = None
            if updated is not None and (self.watermark is None or updated > self.watermark):
                self.watermark = updated
        if failed:
            if profile_id not in self.retry:
                self.retry.append(profile_id)
        elif profile_id in self.retry:
            self.retry.remove(profile_id)

    def prune(self) -> None:
        """Forget seen entries the next query cannot return (at or before its start), and cap the set."""
        start = self.query_from()
        if start is not None:
            keep: dict[str, list[str]] = {}
            for pid, (updated, digest) in self.seen.items():
                try:
                    if parse_time(updated) > start:
                        keep[pid] = [updated, digest]
                except ValueError:
                    continue
            self.seen = keep
        if len(self.seen) > MAX_SEEN:
            ordered = sorted(self.seen.items(), key=lambda kv: kv[1][0])
            self.seen = dict(ordered[-MAX_SEEN:])


__all__ = ["MAX_SEEN", "PollCursor", "fingerprint", "format_time", "parse_time"]
