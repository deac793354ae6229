"""What a worker process does for each job: open a subscription (once), poll, dispatch, schedule.

One :class:`WorkerRuntime` per ``klaviyo-sync worker`` process.  It knows every subscription's
settings (:mod:`engine.worker._subscriptions`) and opens a subscription the first time one of
its jobs runs here, keeping it open for the next (:class:`OpenSubscription`): its collections
(loaded once per folder, shared by the subscriptions that use it), its hub (``hub_out``: dispatch
and the error log, on the event loop), and one :class:`~engine.klaviyo.KlaviyoClient` shared by
its poll and its dispatches.  A poll writes from a worker thread through a hub connection of its
own, opened for the poll (a SQLite file keeps one connection per process: both use it).

A worker keeps at most ``max_open`` subscriptions open (default twice ``concurrency``), closing
the least recently used one no job is using: connections grow with the jobs a worker runs at
once, not with the subscriptions it serves (a database server allows a hundred connections by
default).  The scheduler reads every PostgreSQL subscription's queue length and last poll in one
query over one connection, without opening any of them.

A subscription that cannot be opened (a collection that does not load, no credentials, a hub
that cannot be reached) or whose job fails is logged to that subscription's hub error log when
its hub opens, else to the worker's log; the job ends normally and nothing else is affected.
An opening that failed is tried again after :data:`REOPEN_AFTER` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from procrastinate import App, exceptions

from engine.collection import CollectionSet, load_collections
from engine.connect import open_client, open_hub
from engine.errors import CollectionSetError, InternalServiceError
from engine.flows import InboundFlow, RunSummary, dispatch
from engine.flows.inbound import POLL_FLOW
from engine.hub._postgres import connect as pg_connect, queues_and_state
from engine.klaviyo import KlaviyoClient
from engine.service._runtime import _ClaimTracker
from engine.worker._jobs import retry_stalled_jobs
from engine.worker._subscriptions import Subscription

log = logging.getLogger("engine.worker")

#: The hub state key where a subscription's last poll is kept: ``{"started", "finished", "ok"}``.
POLL_STATE = "worker:poll"
#: Task names (the same in every worker: jobs name the task they run).
POLL_TASK = "klaviyo_sync.poll"
DISPATCH_TASK = "klaviyo_sync.dispatch"
SCHEDULE_TASK = "klaviyo_sync.schedule"
#: Seconds before a subscription that failed to open is tried again.
REOPEN_AFTER = 30.0
WORKER_FLOW = "worker"
DISPATCH_FLOW = "dispatch"


@dataclass(frozen=True)
class WorkerOptions:
    """The knobs of a worker process (the ``worker`` command's options; see docs/worker.md).

    Attributes:
        concurrency: jobs at once in this process.
        tick: seconds between scheduler runs (one per tick across all workers).
        lease: seconds a claimed change stays reserved; a killed worker's claims are sent
            again by another worker after it.
        batch: changes claimed at once by a dispatch job.
        heartbeat: seconds between this worker's heartbeats in the jobs database.
        stalled_after: seconds without a heartbeat after which a worker counts as dead and its
            jobs are put back in the queue.
        shutdown_timeout: seconds a stopping worker lets its jobs finish before it cancels them
            (their claimed changes are released).
        dispatch_slice: seconds one dispatch job sends before it ends and leaves the rest to the
            next job (so a long queue never pins a job slot).
        max_open: subscriptions kept open at most (0: twice ``concurrency``).
    """

    concurrency: int = 4
    tick: int = 2
    lease: float = 30.0
    batch: int = 25
    heartbeat: float = 5.0
    stalled_after: float = 30.0
    shutdown_timeout: float = 10.0
    dispatch_slice: float = 30.0
    max_open: int = 0  # 0: twice ``concurrency``


@dataclass
class OpenSubscription:
    """A subscription opened in this process: what its jobs use, kept for the next job."""

    sub: Subscription
    collections: CollectionSet
    hub_in: Any  # the poll's connection: hub_out itself for a SQLite file, else None (one per poll)
    hub_out: Any
    client: KlaviyoClient

    @property
    def dispatching(self) -> bool:
        """Whether its changes are sent (an outbound trigger is enabled)."""
        return bool(self.sub.settings.outbound_triggers.entities())

    def log_error(self, flow: str, message: str) -> None:
        """Log ``message`` to this subscription's hub error log (and the worker's log)."""
        log_to_hub(self.hub_out, self.sub.name, flow, message)


def log_to_hub(hub: Any, name: str, flow: str, message: str) -> None:
    """Log ``message`` to subscription ``name``'s hub error log and to the worker's log."""
    log.error("subscription %s: %s", name, message)
    try:
        hub.errors.log(flow, message, code=InternalServiceError.code)
    except Exception:  # noqa: BLE001 - the hub itself failed: the worker's log has it
        log.exception("subscription %s: the hub error log refused the entry", name)


@dataclass
class WorkerRuntime:
    """The subscriptions of one worker process and the bodies of its three tasks."""

    subscriptions: dict[str, Subscription]
    options: WorkerOptions
    app: App | None = None
    opened: dict[str, OpenSubscription] = field(default_factory=dict)
    failed: dict[str, float] = field(default_factory=dict)
    polls: set[InboundFlow] = field(default_factory=set)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    in_use: Counter[str] = field(default_factory=Counter)
    loaded: dict[Path, CollectionSet] = field(default_factory=dict)
    overview: dict[str, psycopg.Connection[Any]] = field(default_factory=dict)

    @property
    def max_open(self) -> int:
        """Subscriptions kept open at most."""
        return self.options.max_open or 2 * self.options.concurrency

    # -- opening and closing -------------------------------------------------------------

    def open(self, name: str) -> OpenSubscription | None:
        """The subscription ``name`` opened (once per process), or None if it cannot be (logged)."""
        if name in self.opened:
            self.opened[name] = self.opened.pop(name)  # the most recently used last
            return self.opened[name]
        sub = self.subscriptions.get(name)
        if sub is None:
            log.error("a job names subscription %r, which this worker's --subscriptions folder does not have", name)
            return None
        if time.monotonic() < self.failed.get(name, float("-inf")):
            return None
        settings = sub.settings
        hubs: list[Any] = []
        try:
            hubs.append(open_hub(settings))
            collections = self.loaded.get(settings.collections_dir)
            if collections is None:
                loaded = load_collections([settings.collections_dir])
                if loaded.errors:
                    raise CollectionSetError(loaded.errors)
                collections = self.loaded[settings.collections_dir] = loaded.collections
            client = open_client(settings, hubs[0])
        except Exception as exc:  # noqa: BLE001 - one subscription's problem, logged below
            self.failed[name] = time.monotonic() + REOPEN_AFTER
            message = f"subscription {name} ({sub.file}) cannot be opened: {type(exc).__name__}: {exc}"
            if hubs:
                log_to_hub(hubs[0], name, WORKER_FLOW, message)
            else:
                log.error("%s", message)
            for hub in {id(h): h for h in hubs}.values():
                hub.close()
            return None
        self.failed.pop(name, None)
        opened = OpenSubscription(sub, collections, hub_in=hubs[0] if settings.hub_url is None else None,
                                  hub_out=hubs[0], client=client)
        self.opened[name] = opened
        return opened

    @asynccontextmanager
    async def using(self, name: str) -> AsyncIterator[OpenSubscription | None]:
        """The subscription opened for one job; afterwards the least recently used idle ones beyond
        ``max_open`` are closed."""
        self.in_use[name] += 1
        try:
            yield self.open(name)
        finally:
            self.in_use[name] -= 1
            await self._evict()

    async def _evict(self) -> None:
        for name in list(self.opened):
            if len(self.opened) <= self.max_open:
                return
            if not self.in_use[name]:
                await self._close(self.opened.pop(name))

    @staticmethod
    async def _close(sub: OpenSubscription) -> None:
        try:
            await sub.client.aclose()
        finally:
            sub.hub_out.close()

    def stop(self) -> None:
        """Ask the jobs in hand to wind up: polls save their cursor, dispatches claim no more."""
        self.stopping.set()
        for flow in list(self.polls):
            flow.request_stop()

    async def close(self) -> None:
        """Close every opened subscription's client and hubs."""
        opened, self.opened = list(self.opened.values()), {}
        for sub in opened:
            await self._close(sub)
        for conn in self.overview.values():
            conn.close()
        self.overview.clear()

    # -- the tasks -----------------------------------------------------------------------

    async def poll(self, name: str) -> None:
        """One poll of the subscription (the ``poll`` command's cursor), at most one at a time."""
        async with self.using(name) as sub:
            if sub is not None and not self.stopping.is_set():
                await self._poll(name, sub)

    async def _poll(self, name: str, sub: OpenSubscription) -> None:
        settings = sub.sub.settings
        started = time.time()
        state = {"started": started, "finished": None, "ok": None}
        hub_in = sub.hub_in
        if hub_in is None:
            try:
                hub_in = await asyncio.to_thread(open_hub, settings)
            except Exception as exc:  # noqa: BLE001 - logged; the next scheduled poll tries again
                sub.log_error(POLL_FLOW, f"the poll cannot open the hub: {type(exc).__name__}: {exc}")
                return
        try:
            await asyncio.to_thread(hub_in.set_state, POLL_STATE, state)
            flow = InboundFlow(hub_in, sub.client, sub.collections, summary=RunSummary("poll"),
                               formula_settings=settings.for_formulas())
            self.polls.add(flow)
            ok = False
            try:
                await flow.poll()
                ok = flow.error is None
            except Exception as exc:  # noqa: BLE001 - logged; the next poll resumes from the cursor
                sub.log_error(POLL_FLOW, f"the poll failed: {type(exc).__name__}: {exc}")
            finally:
                self.polls.discard(flow)
            state.update(finished=time.time(), ok=ok)
            await asyncio.to_thread(hub_in.set_state, POLL_STATE, state)
        finally:
            if hub_in is not sub.hub_in:
                hub_in.close()
        log.info("subscription %s: poll %s in %.1f s", name, "done" if ok else "ended early", time.time() - started)

    async def dispatch(self, name: str) -> None:
        """Send the subscription's queued changes for up to ``dispatch_slice`` seconds.

        Claims make several dispatch jobs of one subscription safe at once (each change is
        leased to one of them); when more is queued than one batch, another dispatch job is
        deferred first, so idle workers join in.
        """
        async with self.using(name) as sub:
            if sub is not None and sub.dispatching and not self.stopping.is_set():
                await self._dispatch(name, sub)

    async def _dispatch(self, name: str, sub: OpenSubscription) -> None:
        opts = self.options
        settings = sub.sub.settings
        claims = _ClaimTracker(sub.hub_out)
        if sub.hub_out.queue_length() > opts.batch:
            await self.defer(DISPATCH_TASK, name)
        end = time.monotonic() + opts.dispatch_slice
        try:
            while not self.stopping.is_set() and time.monotonic() < end:
                report = await dispatch(settings, claims, sub.client, sub.collections, limit=opts.batch,
                                        batch_size=opts.batch, lease_seconds=opts.lease,
                                        concurrency=max(8, 2 * settings.throttling.max_concurrency))
                if not report.handled or report.error is not None:
                    break
        except asyncio.CancelledError:  # the worker stops past its shutdown timeout
            released = claims.release_all()
            log.warning("subscription %s: dispatch cancelled; %d claimed change(s) released", name, released)
            raise
        except Exception as exc:  # noqa: BLE001 - released and logged; the next dispatch job retries
            claims.release_all()
            sub.log_error(DISPATCH_FLOW, f"the dispatch failed: {type(exc).__name__}: {exc}")

    async def schedule(self) -> None:
        """The scheduler: put back stalled jobs, then defer each subscription's due poll and dispatch."""
        if self.app is None or self.stopping.is_set():
            return
        await retry_stalled_jobs(self.app, self.options.stalled_after)
        now = time.time()
        for name, (queued, state) in (await self._look()).items():
            settings = self.subscriptions[name].settings
            state = state if isinstance(state, dict) else {}
            try:
                if now - float(state.get("started") or 0.0) >= settings.poll_interval:
                    await self.defer(POLL_TASK, name, lock=True)
                if queued and settings.outbound_triggers.entities():
                    await self.defer(DISPATCH_TASK, name)
            except Exception as exc:  # noqa: BLE001 - one subscription's problem: the others go on
                log.error("subscription %s: the scheduler failed: %s: %s", name, type(exc).__name__, exc)
        await self._evict()

    async def _look(self) -> dict[str, tuple[int, Any]]:
        """Every subscription's queue length and last poll: one query per PostgreSQL database, the
        hub itself for a SQLite file (opened as for a job)."""
        found: dict[str, tuple[int, Any]] = {}
        by_url: dict[str, list[str]] = {}
        for name, sub in self.subscriptions.items():
            if sub.settings.hub_url:
                by_url.setdefault(sub.settings.hub_url, []).append(name)
                continue
            opened = self.open(name)
            if opened is not None:
                try:
                    found[name] = (opened.hub_out.queue_length(), opened.hub_out.get_state(POLL_STATE))
                except Exception as exc:  # noqa: BLE001 - logged; the next tick looks again
                    opened.log_error(WORKER_FLOW, f"the scheduler failed: {type(exc).__name__}: {exc}")
        for url, names in by_url.items():
            try:
                found.update(await asyncio.to_thread(self._look_in, url, names))
            except Exception as exc:  # noqa: BLE001 - the database is down: logged, the next tick looks again
                log.error("the scheduler cannot read the subscriptions' queues: %s: %s", type(exc).__name__, exc)
        return found

    def _look_in(self, url: str, names: list[str]) -> dict[str, tuple[int, Any]]:
        conn = self.overview.get(url)
        if conn is None or conn.broken or conn.closed:
            conn = self.overview[url] = pg_connect(url)
        return queues_and_state(conn, names, POLL_STATE)

    async def defer(self, task: str, name: str, *, lock: bool = False) -> bool:
        """Defer ``task`` for subscription ``name`` unless one already waits; True if deferred."""
        assert self.app is not None
        key = f"{task}:{name}"
        try:
            await self.app.configure_task(task, queueing_lock=key, lock=key if lock else None).defer_async(
                subscription=name)
        except exceptions.AlreadyEnqueued:
            return False
        return True


__all__ = ["DISPATCH_TASK", "POLL_STATE", "POLL_TASK", "SCHEDULE_TASK", "WorkerOptions", "WorkerRuntime"]
