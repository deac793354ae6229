"""The outbound flows: queued hub changes (and manual pushes) to Klaviyo.

Entry points (the CLI's ``dispatch`` and ``push``):

* :func:`dispatch` -- send every queued change.  Changes are **claimed with a
  lease** (``hub.claim_changes``), sent in batches, and each is **acknowledged
  only when it was sent or its error logged**, in one hub transaction with the
  record's external-id links and error-log entries.  A process killed midway
  loses nothing: what it claimed but did not acknowledge is claimable again when
  the lease runs out, and re-sending is harmless (profiles are matched and
  patched, events carry deterministic unique ids).  A failure that may pass
  (Klaviyo unreachable, 5xx, 429 after the client's retries, an answer that could
  not be read) releases the change for a later attempt, up to ``max_attempts``
  failed sends (a claim that sent nothing is no attempt); then its error is
  logged and it is acknowledged.  A **401/403** (or an OAuth connection that
  cannot be refreshed) is no record's fault: the run stops claiming, gives every
  change it had not delivered back to the queue untouched (no attempt counted,
  nothing logged as failed), logs one error for the run and returns it as
  :attr:`OutboundReport.error`.
* :func:`push` -- the seeds' Manual Sync: one Customer or Transaction by hub id.

Both accept a :class:`~engine.flows._outbound_dryrun.DryRunTransport`: the same
flows run, writes are recorded instead of sent, the hub is not written and the
queue is not claimed.

The per-record work lives in :mod:`._outbound_profiles` (Customers),
:mod:`._outbound_orders` (Transactions) and :mod:`._outbound_consent` (lists and
consent, batched); results are :class:`~._outbound_records.RecordResult`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.collection import Collection, CollectionSet
from engine.errors import HubNotFoundError, KlaviyoSyncError
from engine.flows._failures import auth_stop_error
from engine.flows._outbound_consent import ConsentBatch, ListResolver
from engine.flows._outbound_dryrun import DryRunTransport
from engine.flows._outbound_orders import AnswerResolver, OrderFlow
from engine.flows._outbound_profiles import ProfileFlow
from engine.flows._outbound_records import CODE_NOT_FOUND, RecordResult
from engine.flows.summary import NOT_SENT, RunSummary
from engine.formula.helpers import bind_helpers
from engine.hub import HubStore, QueuedChange
from engine.klaviyo import KlaviyoApi, KlaviyoClient
from engine.runner import Runner
from engine.settings import Settings

NO_EVENTS_NOTE = "Generate Events is FALSE: no events were sent"
DEFAULT_BATCH = 500
#: a dispatch report holds at most this many records' results (memory stays flat on a queue of
#: millions); the rest are counted in ``omitted``; the summary counts every record and the
#: error log holds every problem
RESULTS_KEPT = 10_000
DEFAULT_LEASE = 300.0
DEFAULT_MAX_ATTEMPTS = 5
RETRY_DELAY = 30.0
#: Flow name in the error log for a problem of the run itself (the credentials were refused).
DISPATCH_FLOW = "Send hub changes TO Klaviyo"
#: A callback told of each record's result as soon as it is known (a progress display).
OnRecord = Callable[[RecordResult], None]


def outbound_collection(collections: CollectionSet, entity: str, action: str, *,
                        parent: bool = False) -> Collection | None:
    """The first enabled to-Klaviyo collection of ``entity`` and ``action`` (add/update), top-level
    or (``parent=True``) a child; None when there is none."""
    for c in collections:
        if (c.direction == "to_klaviyo" and c.hub_entity == entity and c.action == action and c.enabled
                and (c.parent is None) != parent):
            return c
    return None


@dataclass
class OutboundReport:
    """What a dispatch or push did: the run summary, every record's result, and the error
    that stopped the run (Klaviyo refused the credentials), if one did."""

    summary: RunSummary
    results: list[RecordResult] = field(default_factory=list)
    dry_run: bool = False
    error: KlaviyoSyncError | None = None
    #: records handled (``results`` holds the first :data:`RESULTS_KEPT` of them)
    handled: int = 0
    #: records handled whose results were not kept
    omitted: int = 0

    def keep(self, results: list[RecordResult]) -> None:
        """Count ``results`` and keep them while there is room."""
        self.handled += len(results)
        room = max(0, RESULTS_KEPT - len(self.results))
        self.results.extend(results[:room])
        self.omitted += max(0, len(results) - room)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.summary.to_dict(), "dry_run": self.dry_run,
               "records": [r.to_dict() for r in self.results]}
        if self.omitted:
            out["records_omitted"] = self.omitted
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out


class Outbound:
    """The outbound flows for one run: one client, one hub, the loaded collections.

    Args:
        settings: subscription settings (Generate Events, revision...).
        hub: the hub store.
        client: the Klaviyo client (built on ``dry_run`` for a dry run).
        collections: the loaded collections (the enabled ``to_klaviyo`` ones are used).
        dry_run: the client's recording transport, or None for a real run.
        concurrency: records in flight at once (HTTP concurrency is the client's own).
        max_attempts: failed sends before a transient failure is logged and acknowledged.
        on_record: called with each record's result as soon as it is known (before the batch
            is committed), e.g. for a progress display.
    """

    def __init__(self, settings: Settings, hub: HubStore, client: KlaviyoApi, collections: CollectionSet, *,
                 dry_run: DryRunTransport | None = None, concurrency: int = 32,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, on_record: OnRecord | None = None) -> None:
        self.settings = settings
        self.hub = hub
        self.client = client
        self.dry_run = dry_run
        self.concurrency = 1 if dry_run is not None else max(1, concurrency)
        self.max_attempts = max_attempts
        self.on_record = on_record
        self.resolver = AnswerResolver()
        self.runner = Runner(collections, functions=bind_helpers(self.resolver), settings=settings.for_formulas())
        self.add = outbound_collection(collections, "Customer", "add")
        self.update = outbound_collection(collections, "Customer", "update")
        self.placed = outbound_collection(collections, "Transaction", "add")
        self.lists = ListResolver(client)
        self._memo: dict[int, asyncio.Task[RecordResult]] = {}
        self._consent = ConsentBatch(client, self.lists)
        #: lowercased email -> profile id of the batch's unlinked Customers that Klaviyo holds
        self._known: dict[str, str] = {}
        #: Set when Klaviyo refused the credentials: no record is started after it.
        self.auth_error: KlaviyoSyncError | None = None

    # -- one record -------------------------------------------------------------------

    def _profiles(self) -> ProfileFlow | None:
        if self.add is None and self.update is None:
            return None
        return ProfileFlow(self.client, self.runner, self.add, self.update, self._consent, self.hub, self._known)

    async def _ensure_customer(self, customer: dict[str, Any]) -> tuple[RecordResult, bool]:
        """Transfer a Customer once per batch; (result, whether the caller created the task)."""
        cid = int(customer["Id"])
        task = self._memo.get(cid)
        owned = task is None
        if task is None:
            flow = self._profiles()
            if flow is None:
                res = RecordResult("Customer", cid, "Add Klaviyo Profile FROM Hub", outcome="skipped",
                                   decision="no enabled outbound profile collection")
                return res, True
            task = asyncio.ensure_future(flow.send(customer, self.hub.get_klaviyo_id("Customer", cid)))
            self._memo[cid] = task
        return await task, owned

    async def _one(self, entity: str, hub_id: int) -> RecordResult:
        if entity == "Customer":
            customer = self.hub.get_customer(hub_id)
            if customer is None:
                return self._missing(entity, hub_id)
            result, _ = await self._ensure_customer(customer)
            return result
        tx = self.hub.get_transaction(hub_id)
        if tx is None:
            return self._missing(entity, hub_id)
        if self.placed is None:
            return RecordResult(entity, hub_id, "Add Klaviyo Placed Order Event FROM Hub", outcome="skipped",
                                decision="no enabled Placed Order collection")
        orders = OrderFlow(self.client, self.runner, self.resolver, self.placed, self.hub,
                           self._ensure_customer, self.settings.generate_events)
        return await orders.send(tx)

    @staticmethod
    def _missing(entity: str, hub_id: int) -> RecordResult:
        result = RecordResult(entity, hub_id, f"{entity} dispatch", outcome="skipped")
        result.log(f"{entity} dispatch", f"{entity} {hub_id} is not in the hub (deleted after it was queued)",
                   level="warning", code=CODE_NOT_FOUND)
        return result

    async def _look_up_emails(self, items: list[tuple[str, int]]) -> None:
        """Find, in one call per 100, which unlinked Customers of the batch Klaviyo already holds.

        Only where it saves calls: before ``profile-import`` (2024-02-15), where an existing
        profile otherwise costs POST -> 409 -> PATCH, and for two unlinked Customers or more
        (for one, the lookup costs what it saves).  A lookup that fails only costs the calls it
        would have saved.  A dry run makes the same lookup (a read), so its writes are the dispatch's.
        """
        self._known = {}
        if self.add is None or self.client.supports("profile_import"):
            return
        emails = []
        for entity, hub_id in items:
            if entity != "Customer" or self.hub.get_klaviyo_id("Customer", hub_id) is not None:
                continue
            customer = self.hub.get_customer(hub_id)
            email = customer.get("EmailAddress") if customer else None
            if isinstance(email, str) and email.strip():
                emails.append(email)
        if len(emails) < 2:
            return
        if self.dry_run is not None:
            self.dry_run.sink = []  # the batch's read, shown on no record
        try:
            self._known = await self.client.find_profile_ids_by_email(emails)
        except KlaviyoSyncError:
            self._known = {}

    async def run_batch(self, items: list[tuple[str, int]]) -> list[RecordResult]:
        """Send records (entity, hub id); lists and consent are flushed once at the end."""
        self._memo = {}
        await self._look_up_emails(items)
        sem = asyncio.Semaphore(self.concurrency)

        async def guarded(entity: str, hub_id: int) -> RecordResult:
            async with sem:
                if self.auth_error is not None:
                    return self._not_sent(entity, hub_id)
                try:
                    if self.dry_run is None:
                        result = await self._one(entity, hub_id)
                    else:
                        # A dry run goes one record at a time so each record shows its own requests.
                        sink: list[Any] = []
                        self.dry_run.sink = sink
                        result = await self._one(entity, hub_id)
                        await self._consent.flush()
                        result.requests = sink
                except Exception as exc:  # noqa: BLE001 - one record's surprise never stops the batch
                    result = RecordResult(entity, hub_id, f"{entity} dispatch")
                    result.log_unexpected(result.flow, exc)
                self._note_stop(result)
                if self.on_record is not None:
                    self.on_record(result)
                return result

        results = list(await asyncio.gather(*(guarded(e, h) for e, h in items)))
        await self._consent.flush()
        for result in results:
            self._note_stop(result)
        return results

    def _note_stop(self, result: RecordResult) -> None:
        if self.auth_error is None and result.stopped_by is not None:
            self.auth_error = result.stopped_by

    def _not_sent(self, entity: str, hub_id: int) -> RecordResult:
        """A record not started because Klaviyo refused the credentials earlier in the run."""
        result = RecordResult(entity, hub_id, f"{entity} dispatch", outcome=NOT_SENT,
                              decision="not sent: Klaviyo refused the credentials earlier in this run")
        result.auth_error = self.auth_error
        return result

    # -- committing ---------------------------------------------------------------------

    def commit(self, result: RecordResult, change: QueuedChange | None, done: set[int]) -> bool:
        """Write links and log entries, and ack (or release) the change, in one hub transaction.

        A record stopped by refused credentials keeps the links it learnt but logs
        nothing, and its change goes back to the queue as it was.  Returns True when
        the change was acknowledged (or there was none).
        """
        stopped = result.stopped_by is not None
        attempt = 1 if change is None else change.attempts + 1
        final = not stopped and (not result.transient or change is None or attempt >= self.max_attempts)
        with self.hub.transaction(flat=True):
            for r in (*result.prerequisites, result):
                if id(r) in done:
                    continue
                done.add(id(r))
                for e in ([] if r.auth_error is not None else r.logs):
                    level = e.level if final or stopped else "warning"
                    detail = e.detail if final or stopped else \
                        f"{e.detail or ''} (will retry: attempt {attempt} of {self.max_attempts})".strip()
                    self.hub.errors.log(e.flow, e.message, level=level, entity=e.entity, hub_id=e.hub_id,
                                        klaviyo_id=e.klaviyo_id, detail=detail, code=e.code)
                for entity, hub_id, klaviyo_id in r.links:
                    self.hub.set_link(entity, hub_id, klaviyo_id)
                for version in r.versions:
                    self.hub.record_transaction_version(**version)
            if change is not None:
                if stopped:
                    self.hub.release_change(change)
                elif final:
                    self.hub.ack_change(change)
                else:
                    self.hub.release_change(change, delay=RETRY_DELAY * attempt, failed=True)
        return final or change is None

    def stop_error(self, report: OutboundReport, left: str) -> None:
        """Log the one error of a run stopped by refused credentials and put it on the report."""
        assert self.auth_error is not None
        err = auth_stop_error(self.auth_error, left)
        self.hub.errors.log(DISPATCH_FLOW, err.message, code=err.code, detail=err.detail)
        report.error = err
        report.summary.errors += 1
        report.summary.note(f"stopped: Klaviyo refused the credentials ({left})")

    def count(self, summary: RunSummary, result: RecordResult, done: set[int]) -> None:
        for r in (*result.prerequisites, result):
            if id(r) in done:
                continue
            done.add(id(r))
            if r.auth_error is not None:
                continue  # not sent, not failed: back in the queue
            summary.count(r.flow, r.outcome)
            for flow, outcome in r.counts:
                summary.count(flow, outcome)
            summary.warnings += sum(1 for e in r.logs if e.level == "warning")
            summary.errors += sum(1 for e in r.logs if e.level == "error")
            if r.entity == "Transaction" and r.outcome == "skipped" and not self.settings.generate_events:
                summary.note(NO_EVENTS_NOTE)


async def dispatch(settings: Settings, hub: HubStore, client: KlaviyoApi, collections: CollectionSet, *,
                   limit: int | None = None, batch_size: int = DEFAULT_BATCH, lease_seconds: float = DEFAULT_LEASE,
                   dry_run: DryRunTransport | None = None, concurrency: int = 32,
                   max_attempts: int = DEFAULT_MAX_ATTEMPTS, on_record: OnRecord | None = None) -> OutboundReport:
    """Send queued outbound changes (all, or ``limit`` of them). See the module docstring.

    ``on_record`` is called with each record's result as soon as it is known (a progress display).

    Returns:
        An :class:`OutboundReport`; its summary counts records per flow and outcome.
    """
    flows = Outbound(settings, hub, client, collections, dry_run=dry_run, concurrency=concurrency,
                     max_attempts=max_attempts, on_record=on_record)
    summary = RunSummary("dispatch (dry run)" if dry_run else "dispatch")
    report = OutboundReport(summary, dry_run=dry_run is not None)
    if not settings.generate_events:
        summary.note(NO_EVENTS_NOTE)
    if dry_run is not None:
        changes = hub.pending_changes(limit)
        planned = await flows.run_batch([(c.entity, c.hub_id) for c in changes])
        counted: set[int] = set()
        for r in planned:
            flows.count(summary, r, counted)
        report.keep(planned)
        if flows.auth_error is not None:
            report.error = auth_stop_error(flows.auth_error, "the dry run stopped")
        summary.finish(calls=calls_of(client))
        return report
    sent, released, returned = 0, 0, 0
    while (limit is None or sent < limit) and flows.auth_error is None:
        size = batch_size if limit is None else min(batch_size, limit - sent)
        changes = hub.claim_changes(size, lease_seconds=lease_seconds)
        if not changes:
            break
        results = await flows.run_batch([(c.entity, c.hub_id) for c in changes])
        # a prerequisite (a Customer sent first for its Transactions) is shared by the results
        # of one batch: commit and count it once; the sets hold ids of this batch's live objects
        # only (ids of dropped results may be reused)
        committed: set[int] = set()
        counted = set()
        for change, result in zip(changes, results, strict=True):
            if result.stopped_by is not None:
                returned += 1
                flows.commit(result, change, committed)
            elif not flows.commit(result, change, committed):
                released += 1
            flows.count(summary, result, counted)
        report.keep(results)
        sent += len(changes)
    if released:
        summary.note(f"{released} change(s) failed for a reason that may pass and stay queued for a later dispatch")
    if flows.auth_error is not None:
        flows.stop_error(report, f"the run stopped; {returned} change(s) it had claimed went back to the queue "
                                 f"untouched; {hub.queue_length()} change(s) wait in the queue")
    summary.finish(calls=calls_of(client))
    return report


async def push(settings: Settings, hub: HubStore, client: KlaviyoApi, collections: CollectionSet, entity: str,
               hub_id: int, *, dry_run: DryRunTransport | None = None,
               on_record: OnRecord | None = None) -> OutboundReport:
    """Manual Sync: send one Customer or Transaction by hub id (the queue is left as it is).

    ``on_record`` is called with the record's result as soon as it is known, as for :func:`dispatch`.

    Raises:
        HubNotFoundError: no such record in the hub.
    """
    getter = hub.get_customer if entity == "Customer" else hub.get_transaction
    if getter(hub_id) is None:
        raise HubNotFoundError(f"{entity} {hub_id} is not in the hub")
    flows = Outbound(settings, hub, client, collections, dry_run=dry_run, on_record=on_record)
    summary = RunSummary(f"push {entity.lower()} {hub_id}" + (" (dry run)" if dry_run else ""))
    if entity == "Transaction" and not settings.generate_events:
        summary.note(NO_EVENTS_NOTE)
    results = await flows.run_batch([(entity, hub_id)])
    report = OutboundReport(summary, dry_run=dry_run is not None)
    report.keep(results)
    if dry_run is None:
        flows.commit(results[0], None, set())
    flows.count(summary, results[0], set())
    if flows.auth_error is not None:
        if dry_run is None:
            flows.stop_error(report, f"{entity} {hub_id} was not sent")
        else:
            report.error = auth_stop_error(flows.auth_error, f"{entity} {hub_id} was not sent")
    summary.finish(calls=calls_of(client))
    return report


def open_outbound_client(settings: Settings, hub: HubStore | None = None, *, dry_run: bool = False,
                         **overrides: Any) -> tuple[KlaviyoClient, DryRunTransport | None]:
    """The Klaviyo client for an outbound run; for a dry run, built on a recording transport.

    ``overrides`` go to :func:`engine.connect.open_client` (tests pass ``backoff_base``...).
    """
    from engine.connect import open_client

    transport = DryRunTransport() if dry_run else None
    if transport is not None:
        overrides["transport"] = transport
    return open_client(settings, hub, **overrides), transport


def calls_of(client: KlaviyoApi) -> dict[str, int]:
    """The client's requests per operation, and its retries when there were any (the run summary's calls)."""
    stats = client.stats
    calls = {k: int(v) for k, v in stats.requests.items()}
    if stats.total_retries:
        calls["retries"] = stats.total_retries
    return calls


__all__ = ["DISPATCH_FLOW", "NO_EVENTS_NOTE", "Outbound", "OutboundReport", "calls_of", "dispatch",
           "open_outbound_client", "outbound_collection", "push"]
