"""``backfill transactions``: historical orders as Placed Order and Ordered Product events.

Every hub Transaction after the stored position, in Id order and in batches, goes through the
same order flow as ``dispatch`` (the same collections, the same checks, the same deterministic
unique ids and versions), one event per call inside the XL tier's budget: the 2023-10-15 API has
no bulk event job.  Because a sent order's version is recorded in the hub, a later ``dispatch``
of the same unchanged order makes no call, and a backfill run again (after a crash, or to take
new Transactions) skips what it sent.  The position is stored after each batch; a batch with a
change that may pass later (Klaviyo unreachable, throttled) stops the run before that record,
so running again retries it.
"""

from __future__ import annotations

from itertools import islice

from engine.collection import CollectionSet
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
    flows = Outbound(settings, hub, client, collections, dry_run=dry_run, concurrency=concurrency,
                     on_record=on_record)
    summary = RunSummary("backfill transactions" + (" (dry run)" if dry_run else ""))
    report = OutboundReport(summary, dry_run=dry_run is not None)
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
    summary.finish(calls=calls_of(client))
    return report


__all__ = ["STATE_KEY", "backfill_transactions"]
