"""The inbound flows: Klaviyo profiles into hub Customers and Addresses (seed 001).

Klaviyo sends no change webhooks (limitation 1), so profiles reach the hub two ways:

- :meth:`InboundFlow.poll` (``klaviyo-sync poll``): every profile updated since the
  last poll, streamed page by page (``GET /api/profiles`` sorted by ``updated``,
  ``filter=greater-than(updated, ...)``, ``additional-fields[profile]=subscriptions``,
  100 per page), each one through :class:`~engine.flows._inbound_transfer.ProfileTransfer`.
  The cursor (:class:`~engine.flows._inbound_cursor.PollCursor`) is saved in the hub
  after every page and on a clean stop.
- :meth:`InboundFlow.sync_profile` (``klaviyo-sync sync profile ID``, the seeds' Manual
  Sync): one profile by its id, a ULID such as ``01H8TVABCDEF1234567890`` or an older
  numeric id such as ``44552``.

A profile whose transfer *failed* (Klaviyo or the hub unavailable, as opposed to bad
data, which is logged and final) is kept on the cursor's retry list and fetched again
at the start of the next poll; it leaves the list only once it is stored.  A page
Klaviyo will not give (after the client's own retries of 429s and 5xx), or gives in a
shape that is not a page of profiles, ends the poll early with the error logged; the
cursor keeps the profiles before it, so the next poll resumes there.  Two failures
are nobody's record's and stop the poll at once, with ``self.error`` set and the
retry list untouched: Klaviyo refusing the credentials (401/403, an OAuth connection
that cannot be refreshed) and a hub file another process keeps locked past the
hub's busy timeout (:class:`~engine.errors.HubLockedError`).

The ``updated`` timeline is read in disjoint ranges, each its own chain of pages
(:class:`~engine.flows._inbound_cursor.PollRange`), as many at once as the client
keeps requests of the L tier in flight (the tier's rate times the measured latency):
one chain waits for each page, so alone it cannot reach the tier's 700 pages a
minute.  The poll starts with one range from the cursor to now and splits the range
with the most left to read whenever fewer chains run than wanted.  Profiles of every
range's pages are written one page after another in one worker thread while the
chains fetch on, so the hub's writes overlap Klaviyo's latency; the queue between
them holds a few pages, so memory stays flat however many profiles there are.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from engine.catalog import ERROR_CALLING_KLAVIYO
from engine.collection import CollectionSet
from engine.errors import (
    HubError,
    HubLockedError,
    InboundError,
    KlaviyoError,
    KlaviyoSyncError,
    Location,
    ProfileIdError,
    ProfileNotFoundError,
    SinceError,
)
from engine.flows._failures import auth_stop_error, is_auth_failure, unexpected_failure
from engine.flows._inbound_cursor import PollCursor, PollRange, fingerprint, format_time, parse_time, updated_of
from engine.flows._inbound_transfer import INBOUND_FLOW, ProfileResult, ProfileTransfer, inbound_collection
from engine.flows.summary import RunSummary
from engine.hub import HubStore
from engine.hub._db import DB_ERRORS, describe
from engine.klaviyo import KlaviyoApi

PAGE_SIZE = 100
PROFILES_TIER = "L"  # GET /api/profiles
ADDITIONAL_FIELDS = ("subscriptions",)
#: Flow name in the error log for problems of the poll itself (a page Klaviyo would not give).
POLL_FLOW = "Poll Klaviyo Profiles TO Hub"
_PROFILE_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")

#: what storing a page may fail with: the database refused it, or the disk did
_STORE_ERRORS: tuple[type[Exception], ...] = (*DB_ERRORS, OSError)


def check_profile_id(profile_id: str) -> str:
    """The profile id, stripped, if it has a Klaviyo profile id's form (letters and digits).

    Both forms the seeds give pass: ``01H8TVABCDEF1234567890`` and ``44552``.

    Raises:
        ProfileIdError: I002, the text cannot be a profile id (it is never sent to Klaviyo).
    """
    pid = (profile_id or "").strip()
    if not _PROFILE_ID.match(pid):
        raise ProfileIdError(
            f"not a Klaviyo profile id: {pid[:70]!r} (expected letters and digits, e.g. "
            "01H8TVABCDEF1234567890 or 44552)", location=Location(record_id=pid[:70] or None))
    return pid


class InboundFlow:
    """Polls Klaviyo profiles, or syncs one, into the hub.

    Args:
        hub: the hub store.
        client: an open Klaviyo client (:class:`~engine.klaviyo.KlaviyoApi`).
        collections: the loaded collections.
        summary: counts go here (a fresh ``RunSummary("poll")`` when omitted).
        formula_settings: the secret-free ``settings`` dict formulas see.
        page_size: profiles per page (Klaviyo allows at most 100).
        overlap: seconds each poll reaches back before the watermark (at least 1; see
            :mod:`engine.flows._inbound_cursor`).
        cursor_name: the cursor's name in the hub (one per subscription).
        parallel: ranges read at once (None: as many as the client keeps requests of the
            profiles' tier in flight, which follows the tier's rate and the measured latency).
    """

    def __init__(self, hub: HubStore, client: KlaviyoApi, collections: CollectionSet, *,
                 summary: RunSummary | None = None, formula_settings: Mapping[str, Any] | None = None,
                 page_size: int = PAGE_SIZE, overlap: float = 2.0, cursor_name: str = "profiles",
                 parallel: int | None = None) -> None:
        self.hub = hub
        self.client = client
        self.collections = collections
        self.summary = summary or RunSummary("poll")
        self.transfer = ProfileTransfer(hub, collections, summary=self.summary, formula_settings=formula_settings)
        self.page_size = page_size
        self.overlap = overlap
        self.cursor_name = cursor_name
        self.parallel = parallel
        self.error: KlaviyoSyncError | None = None
        self.stopped = False
        self._recent: dict[str, datetime] = {}
        self._recent_from = datetime.max.replace(tzinfo=UTC)
        self.ranges_read = 0  # ranges of the last poll, and the most read at once
        self.most_at_once = 0
        self._stop = threading.Event()
        self._fatal = False  # credentials refused or hub locked: nothing more can be done this run
        self._cursor_stale = False  # a page's commit failed: the in-memory cursor passed unstored profiles

    # -- stopping ----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the profile in hand, save the cursor and return (Ctrl-C). Thread- and signal-safe."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # -- the poll ----------------------------------------------------------------------

    async def poll(self, *, since: datetime | None = None,
                   on_profile: Callable[[ProfileResult | None], None] | None = None) -> RunSummary:
        """One poll: retry earlier failures, then every profile updated since the cursor.

        Args:
            since: poll profiles updated after this time instead of the saved cursor
                (the cursor is still saved as the poll goes).
            on_profile: called (from a worker thread) after each profile, with its
                result, or None for a profile skipped as already handled.

        Returns:
            The run summary (also ``self.summary``).  ``self.error`` holds the Klaviyo
            error that ended the poll early, if any; ``self.stopped`` says it was stopped.
        """
        self.error = None
        self.stopped = False
        self._fatal = self._cursor_stale = False
        if not self._runnable():
            return self.summary.finish(self._calls())
        cursor = PollCursor.load(self.hub, self.cursor_name, overlap=self.overlap)
        await self._retry_failed(cursor, on_profile)
        if self._fatal:
            return self.summary.finish(self._calls())
        resumed = since is None and bool(cursor.ranges)
        ranges = cursor.plan(since)
        if resumed:
            self.summary.note(f"resuming the {len(ranges)} ranges of an unfinished poll")
        elif ranges[0].lo is not None:
            self.summary.note(f"profiles updated after {format_time(ranges[0].lo)}")
        now = datetime.now(UTC)
        # A profile changed during the poll can come twice, in an older range and the newest;
        # the newer change handled first must not be overwritten by the older (kept in memory:
        # Klaviyo returns each profile's current state, so an old one is never fetched again).
        self._recent_from = now - timedelta(seconds=max(1.0, self.overlap))
        self._recent = {}
        self.ranges_read = self.most_at_once = 0
        # Each chain has at most one page waiting (and the next one fetched): a few pages in all.
        queue: asyncio.Queue[tuple[PollRange, Any]] = asyncio.Queue()
        chains: dict[PollRange, _Chain] = {}
        try:
            while not self._halted():
                self._start_chains(cursor, chains, queue, now)
                if not chains:
                    break
                rng, item = await queue.get()
                chains[rng].waiting.release()
                if item is None:
                    rng.done = True
                    chains.pop(rng, None)
                    continue
                if isinstance(item, BaseException):
                    self._page_failed(item)
                    break
                await asyncio.to_thread(self._handle_page, item, rng, cursor, on_profile)
        finally:
            for chain in chains.values():
                chain.task.cancel()
            await asyncio.gather(*(c.task for c in chains.values()), return_exceptions=True)
            await asyncio.to_thread(self._save, cursor)
        if self.ranges_read > 1:
            self.summary.note(f"read in {self.ranges_read} ranges of updated times, up to {self.most_at_once} at once")
        self.stopped = self._stop.is_set()
        if self.stopped:
            self.summary.note("stopped on request; the cursor was saved after the last profile handled")
        return self.summary.finish(self._calls())

    def _parallel(self) -> int:
        """Chains of pages to read at once: the ``parallel`` given, else as many requests as the
        client keeps in flight for the profiles' tier (its rate times the measured latency)."""
        if self.parallel is not None:
            return max(1, self.parallel)
        limit: int = self.client.inflight_limit(PROFILES_TIER)
        return max(1, limit)

    def _start_chains(self, cursor: PollCursor, chains: dict[PollRange, _Chain],
                      queue: asyncio.Queue[tuple[PollRange, Any]], now: datetime) -> None:
        """Start a chain for each unstarted range, then split ranges while chains are fewer than wanted."""
        want = self._parallel()

        def start(rng: PollRange) -> None:
            waiting = asyncio.Semaphore(1)
            chains[rng] = _Chain(asyncio.create_task(self._chain(rng, cursor.overlap, queue, waiting)), waiting)
            self.ranges_read += 1
            self.most_at_once = max(self.most_at_once, len(chains))

        for rng in cursor.unfinished():
            if rng not in chains and len(chains) < want:
                start(rng)
        while len(chains) < want:
            wide = cursor.splittable(now, chains)
            if wide is None:
                return
            added = cursor.split(wide, want - len(chains) + 1, now)
            if not added:
                return
            for new in added:
                start(new)

    async def _chain(self, rng: PollRange, overlap: float, queue: asyncio.Queue[tuple[PollRange, Any]],
                     waiting: asyncio.Semaphore) -> None:
        """Fetch one range's pages onto the queue, then None; whatever ends the fetching early
        (any exception) goes on the queue instead, for the consumer.  ``waiting`` is taken for
        each item put and released when the consumer takes it: one page of a chain waits at most."""
        pages = self.client.iter_profile_pages(filter=rng.filter(overlap), sort="updated", page_size=self.page_size,
                                               additional_fields=list(ADDITIONAL_FIELDS))
        try:
            try:
                async for page in pages:
                    bad = _page_problem(page)
                    if bad:
                        raise KlaviyoError(f"{ERROR_CALLING_KLAVIYO}: the page of profiles Klaviyo "
                                           f"returned is not of the expected shape ({bad})")
                    keep, past = rng.take(page)
                    if keep:
                        rng.fetched = updated_of(keep[-1]) or rng.fetched
                        await waiting.acquire()
                        queue.put_nowait((rng, keep))
                    if past:
                        break
            finally:
                await pages.aclose()
            await waiting.acquire()
            queue.put_nowait((rng, None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, never lost
            await waiting.acquire()
            queue.put_nowait((rng, exc))

    def _halted(self) -> bool:
        """Stop requested, or the poll cannot go on (credentials refused, hub locked)."""
        return self._stop.is_set() or self._fatal

    def _runnable(self) -> bool:
        add, update = inbound_collection(self.collections, "add"), inbound_collection(self.collections, "update")
        if not any(c is not None and c.enabled for c in (add, update)):
            self.summary.note("the inbound Add and Update collections are disabled or missing: nothing was polled")
            return False
        return True

    def _handle_page(self, page: list[dict[str, Any]], rng: PollRange, cursor: PollCursor,
                     on_profile: Callable[[ProfileResult | None], None] | None) -> None:
        """Transfer each profile of a range's page, then save the cursor: one hub transaction (worker thread).

        The page's writes, its error-log rows and the cursor's advance commit together, so a
        crash before the commit loses all of them and the next poll fetches the page again:
        each profile is still stored exactly once, at one commit per page instead of one per
        profile.  Each profile keeps its own savepoint (a bad one undoes only itself).
        ``on_profile`` hears of the page's profiles once they are committed.  A commit the hub
        refuses (disk full, I/O error) stops the poll with the cursor as last saved.
        """
        done: list[ProfileResult | None] = []
        counts = {flow: Counter(c) for flow, c in self.summary.counts.items()}
        tallies = (self.summary.warnings, self.summary.errors)
        try:
            with self.hub.transaction():
                for resource in page:
                    if self._halted():
                        break
                    self._handle(resource, cursor, done.append, advance=True, rng=rng)
                cursor.prune()
                cursor.save(self.hub)
        except HubLockedError as exc:  # the page's first write waited in vain: nothing is written
            self._hub_locked(exc)
            return
        except _STORE_ERRORS as exc:
            self.summary.counts = counts  # nothing of the page is stored, its log entries neither
            self.summary.warnings, self.summary.errors = tallies
            self._not_stored(f"the hub could not store a page of {len(page)} profiles: {describe(exc)}",
                             "nothing of the page was written; the next poll fetches it again")
            return
        if on_profile:
            for result in done:
                on_profile(result)

    def _not_stored(self, message: str, detail: str) -> None:
        """The hub refused a write (disk full, I/O error): stop, keep the cursor as last saved."""
        self._fatal = self._cursor_stale = True
        self.error = HubError(message, detail=detail)
        self.summary.errors += 1
        self.summary.note("stopped: the hub could not store what the poll read; the cursor stays as last saved, "
                          "so the next poll goes on from there")

    def _handle(self, resource: Mapping[str, Any], cursor: PollCursor,
                on_profile: Callable[[ProfileResult | None], None] | None, *, advance: bool,
                rng: PollRange | None = None) -> ProfileResult | None:
        """Transfer one profile and record it on the cursor (on its range's position).

        ``advance=False`` (a profile from the retry list) always transfers: a retried change
        leaves the list only once stored, never because its fingerprint was seen.  A hub
        locked past its busy timeout stops the poll with the profile not recorded, so
        the watermark does not pass it.  A profile older than a change of it already
        handled in this poll (from another range) is skipped as handled.
        """
        pid = str(resource.get("id") or "")
        mark = fingerprint(resource)
        if advance and (cursor.already_handled(pid, mark) or self._superseded(pid, resource)):
            cursor.handled(pid, mark, advance=advance, rng=rng)
            if on_profile:
                on_profile(None)
            return None
        try:
            result = self.transfer.transfer(resource)
        except HubLockedError as exc:
            self._hub_locked(exc)
            return None
        cursor.handled(pid, mark, failed=result.retry, advance=advance, rng=rng)
        if not result.retry:
            updated = updated_of(resource)
            if updated is not None and updated >= self._recent_from:
                self._recent[pid] = updated
        if on_profile:
            on_profile(result)
        return result

    def _superseded(self, pid: str, resource: Mapping[str, Any]) -> bool:
        """A newer change of this profile was already stored in this poll."""
        newer = self._recent.get(pid)
        if newer is None:
            return False
        updated = updated_of(resource)
        return updated is not None and updated < newer

    def _save(self, cursor: PollCursor) -> None:
        """Save the cursor; with the hub locked the saved one stands (it never passed an unstored profile)."""
        if self._cursor_stale:  # a page it passed was not stored
            return
        cursor.prune()
        try:
            cursor.save(self.hub)
        except HubLockedError as exc:
            self._hub_locked(exc)
        except _STORE_ERRORS as exc:
            self._not_stored(f"the hub could not save the poll's cursor: {describe(exc)}",
                             "every profile stored stays stored; the next poll reads again from the cursor "
                             "last saved")

    async def _retry_failed(self, cursor: PollCursor,
                            on_profile: Callable[[ProfileResult | None], None] | None) -> None:
        """Fetch and transfer again the profiles an earlier poll or sync could not."""
        for pid in list(cursor.retry):
            if self._halted():
                break
            try:
                resource = await self.client.get_profile(pid, additional_fields=list(ADDITIONAL_FIELDS))
                if resource is not None and not _is_profile(resource):
                    raise KlaviyoError(f"{ERROR_CALLING_KLAVIYO}: the profile Klaviyo returned is not of the "
                                       f"expected shape ({_shape(resource)})", location=Location(record_id=pid))
            except KlaviyoSyncError as exc:
                if is_auth_failure(exc):
                    self._auth_stop(exc)
                    break
                self._log_klaviyo(exc, pid)
                continue  # stays on the list
            except Exception as exc:  # noqa: BLE001 - a wrong-shaped answer: this profile only, it stays listed
                self._log_klaviyo(KlaviyoError(unexpected_failure(exc), location=Location(record_id=pid)), pid)
                continue
            if resource is None:
                self._quietly(partial(
                    self.hub.errors.log, INBOUND_FLOW, f"profile {pid} no longer exists in Klaviyo; it is not retried",
                    level="warning", entity="Customer", klaviyo_id=pid, code=ProfileNotFoundError.code))
                self.summary.warnings += 1
                cursor.retry.remove(pid)
                continue
            await asyncio.to_thread(self._handle, resource, cursor, on_profile, advance=False)
        await asyncio.to_thread(self._save, cursor)

    def _page_failed(self, exc: BaseException) -> None:
        if is_auth_failure(exc):
            assert isinstance(exc, KlaviyoSyncError)
            self._auth_stop(exc)
            return
        if isinstance(exc, KlaviyoSyncError):
            err = exc
        else:
            err = KlaviyoError(unexpected_failure(exc))
        self.error = err
        self._quietly(lambda: self.hub.errors.log(POLL_FLOW, err.message, code=err.code, detail=err.detail))
        self.summary.errors += 1
        self.summary.note("the poll ended early because Klaviyo did not answer as expected; the next poll "
                          "resumes after the last profile handled")

    def _auth_stop(self, exc: KlaviyoSyncError) -> None:
        """Klaviyo refused the credentials: one error for the run, nothing more is fetched."""
        err = auth_stop_error(exc, "the poll stopped; the cursor stays after the last profile stored and "
                                   "the retry list is kept")
        self._fatal = True
        self.error = err
        self._quietly(lambda: self.hub.errors.log(POLL_FLOW, err.message, code=err.code, detail=err.detail))
        self.summary.errors += 1
        self.summary.note("stopped: Klaviyo refused the credentials")

    def _hub_locked(self, exc: HubLockedError) -> None:
        """The hub stayed locked past its busy timeout: stop, keep what is stored, report it once."""
        if self._fatal and isinstance(self.error, HubLockedError):
            return
        self._fatal = True
        self.error = exc
        self.summary.errors += 1
        self.summary.note("stopped: the hub file is locked by another process; the cursor stays after the "
                          "last profile stored, so the next poll goes on from there")

    def _quietly(self, write: Callable[[], Any]) -> None:
        """Write to the hub unless it is locked (then the poll stops and says so)."""
        try:
            write()
        except HubLockedError as exc:
            self._hub_locked(exc)

    def _log_klaviyo(self, exc: KlaviyoSyncError, pid: str) -> None:
        flow = self.transfer.add.title if self.transfer.add else INBOUND_FLOW
        self._quietly(lambda: self.hub.errors.log(flow, exc.message, entity="Customer", klaviyo_id=pid,
                                                  code=exc.code, detail=exc.detail))
        self.summary.errors += 1
        self.summary.count(flow, "failed")

    def _calls(self) -> dict[str, int]:
        """The client's calls per operation and its retries, for the summary."""
        stats = self.client.stats
        return {**dict(stats.calls), "retries": stats.total_retries}

    # -- Manual Sync -------------------------------------------------------------------

    async def sync_profile(self, profile_id: str) -> ProfileResult:
        """Transfer one profile now (the seeds' Manual Sync).

        Raises:
            ProfileIdError: I002, the id is not a profile id's form (logged).
            ProfileNotFoundError: I003, Klaviyo has no profile with this id (logged).
            KlaviyoAuthError: Klaviyo refused the credentials (logged once; nothing written).
            HubLockedError: the hub stayed locked past its busy timeout (nothing written).

        A Klaviyo failure (after the client's retries), including an answer that is not a
        profile, is logged, returned as ``failed`` and the profile put on the poll's retry list.
        """
        try:
            pid = check_profile_id(profile_id)
        except InboundError as exc:
            self.hub.errors.log(INBOUND_FLOW, exc.message, code=exc.code)
            self.summary.errors += 1
            raise
        cursor_changed = False
        flow = self.transfer.add.title if self.transfer.add else INBOUND_FLOW
        failure: KlaviyoSyncError | None = None
        resource: Any = None
        try:
            resource = await self.client.get_profile(pid, additional_fields=list(ADDITIONAL_FIELDS))
            if resource is not None and not _is_profile(resource):
                failure = KlaviyoError(f"{ERROR_CALLING_KLAVIYO}: the profile Klaviyo returned is not of the "
                                       f"expected shape ({_shape(resource)})", location=Location(record_id=pid))
        except KlaviyoSyncError as exc:
            if is_auth_failure(exc):
                err: KlaviyoSyncError = auth_stop_error(exc, f"profile {pid} was not synced")
                self.hub.errors.log(INBOUND_FLOW, err.message, entity="Customer", klaviyo_id=pid, code=err.code,
                                    detail=err.detail)
                self.summary.errors += 1
                self.summary.finish(self._calls())
                raise err.at(record_id=pid) from None
            failure = exc
        except Exception as exc:  # noqa: BLE001 - a wrong-shaped answer is this profile's failure, not a crash
            failure = KlaviyoError(unexpected_failure(exc), location=Location(record_id=pid))
        if failure is not None:
            failure.at(record_id=pid)
            self._log_klaviyo(failure, pid)
            result = ProfileResult(pid, "failed", flow=flow, messages=[str(failure)], retry=True)
        else:
            if resource is None:
                err = ProfileNotFoundError(f"Klaviyo has no profile with id {pid}",
                                           location=Location(record_id=pid))
                self.hub.errors.log(INBOUND_FLOW, err.message, entity="Customer", klaviyo_id=pid, code=err.code)
                self.summary.errors += 1
                self.summary.finish(self._calls())
                raise err
            result = await asyncio.to_thread(self.transfer.transfer, resource)
        cursor = PollCursor.load(self.hub, self.cursor_name, overlap=self.overlap)
        if result.retry and pid not in cursor.retry:
            cursor.retry.append(pid)
            cursor_changed = True
        elif not result.retry and pid in cursor.retry:
            cursor.retry.remove(pid)
            cursor_changed = True
        if cursor_changed:
            cursor.save(self.hub)
        self.summary.finish(self._calls())
        return result


@dataclass
class _Chain:
    """A range's fetching task and the permit its next page waits for."""

    task: asyncio.Task[None]
    waiting: asyncio.Semaphore


def _is_profile(resource: Any) -> bool:
    """A profile resource of the shape the transfer reads: an object with a string id."""
    return isinstance(resource, Mapping) and isinstance(resource.get("id"), str) and bool(resource["id"]) \
        and isinstance(resource.get("attributes", {}), Mapping)


def _shape(value: Any) -> str:
    """A short description of what came instead of a profile (never the whole value)."""
    if isinstance(value, Mapping):
        return f"an object with keys {', '.join(sorted(map(str, value))[:8]) or '(none)'}, without a usable id"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _page_problem(page: Any) -> str | None:
    """Why ``page`` is not a list of profile resources, or None when it is one."""
    if not isinstance(page, list):
        return f"expected a list of profiles, got {_shape(page)}"
    for i, resource in enumerate(page):
        if not _is_profile(resource):
            return f"entry {i} is {_shape(resource)}"
    return None


def parse_since(text: str) -> datetime:
    """``--since``: a date (``2024-05-01``) or an ISO time; naive means UTC.

    Raises:
        SinceError: I004, not a date or time.
    """
    try:
        return parse_time(text if "T" in text or " " in text.strip() else f"{text.strip()}T00:00:00")
    except ValueError:
        raise SinceError(f"--since must be a date or ISO time such as 2024-05-01 or 2024-05-01T10:00:00Z, "
                         f"got {text!r}") from None


__all__ = ["ADDITIONAL_FIELDS", "InboundFlow", "PAGE_SIZE", "POLL_FLOW", "ProfileResult", "ProfileTransfer",
           "check_profile_id", "format_time", "parse_since"]
