"""The service at work: the scheduled poll, continuous dispatch, Manual Sync and retries.

One :class:`Service` per subscription a ``serve`` process runs or acts for.  It opens three
connections to the hub (a SQLite file, or the subscription's schema of a PostgreSQL hub), one per
kind of user, so no two threads share a connection mid-transaction:

- ``hub_in``: the poll and the Manual Sync pull (the inbound flow writes from a worker thread);
- ``hub_out``: dispatch, push and retries (on the event loop, as the ``dispatch`` command does);
- ``hub_api``: the API and the pages, used only from one worker thread (:meth:`Service.db`).

and one :class:`~engine.klaviyo.KlaviyoClient`, so the poll, dispatch and Manual Sync share
one rate budget.

:meth:`Service.start` starts the loops; a service never started (``serve --no-sync``, or another
subscription's service the process opened to act for it) runs no schedule: its Manual Sync,
push and retries still work, and workers do the polling and dispatching.

**Poll** (:meth:`Service._poll_loop`): one :meth:`InboundFlow.poll` every ``poll_interval``,
the same cursor as ``klaviyo-sync poll``.  **Dispatch** (:meth:`Service._dispatch_loop`): while
an outbound trigger is enabled, claim at most ``batch_size`` changes at a time, send them, and go
again at once while work is left; otherwise look at the queue every ``tick`` seconds (and at once
when the API writes), so a change written to the hub by anyone is sent within about a tick.

**Stopping** (:meth:`Service.stop`): no more claims, the poll stops after the profile in hand and
saves its cursor, the batch in flight is finished; what is still in flight after ``deadline``
seconds is cancelled and its claimed changes released (they are sent by the next run; re-sending
is harmless, as ``dispatch`` documents).  A process killed outright loses nothing either: its
claims come back when their lease runs out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from engine.collection import CollectionSet, load_collections
from engine.connect import TOKEN_SOURCES, open_client, open_hub
from engine.errors import (
    BadRequestError,
    CollectionSetError,
    HubNotFoundError,
    InternalServiceError,
    Location,
    UnprocessableRequestError,
)
from engine.flows import InboundFlow, OutboundReport, RunSummary, dispatch, push
from engine.flows.inbound import POLL_FLOW
from engine.flows.outbound import open_outbound_client
from engine.hub import QueuedChange, SqliteHub
from engine.settings import Settings, is_hub_url

T = TypeVar("T")

#: Width of one bucket of the outcome history kept in the hub (``service:outcomes`` state key).
BUCKET_SECONDS = 300
HISTORY_SECONDS = 24 * 3600
OUTCOMES_KEY = "service:outcomes"
DEFAULT_LEASE = 60.0
DEFAULT_BATCH = 50
DEFAULT_TICK = 0.25
FAILED = ("failed", "invalid")


class _ClaimTracker:
    """The hub as dispatch sees it, remembering which claimed changes are not yet acked or released.

    Everything is delegated to the hub; only the claims are noted so :meth:`release_all`
    can give back the changes of a batch that was cancelled at shutdown.
    """

    def __init__(self, hub: SqliteHub) -> None:
        self._hub = hub
        self.held: dict[int, QueuedChange] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hub, name)

    def claim_changes(self, limit: int = 100, *, lease_seconds: float = 300.0) -> list[QueuedChange]:
        changes = self._hub.claim_changes(limit, lease_seconds=lease_seconds)
        self.held.update((c.id, c) for c in changes)
        return changes

    def ack_change(self, change: QueuedChange | int) -> bool:
        self.held.pop(change.id if isinstance(change, QueuedChange) else change, None)
        return self._hub.ack_change(change)

    def release_change(self, change: QueuedChange | int, *, delay: float = 0.0, failed: bool = False) -> None:
        self.held.pop(change.id if isinstance(change, QueuedChange) else change, None)
        self._hub.release_change(change, delay=delay, failed=failed)

    def release_all(self) -> int:
        held, self.held = list(self.held.values()), {}
        for change in held:
            self._hub.release_change(change)
        return len(held)


class Service:
    """The scheduler and the operations the API and pages call.

    Args:
        settings: the subscription settings.
        hub_path: the hub file or PostgreSQL URL (default: the settings' ``hub``); on PostgreSQL
            the subscription is the settings' ``subscription``.
        lease_seconds: how long a claimed change stays reserved (a killed process's claims
            are sent again after it).
        batch_size: changes claimed at once.
        tick: seconds between looks at the queue when it was empty.
        client_overrides: keyword arguments for the Klaviyo client (tests shorten timeouts).

    Raises:
        CollectionSetError: a collection does not load (nothing starts, as with ``poll``).
        SettingsError: no Klaviyo credentials.
    """

    def __init__(self, settings: Settings, hub_path: str | Path | None = None, *,
                 lease_seconds: float = DEFAULT_LEASE, batch_size: int = DEFAULT_BATCH, tick: float = DEFAULT_TICK,
                 client_overrides: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.subscription = settings.subscription
        #: the hub as given: a SQLite file, or a PostgreSQL URL (never printed: see ``target``)
        self.location: str | Path = hub_path if isinstance(hub_path, Path) else \
            (str(hub_path) if hub_path else (settings.hub_url or settings.hub_path))
        if isinstance(self.location, str) and not is_hub_url(self.location):
            self.location = Path(self.location)
        #: the SQLite hub file; None on PostgreSQL
        self.hub_path: Path | None = self.location if isinstance(self.location, Path) else None
        #: whether the poll and dispatch loops run (set by :meth:`start`)
        self.syncing = False
        self.lease_seconds = lease_seconds
        self.batch_size = batch_size
        self.tick = tick
        self.client_overrides = dict(client_overrides or {})
        loaded = load_collections([settings.collections_dir])
        if loaded.errors:
            raise CollectionSetError(loaded.errors)
        self.collections: CollectionSet = loaded.collections
        self.inbound_titles = {c.title for c in self.collections if c.direction == "to_hub"}
        self.started = time.time()
        self.records: Counter[tuple[str, str]] = Counter()  # (flow, outcome) since start, for /metrics
        self.last_poll: dict[str, Any] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._poll_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._poll_flow: InboundFlow | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-api")
        self.hub_in = open_hub(settings, self.location)
        try:
            self.hub_out = open_hub(settings, self.location)
            self.hub_api = open_hub(settings, self.location)
        except BaseException:
            self.hub_in.close()
            raise
        self._claims = _ClaimTracker(self.hub_out)
        self.client = open_client(settings, self.hub_out, **self.client_overrides)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether the hub is a shared PostgreSQL database (else one SQLite file)."""
        return self.hub_path is None

    @property
    def target(self) -> str:
        """The hub's location for people (a PostgreSQL password masked)."""
        return str(self.hub_api.target)

    @property
    def dispatching(self) -> bool:
        """Whether continuous dispatch runs (the loops were started and an outbound trigger is enabled)."""
        return self.syncing and bool(self.settings.outbound_triggers.entities())

    def start(self) -> None:
        """Start the poll and dispatch loops on the running event loop."""
        self.syncing = True
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="poll"))
        if self.dispatching:
            self._tasks.append(asyncio.create_task(self._dispatch_loop(), name="dispatch"))

    async def stop(self, deadline: float = 7.0) -> dict[str, int]:
        """Stop claiming, let the work in hand finish (at most ``deadline`` s), save, close.

        Returns:
            ``{"released": n}``: claimed changes given back because their batch was cut short.
        """
        self._stopping.set()
        self._wake.set()
        if self._poll_flow is not None:
            self._poll_flow.request_stop()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=deadline)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        released = self._claims.release_all()
        await self.client.aclose()
        self._executor.shutdown(wait=True)
        for hub in (self.hub_in, self.hub_out, self.hub_api):
            hub.close()
        return {"released": released}

    def wake_dispatch(self) -> None:
        """Look at the queue now (an API write queued a change)."""
        self._wake.set()

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the API's worker thread (the only user of ``hub_api``)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # -- the loops ---------------------------------------------------------------------

    async def _sleep(self, seconds: float, *events: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(e.wait()) for e in (self._stopping, *events)]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            self._poll_now.clear()
            flow = InboundFlow(self.hub_in, self.client, self.collections, summary=RunSummary("poll"),
                               formula_settings=self.settings.for_formulas())
            self._poll_flow = flow
            started = time.time()
            try:
                await flow.poll()
            except Exception as exc:  # noqa: BLE001 - the service goes on; the next poll retries
                self.hub_out.errors.log(POLL_FLOW, f"the poll failed: {type(exc).__name__}: {exc}",
                                        code=InternalServiceError.code)
            finally:
                self._poll_flow = None
            self.record(flow.summary)
            self.last_poll = {"started": started, "finished": time.time(), "ok": flow.error is None,
                              "stopped": flow.stopped, "summary": flow.summary.to_dict()}
            if flow.stopped:
                return
            await self._sleep(self.settings.poll_interval, self._poll_now)

    async def _dispatch_loop(self) -> None:
        concurrency = max(8, 2 * self.settings.throttling.max_concurrency)
        while not self._stopping.is_set():
            self._wake.clear()
            if self.hub_out.queue_length():
                try:
                    report = await dispatch(self.settings, self._claims, self.client, self.collections,
                                            limit=self.batch_size, batch_size=self.batch_size,
                                            lease_seconds=self.lease_seconds, concurrency=concurrency)
                except Exception as exc:  # noqa: BLE001 - released below; the loop goes on
                    self._claims.release_all()
                    self.hub_out.errors.log("dispatch", f"the dispatch failed: {type(exc).__name__}: {exc}",
                                            code=InternalServiceError.code)
                    await self._sleep(5.0)
                    continue
                self.record(report.summary)
                if report.handled:
                    continue  # more may be waiting: go again at once
            await self._sleep(self.tick, self._wake)

    def poll_now(self) -> None:
        """Start the next poll now instead of at the next interval."""
        self._poll_now.set()

    # -- outcome history ---------------------------------------------------------------

    def record(self, summary: RunSummary) -> None:
        """Count a run's records (for /metrics, and per 5-minute bucket in the hub for the dashboard)."""
        counts = {flow: {o: n for o, n in c.items() if n} for flow, c in summary.counts.items()}
        counts = {f: c for f, c in counts.items() if c}
        if not counts:
            return
        for flow, c in counts.items():
            for outcome, n in c.items():
                self.records[(flow, outcome)] += n
        now = time.time()
        bucket = str(int(now // BUCKET_SECONDS * BUCKET_SECONDS))
        with self.hub_out.transaction():
            history = self.hub_out.get_state(OUTCOMES_KEY, {}) or {}
            history = {k: v for k, v in history.items() if float(k) >= now - HISTORY_SECONDS}
            slot = history.setdefault(bucket, {})
            for flow, c in counts.items():
                for outcome, n in c.items():
                    slot.setdefault(flow, {})
                    slot[flow][outcome] = slot[flow].get(outcome, 0) + n
            self.hub_out.set_state(OUTCOMES_KEY, history)

    # -- Manual Sync and retries -------------------------------------------------------

    async def pull(self, profile_id: str) -> dict[str, Any]:
        """Manual Sync of one Klaviyo profile into the hub (raises I002 / I003 as ``sync profile``)."""
        flow = InboundFlow(self.hub_in, self.client, self.collections, summary=RunSummary("sync profile"),
                           formula_settings=self.settings.for_formulas())
        result = await flow.sync_profile(profile_id)
        self.record(flow.summary)
        return {"result": result.to_dict(), "summary": flow.summary.to_dict(),
                "ok": result.outcome not in FAILED}

    async def push(self, entity: str, hub_id: int, *, dry_run: bool = False) -> OutboundReport:
        """Manual Sync of one hub Customer or Transaction; ``dry_run`` shows the decision and requests."""
        if entity not in ("Customer", "Transaction"):
            raise BadRequestError(f"entity must be Customer or Transaction, got {entity!r}")
        if not dry_run:
            report = await push(self.settings, self.hub_out, self.client, self.collections, entity, hub_id)
            self.record(report.summary)
            return report
        client, transport = open_outbound_client(self.settings, self.hub_out, dry_run=True, **self.client_overrides)
        async with client:
            return await push(self.settings, self.hub_out, client, self.collections, entity, hub_id,
                              dry_run=transport)

    async def retry(self, entry_id: int) -> dict[str, Any]:
        """Retry the record of an error-log entry; on success resolve that record's open entries.

        Outbound entries (a hub Customer or Transaction) are pushed again; inbound ones (a
        Klaviyo profile) are pulled again; an entry of the poll itself starts a poll now.

        Raises:
            HubNotFoundError: no such entry.
            UnprocessableRequestError: the entry names no record that can be retried.
        """
        entry = self.hub_out.errors.get(entry_id)
        if entry is None:
            raise HubNotFoundError(f"no error log entry with Id {entry_id}", location=Location(record_id=str(entry_id)))
        if entry["Flow"] == POLL_FLOW:
            if not self.syncing:
                raise UnprocessableRequestError(
                    f"error log entry {entry_id} is of the poll, and this serve does not poll subscription "
                    f"{self.subscription} (--no-sync, or another subscription's): the workers' next poll retries it")
            self.poll_now()
            return {"entry": entry_id, "action": "poll", "ok": True, "resolved": []}
        newest = max((e["Id"] for e in self.hub_out.errors.list(limit=1)), default=0)
        inbound = entry["Flow"] in self.inbound_titles or entry["Flow"] == "Klaviyo Profile TO Hub"
        same: Callable[[dict[str, Any]], bool]
        if inbound and entry["KlaviyoId"]:
            out = await self.pull(entry["KlaviyoId"])
            ok = bool(out["ok"])
            action: dict[str, Any] = {"action": "pull", "profile_id": entry["KlaviyoId"], "result": out["result"]}
            same = lambda e: e["KlaviyoId"] == entry["KlaviyoId"]  # noqa: E731
        elif entry["Entity"] in ("Customer", "Transaction") and entry["HubId"] is not None:
            report = await self.push(entry["Entity"], int(entry["HubId"]))
            result = report.results[0]
            errors = [e for r in (*result.prerequisites, result) for e in r.logs if e.level == "error"]
            ok = result.outcome not in FAILED and not errors
            action = {"action": "push", "entity": entry["Entity"], "hub_id": entry["HubId"], "result": result.to_dict()}
            same = lambda e: e["Entity"] == entry["Entity"] and e["HubId"] == entry["HubId"]  # noqa: E731
        else:
            raise UnprocessableRequestError(f"error log entry {entry_id} names no hub record or Klaviyo profile "
                                            "to retry")
        resolved: list[int] = []
        if ok:
            for e in self.hub_out.errors.list(unresolved_only=True, limit=None):
                # the record's entries from before this retry, of the same direction
                if e["Id"] <= newest and same(e) and \
                        (e["Flow"] in self.inbound_titles) == (entry["Flow"] in self.inbound_titles):
                    self.hub_out.errors.resolve(e["Id"])
                    resolved.append(e["Id"])
        return {"entry": entry_id, "ok": ok, "resolved": resolved, **action}

    # -- what the dashboard shows ------------------------------------------------------

    def connection_method(self) -> str:
        """"OAuth" when an OAuth connection is stored in the hub, "API key" when one is set, else "none"."""
        for factory in TOKEN_SOURCES:
            if factory(self.settings, self.hub_api) is not None:
                return "OAuth"
        return "API key" if self.settings.api_key is not None and self.settings.api_key.reveal() else "none"

    def client_stats(self) -> dict[str, Any]:
        stats = self.client.stats
        return {"requests": dict(stats.requests), "calls": dict(stats.calls), "retries": stats.total_retries,
                "retry_reasons": dict(stats.retry_reasons), "throttled_429": int(stats.retry_reasons.get("429", 0)),
                "total_requests": stats.total_requests}


__all__ = ["BUCKET_SECONDS", "DEFAULT_BATCH", "DEFAULT_LEASE", "OUTCOMES_KEY", "Service"]
