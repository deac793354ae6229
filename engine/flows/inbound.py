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

Profiles of a page are written in a worker thread while the next page is fetched,
so the hub's writes overlap Klaviyo's latency.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from engine.catalog import ERROR_CALLING_KLAVIYO
from engine.collection import CollectionSet
from engine.errors import (
    HubLockedError,
    InboundError,
    KlaviyoError,
    KlaviyoSyncError,
    Location,
    ProfileNotFoundError,
)
from engine.flows._failures import auth_stop_error, is_auth_failure, unexpected_failure
from engine.flows._inbound_cursor import PollCursor, fingerprint, format_time, parse_time
from engine.flows._inbound_transfer import INBOUND_FLOW, ProfileResult, ProfileTransfer, inbound_collection
from engine.flows.summary import RunSummary

PAGE_SIZE = 100
ADDITIONAL_FIELDS = ("subscriptions",)
#: Flow name in the error log for problems of the poll itself (a page Klaviyo would not give).
POLL_FLOW = "Poll Klaviyo Profiles TO Hub"
_PROFILE_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")


def check_profile_id(profile_id: str) -> str:
    """The profile id, stripped, if it has a Klaviyo profile id's form (letters and digits).

    Both forms the seeds give pass: ``01H8TVABCDEF1234567890`` and ``44552``.

    Raises:
        InboundError: I002, the text cannot be a profile id (it is never sent to Klaviyo).
    """
    pid = (profile_id or "").strip()
    if not _PROFILE_ID.match(pid):
        raise InboundError(
            f"not a Klaviyo profile id: {pid[:70]!r} (expected letters and digits, e.g. "
            "01H8TVABCDEF1234567890 or 44552)", code="I002", location=Location(record_id=pid[:70] or None))
    return pid


class InboundFlow:
    """Polls Klaviyo profiles, or syncs one, into the hub.

    Args:
        hub: the hub store.
        client: an open :class:`~engine.klaviyo.KlaviyoClient`.
        collections: the loaded collections.
        summary: counts go here (a fresh ``RunSummary("poll")`` when omitted).
        formula_settings: the secret-free ``settings`` dict formulas see.
        page_size: profiles per page (Klaviyo allows at most 100).
        overlap: seconds each poll reaches back before the watermark (at least 1; see
            :mod:`engine.flows._inbound_cursor`).
        cursor_name: the cursor's name in the hub (one per subscription).
    """

    def __init__(self, hub: Any, client: Any, collections: CollectionSet, *, summary: RunSummary | None = None,
                 formula_settings: Mapping[str, Any] | None = None, page_size: int = PAGE_SIZE,
                 overlap: float = 2.0, cursor_name: str = "profiles") -> None:
        self.hub = hub
        self.client = client
        self.collections = collections
        self.summary = summary or RunSummary("poll")
        self.transfer = ProfileTransfer(hub, collections, summary=self.summary, formula_settings=formula_settings)
        self.page_size = page_size
        self.overlap = overlap
        self.cursor_name = cursor_name
        self.error: KlaviyoSyncError | None = None
        self.stopped = False
        self._stop = threading.Event()
        self._fatal = False  # credentials refused or hub locked: nothing more can be done this run

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
        self._fatal = False
        if not self._runnable():
            return self.summary.finish(self._calls())
        cursor = PollCursor.load(self.hub, self.cursor_name, overlap=self.overlap)
        await self._retry_failed(cursor, on_profile)
        if self._fatal:
            return self.summary.finish(self._calls())
        flt = cursor.filter(since)
        if flt:
            self.summary.note(f"profiles updated after {flt[len('greater-than(updated,'):-1]}")
        pages = self.client.iter_profile_pages(filter=flt, sort="updated", page_size=self.page_size,
                                               additional_fields=list(ADDITIONAL_FIELDS))
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

        async def fetch() -> None:
            # Fetch the next page while the previous one is written.  Whatever ends the
            # fetching (the last page, any exception) is put on the queue for the consumer.
            try:
                async for page in pages:
                    await queue.put(page)
                await queue.put(None)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, never lost
                await queue.put(exc)

        producer = asyncio.create_task(fetch())
        try:
            while not self._halted():
                item = await self._next_page(queue, producer)
                if item is None:
                    break
                if isinstance(item, BaseException):
                    self._page_failed(item)
                    break
                bad = _page_problem(item)
                if bad:
                    self._page_failed(KlaviyoError(f"{ERROR_CALLING_KLAVIYO}: the page of profiles Klaviyo "
                                                   f"returned is not of the expected shape ({bad})"))
                    break
                await asyncio.to_thread(self._handle_page, item, cursor, on_profile)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            try:
                await pages.aclose()
            except Exception:  # noqa: BLE001, S110 - the fetcher's own failure was already handed over
                pass
            await asyncio.to_thread(self._save, cursor)
        self.stopped = self._stop.is_set()
        if self.stopped:
            self.summary.note("stopped on request; the cursor was saved after the last profile handled")
        return self.summary.finish(self._calls())

    @staticmethod
    async def _next_page(queue: asyncio.Queue[Any], producer: asyncio.Task[None]) -> Any:
        """The fetcher's next item; an error if the fetcher ended without handing one over
        (so the consumer can never wait for a page that will not come)."""
        if queue.empty() and not producer.done():
            getter = asyncio.ensure_future(queue.get())
            try:
                await asyncio.wait({getter, producer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not getter.done():
                    getter.cancel()  # a cancelled get leaves its item in the queue
            await asyncio.gather(getter, return_exceptions=True)
            if not getter.cancelled():
                return getter.result()
        if not queue.empty():
            return queue.get_nowait()
        exc = None if producer.cancelled() else producer.exception()
        return exc or KlaviyoError(f"{ERROR_CALLING_KLAVIYO}: fetching the pages of profiles stopped unexpectedly")

    def _halted(self) -> bool:
        """Stop requested, or the poll cannot go on (credentials refused, hub locked)."""
        return self._stop.is_set() or self._fatal

    def _runnable(self) -> bool:
        add, update = inbound_collection(self.collections, "add"), inbound_collection(self.collections, "update")
        if not any(c is not None and c.enabled for c in (add, update)):
            self.summary.note("the inbound Add and Update collections are disabled or missing: nothing was polled")
            return False
        return True

    def _handle_page(self, page: list[dict[str, Any]], cursor: PollCursor,
                     on_profile: Callable[[ProfileResult | None], None] | None) -> None:
        """Transfer each profile of a page (worker thread), then save the cursor."""
        for resource in page:
            if self._halted():
                break
            self._handle(resource, cursor, on_profile, advance=True)
        self._save(cursor)

    def _handle(self, resource: Mapping[str, Any], cursor: PollCursor,
                on_profile: Callable[[ProfileResult | None], None] | None, *, advance: bool) -> ProfileResult | None:
        """Transfer one profile and record it on the cursor.

        ``advance=False`` (a profile from the retry list) always transfers: a retried change
        leaves the list only once stored, never because its fingerprint was seen.  A hub
        locked past its busy timeout stops the poll with the profile not recorded, so
        the watermark does not pass it.
        """
        pid = str(resource.get("id") or "")
        mark = fingerprint(resource)
        if advance and cursor.already_handled(pid, mark):
            cursor.handled(pid, mark, advance=advance)
            if on_profile:
                on_profile(None)
            return None
        try:
            result = self.transfer.transfer(resource)
        except HubLockedError as exc:
            self._hub_locked(exc)
            return None
        cursor.handled(pid, mark, failed=result.retry, advance=advance)
        if on_profile:
            on_profile(result)
        return result

    def _save(self, cursor: PollCursor) -> None:
        """Save the cursor; with the hub locked the saved one stands (it never passed an unstored profile)."""
        cursor.prune()
        try:
            cursor.save(self.hub)
        except HubLockedError as exc:
            self._hub_locked(exc)

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
                    level="warning", entity="Customer", klaviyo_id=pid, code="I003"))
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
            InboundError: I002, the id is not a profile id's form (logged).
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
                err = ProfileNotFoundError(f"Klaviyo has no profile with id {pid}", code="I003",
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
        InboundError: I004, not a date or time.
    """
    try:
        return parse_time(text if "T" in text or " " in text.strip() else f"{text.strip()}T00:00:00")
    except ValueError:
        raise InboundError(f"--since must be a date or ISO time such as 2024-05-01 or 2024-05-01T10:00:00Z, "
                           f"got {text!r}", code="I004") from None


__all__ = ["ADDITIONAL_FIELDS", "InboundFlow", "PAGE_SIZE", "POLL_FLOW", "ProfileResult", "ProfileTransfer",
           "check_profile_id", "format_time", "parse_since"]
