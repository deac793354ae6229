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

**Parallel ranges.** One chain of pages is one request at a time: at 200 ms a page it
cannot reach the L tier's 700 pages a minute.  So the poll reads the ``updated``
timeline in disjoint ranges (:class:`PollRange`), each its own chain of pages with
``greater-than(updated,lo),less-than(updated,hi)`` (the only operators Klaviyo allows
on ``updated``; ``hi`` is absent on the newest range).  Bounds are whole seconds and a
range split at ``mid`` becomes ``(lo, mid)`` and ``(mid - 1s, hi)``, so with
``updated``'s one-second resolution each second is in exactly one range.  Each range
keeps its own position (the ``updated`` of the last profile handled in it); the
watermark is the smallest position of the unfinished ranges, and once every range is
done it is the newest profile handled, as with one chain.  A range resumes at its
position less the overlap, with the same seen set.

The whole cursor is one JSON value in the hub's sync state (``cursor:<name>``),
ranges included, written after every page and on a clean stop, so a killed process
re-does at most the pages it was in, each range from its own position (and re-doing
a profile is harmless: it then matches by its link and goes through the Update
collection).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.hub import HubStore

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


#: A range is split only while at least this much of it is left to read.
MIN_SPLIT = timedelta(seconds=2)
_SECOND = timedelta(seconds=1)


def _whole_second(dt: datetime) -> datetime:
    return dt.replace(microsecond=0)


def updated_of(resource: Mapping[str, Any]) -> datetime | None:
    """A profile resource's ``updated`` time (None when absent or not a time)."""
    try:
        return parse_time(str((resource.get("attributes") or {}).get("updated") or ""))
    except ValueError:
        return None


@dataclass(eq=False)
class PollRange:
    """One range of the ``updated`` timeline the poll reads as its own chain of pages.

    Attributes:
        lo: profiles updated after this (exclusive); None: from the oldest.
        hi: ... and before this (exclusive); None: no end (the newest range).
        at: the ``updated`` of the last profile handled in it (None: none yet).
        done: its chain reached its end in this poll (not saved: a saved range is unfinished).
        fetched: the ``updated`` of the last profile fetched in it (this poll only; where a
            split may start).
    """

    lo: datetime | None = None
    hi: datetime | None = None
    at: datetime | None = None
    done: bool = False
    fetched: datetime | None = None

    def query_from(self, overlap: float) -> datetime | None:
        """Where its next query starts: its position less the overlap, never before ``lo``."""
        if self.at is None:
            return self.lo
        start = self.at - timedelta(seconds=overlap)
        return start if self.lo is None or start > self.lo else self.lo

    def filter(self, overlap: float) -> str | None:
        """Klaviyo's filter text for this range's chain (None: every profile)."""
        start = self.query_from(overlap)
        parts = [] if start is None else [f"greater-than(updated,{format_time(start)})"]
        if self.hi is not None:
            parts.append(f"less-than(updated,{format_time(self.hi)})")
        return ",".join(parts) or None

    def holds(self, updated: datetime) -> bool:
        return (self.lo is None or updated > self.lo) and (self.hi is None or updated < self.hi)

    def take(self, page: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
        """The profiles of a fetched page that are this range's, and whether the page went past
        its end (its ``hi`` may have moved down, by a split, since the request was sent)."""
        if self.hi is None:
            return page, False
        last = updated_of(page[-1]) if page else None
        if last is None or last < self.hi:
            return page, False
        keep = [r for r in page if (u := updated_of(r)) is None or u < self.hi]
        return keep, True

    def to_list(self) -> list[str | None]:
        return [format_time(t) if t else None for t in (self.lo, self.hi, self.at)]

    @classmethod
    def from_list(cls, raw: Any) -> PollRange:
        lo, hi, at = (parse_time(t) if t else None for t in list(raw)[:3])
        return cls(lo, hi, at)


@dataclass
class PollCursor:
    """Where the inbound poll stands.

    Attributes:
        name: the cursor's name in the hub (``cursor:<name>``).
        watermark: every profile whose ``updated`` is before this was handled (None: never polled).
        seen: profile id -> ``[updated, digest]`` for profiles handled inside the overlap window.
        retry: profile ids whose transfer failed and must be fetched again.
        overlap: seconds the next query reaches back before the watermark (>= 1).
        ranges: the ranges of the poll in progress (empty between complete polls).
    """

    name: str = "profiles"
    watermark: datetime | None = None
    seen: dict[str, list[str]] = field(default_factory=dict)
    retry: list[str] = field(default_factory=list)
    overlap: float = 2.0
    ranges: list[PollRange] = field(default_factory=list)

    @classmethod
    def load(cls, hub: HubStore, name: str = "profiles", *, overlap: float = 2.0) -> PollCursor:
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
        cursor.ranges = [PollRange.from_list(r) for r in data.get("ranges") or []]
        return cursor

    def save(self, hub: HubStore) -> None:
        """Write the cursor to the hub (one state value)."""
        hub.set_cursor(self.name, json.dumps(self.to_dict(), separators=(",", ":")))

    def to_dict(self) -> dict[str, Any]:
        self.settle()
        out: dict[str, Any] = {
            "watermark": format_time(self.watermark) if self.watermark else None,
            "seen": self.seen,
            "retry": self.retry,
        }
        live = self._live()
        if live:
            out["ranges"] = [r.to_list() for r in live]
        return out

    # -- ranges ------------------------------------------------------------------------

    def _live(self) -> list[PollRange]:
        """The ranges a later query may read again: the unfinished ones and the newest."""
        return [r for r in self.ranges if not r.done or r.hi is None] if self.unfinished() else []

    def unfinished(self) -> list[PollRange]:
        return [r for r in self.ranges if not r.done]

    def plan(self, since: datetime | None = None) -> list[PollRange]:
        """The ranges of this poll: the saved unfinished ones, or (none saved, or ``since`` given)
        one open range from where the next query starts, for :meth:`split` to divide."""
        if since is not None or not self.ranges:
            self.ranges = [PollRange(lo=self.query_from(since))]
        for r in self.ranges:
            r.done, r.fetched = False, None
        return self.ranges

    def settle(self) -> None:
        """Move the watermark to the smallest position of the unfinished ranges (never back);
        with every range done, to the newest profile handled, and forget the ranges."""
        if not self.ranges:
            return
        unfinished = self.unfinished()
        low: datetime | None
        if unfinished:
            positions = [r.at if r.at is not None else r.lo for r in unfinished]
            if any(p is None for p in positions):
                return
            low = min(p for p in positions if p is not None)
        else:
            handled = [r.at for r in self.ranges if r.at is not None]
            low = max(handled) if handled else None
            self.ranges = []
        if low is not None and (self.watermark is None or low > self.watermark):
            self.watermark = low

    def splittable(self, now: datetime, started: Collection[PollRange]) -> PollRange | None:
        """The started, unfinished range with the most of its span left to read (at least
        :data:`MIN_SPLIT`), or None.  Only a range that gave a page of profiles is split: one
        that gave none yet may be empty, and splitting it would only spend requests."""
        best, best_left = None, MIN_SPLIT
        for r in started:
            start = r.fetched
            end = r.hi or now
            if r.done or start is None or end - start < best_left:
                continue
            best, best_left = r, end - start
        return best

    def split(self, r: PollRange, pieces: int, now: datetime) -> list[PollRange]:
        """Divide what is left of ``r`` into up to ``pieces`` ranges of equal time; ``r`` keeps the
        first and the new ones are returned (in order, after it in :attr:`ranges`)."""
        start = r.fetched or r.lo
        end = r.hi or now
        if start is None or pieces < 2:
            return []
        first = _whole_second(start) + _SECOND  # above everything already fetched
        span = (_whole_second(end) - first).total_seconds()
        pieces = min(pieces, int(span))
        if pieces < 2:
            return []
        # span >= pieces, so the cuts are whole seconds, rising, after `first` and before `end`
        cuts = [first + timedelta(seconds=int(span * i // pieces)) for i in range(1, pieces)]
        new: list[PollRange] = []
        old_hi = r.hi
        for i, cut in enumerate(cuts):
            upper = cuts[i + 1] if i + 1 < len(cuts) else old_hi
            new.append(PollRange(lo=cut - _SECOND, hi=upper))
        if new:
            r.hi = cuts[0]
            where = self.ranges.index(r) + 1
            self.ranges[where:where] = new
        return new

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
                advance: bool = True, rng: PollRange | None = None) -> None:
        """Record a handled profile: it moves its range's position, or without a range the
        watermark (``advance``: only for profiles taken from the sorted stream), and joins the
        seen set, or (``failed``) goes on the retry list instead, so the same change met again
        is transferred again, not skipped."""
        if failed:
            self.seen.pop(profile_id, None)
        else:
            self.seen[profile_id] = list(mark)
        if advance and mark[0]:
            try:
                updated = parse_time(mark[0])
            except ValueError:
                updated = None
            if updated is not None and rng is not None:
                if rng.at is None or updated > rng.at:
                    rng.at = updated
            elif updated is not None and (self.watermark is None or updated > self.watermark):
                self.watermark = updated
        if failed:
            if profile_id not in self.retry:
                self.retry.append(profile_id)
        elif profile_id in self.retry:
            self.retry.remove(profile_id)

    def prune(self) -> None:
        """Forget seen entries no next query can return (at or before its start), and cap the set.

        With ranges, an entry stays while the range holding it may read it again: the
        range is unfinished (or the newest) and the entry is after the range's next start.
        """
        self.settle()
        live = self._live()
        starts = [(r, r.query_from(self.overlap)) for r in live]
        start = self.query_from()
        if live:
            # the newest profile handled in any range is where the watermark goes once all are done
            newest = max((r.at for r in self.ranges if r.at is not None), default=None)
            if newest is not None:
                starts.append((PollRange(), newest - timedelta(seconds=self.overlap)))
        if live or start is not None:
            keep: dict[str, list[str]] = {}
            for pid, (updated, digest) in self.seen.items():
                try:
                    u = parse_time(updated)
                except ValueError:
                    continue
                if live:
                    wanted = any(r.holds(u) and (s is None or u > s) for r, s in starts)
                else:
                    wanted = start is not None and u > start
                if wanted:
                    keep[pid] = [updated, digest]
            self.seen = keep
        if len(self.seen) > MAX_SEEN:
            ordered = sorted(self.seen.items(), key=lambda kv: kv[1][0])
            self.seen = dict(ordered[-MAX_SEEN:])


__all__ = ["MAX_SEEN", "MIN_SPLIT", "PollCursor", "PollRange", "fingerprint", "format_time", "parse_time",
           "updated_of"]
