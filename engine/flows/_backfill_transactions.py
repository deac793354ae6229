"""``backfill transactions``: historical orders as Placed Order and Ordered Product events.

Every hub Transaction after the stored position, in Id order and in batches, goes through the
same order flow as ``dispatch`` (the same collections, the same checks, the same deterministic
unique ids and versions).  From revision 2024-05-15 the events go in bulk event jobs of up to
1,000 (:mod:`engine.flows._bulk_events`, tier M: 150 jobs a minute); at earlier revisions, which
have no bulk event job (2023-10-15, the default), one event per call inside the XL tier's budget.
Because a sent order's version is recorded in the hub, a later ``dispatch``
of the same unchanged order makes no call, and a backfill run again (after a crash, or to take
new Transactions) skips what it sent.  The position is stored after each batch; a batch with a
change that may pass later (Klaviyo unreachable, throttled) stops the run before that record,
so running again retries it.
"""

from __future__ import annotations

from itertools import islice

from engine.collection import CollectionSet
from engine.flows._bulk_events import BulkEventClient
from engine.flows._outbound_dryrun import DryRunTransport
from engine.flows.outbound import DEFAULT_BATCH, NO_EVENTS_NOTE, OnRecord, Outbound, OutboundReport, calls_of
from engine.flows.summary import RunSummary
from engine.hub import HubStore
from engine.klaviyo import KlaviyoApi
from engine.settings import Settings

#: the hub state key holding the Id of the last Transaction a backfill handled
STATE_KEY = "backfill:transactions"


async def backfill_transactions(settings: Settings, hub: HubStore, client: KlaviyoApi, collections: CollectionSet, *,
                                batch_size: int = DEFAULT_BATCH, dry_run: DryRunTransport | None = None,
                                concurrency: int = 32, on_record: OnRecord | None = None) -> OutboundReport:
    """Send every hub Transaction after the stored position (see the module docstring)."""
    summary = RunSummary("backfill transactions" + (" (dry run)" if dry_run else ""))
    report = OutboundReport(summary, dry_run=dry_run is not None)
    bulk = BulkEventClient(client) if client.supports("bulk_events") and dry_run is None else None
    if bulk is not None:
        concurrency = max(concurrency, batch_size)  # the whole batch's events meet in a few jobs
    elif client.supports("bulk_events"):
        summary.note("dry run: each event is shown as its own call; the backfill sends them in bulk event jobs "
                     "of up to 1,000")
    flows = Outbound(settings, hub, bulk or client, collections, dry_run=dry_run,
                     concurrency=concurrency, on_record=on_record)
    if not settings.generate_events:
        summary.note(NO_EVENTS_NOTE)
    start = int(hub.get_state(STATE_KEY, 0) or 0)
    if start:
        summary.note(f"resumed after Transaction {start} (where the last backfill stopped)")
    after = start
    while flows.auth_error is None:
        ids = [int(t["Id"]) for t in islice(hub.iter_transactions(batch=batch_size, after=after), batch_size)]
        if not ids:
            break
        results = await flows.run_batch([("Transaction", i) for i in ids])
        if bulk is not None:
            await bulk.flush()
        retry_from = next((r.hub_id for r in results if r.transient or r.stopped_by is not None), None)
        committed: set[int] = set()
        counted: set[int] = set()
        for result in results:
            # a failure that may pass is not final: it is retried by the next run, not logged as failed
            if dry_run is None and result.stopped_by is None and not result.transient:
                flows.commit(result, None, committed)
            flows.count(summary, result, counted)
        report.keep(results)
        if retry_from is not None:
            after = retry_from - 1
            if flows.auth_error is None:
                summary.note(f"stopped before Transaction {retry_from}: a failure that may pass; run the "
                             "backfill again to go on from there")
        else:
            after = ids[-1]
        if dry_run is None:
            hub.set_state(STATE_KEY, after)
        if retry_from is not None:
            break
    if flows.auth_error is not None:
        flows.stop_error(report, f"the backfill stopped; it goes on after Transaction {after} when run again")
    if bulk is not None and bulk.jobs_sent + bulk.batches_refused:
        summary.note(f"{bulk.events_sent:,} events sent in {bulk.jobs_sent:,} bulk event jobs"
                     + (f"; {bulk.batches_refused:,} jobs Klaviyo refused were sent again one event per call"
                        if bulk.batches_refused else ""))
    summary.finish(calls=calls_of(client))
    return report


__all__ = ["STATE_KEY", "backfill_transactions"]
