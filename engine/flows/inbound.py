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
at the start of the next poll.  A page Klaviyo will not give (after the client's own
retries of 429s and 5xx) ends the poll early with the error logged; the cursor keeps
the profiles before it, so the next poll resumes there.

Profiles of a page are written in a worker thread while the next page is fetched,
so the hub's writes overlap Klaviyo's latency.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from engine.collection import CollectionSet
from engine.errors import InboundError, KlaviyoError, KlaviyoSyncError, Location, ProfileNotFoundError
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
        if not self._runnable():
            return self.summary.finish(self._calls())
        cursor = PollCursor.load(self.hub, self.cursor_name, overlap=self.overlap)
        await self._retry_failed(cursor, on_profile)
        flt = cursor.filter(since)
        if flt:
            self.summary.note(f"profiles updated after {flt[len('greater-than(updated,'):-1]}")
        pages = self.client.iter_profile_pages(filter=flt, sort="updated", page_size=self.page_size,
                                               additional_fields=list(ADDITIONAL_FIELDS))
        queue: asyncio.Queue[list[dict[str, Any]] | BaseException | None] = asyncio.Queue(maxsize=1)

        async def fetch() -> None:
            # Fetch the next page while the previous one is written.
            try:
                async for page in pages:
                    await queue.put(page)
                await queue.put(None)
            except (KlaviyoSyncError, OSError) as exc:
                await queue.put(exc)

        producer = asyncio.create_task(fetch())
        try:
            while not self._stop.is_set():
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    self._page_failed(item)
                    break
                await asyncio.to_thread(self._handle_page, item, cursor, on_profile)
        finally:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            await pages.aclose()
            await asyncio.to_thread(self._save, cursor)
        self.stopped = self._stop.is_set()
        if self.stopped:
            self.summary.note("stopped on request; the cursor was saved after the last profile handled")
        return self.summary.finish(self._calls())

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
            if self._stop.is_set():
                break
            self._handle(resource, cursor, on_profile, advance=True)
        self._save(cursor)

    def _handle(self, resource: Mapping[str, Any], cursor: PollCursor,
                on_profile: Callable[[ProfileResult | None], None] | None, *, advance: bool) -> ProfileResult | None:
        pid = str(resource.get("id") or "")
        mark = fingerprint(resource)
        if cursor.already_handled(pid, mark):
            cursor.handled(pid, mark, advance=advance)
            if on_profile:
                on_profile(None)
            return None
        result = self.transfer.transfer(resource)
        cursor.handled(pid, mark, failed=result.retry, advance=advance)
        if on_profile:
            on_profile(result)
        return result

    def _save(self, cursor: PollCursor) -> None:
        cursor.prune()
        cursor.save(self.hub)

    async def _retry_failed(self, cursor: PollCursor,
                            on_profile: Callable[[ProfileResult | None], None] | None) -> None:
        """Fetch and transfer again the profiles an earlier poll or sync could not."""
        for pid in list(cursor.retry):
            if self._stop.is_set():
                return
            try:
                resource = await self.client.get_profile(pid, additional_fields=list(ADDITIONAL_FIELDS))
            except KlaviyoError as exc:
                self._log_klaviyo(exc, pid)
                continue  # stays on the list
            if resource is None:
                self.hub.errors.log(INBOUND_FLOW, f"profile {pid} no longer exists in Klaviyo; it is not retried",
                                    level="warning", entity="Customer", klaviyo_id=pid, code="I003")
                self.summary.warnings += 1
                cursor.retry.remove(pid)
                continue
            await asyncio.to_thread(self._handle, resource, cursor, on_profile, advance=False)
        await asyncio.to_thread(self._save, cursor)

    def _page_failed(self, exc: BaseException) -> None:
        err = exc if isinstance(exc, KlaviyoSyncError) else KlaviyoError(f"{type(exc).__name__}: {exc}")
        self.error = err
        self.hub.errors.log(POLL_FLOW, err.message, code=err.code, detail=err.detail)
        self.summary.errors += 1
        self.summary.note("the poll ended early because Klaviyo did not answer; the next poll resumes "
                          "after the last profile handled")

    def _log_klaviyo(self, exc: KlaviyoError, pid: str) -> None:
        flow = self.transfer.add.title if self.transfer.add else INBOUND_FLOW
        self.hub.errors.log(flow, exc.message, entity="Customer", klaviyo_id=pid, code=exc.code, detail=exc.detail)
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

        A Klaviyo failure (after the client's retries) is logged, returned as ``failed``
        and the profile put on the poll's retry list.
        """
        try:
            pid = check_profile_id(profile_id)
        except InboundError as exc:
            self.hub.errors.log(INBOUND_FLOW, exc.message, code=exc.code)
            self.summary.errors += 1
            raise
        cursor_changed = False
        try:
            resource = await self.client.get_profile(pid, additional_fields=list(ADDITIONAL_FIELDS))
        except KlaviyoError as exc:
            self._log_klaviyo(exc, pid)
            result = ProfileResult(pid, "failed", flow=self.transfer.add.title if self.transfer.add else INBOUND_FLOW,
                                   messages=[exc.message], retry=True)
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
