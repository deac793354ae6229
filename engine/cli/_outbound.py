"""Outbound commands: ``dispatch`` (the queue) and ``push customer|transaction ID`` (Manual Sync).

Both print the run summary (or ``--json``); on a terminal a progress bar runs on standard
error meanwhile (:mod:`engine.cli._progress`).  ``--dry-run`` prints, per record, the
match decision and every request that would be sent (method, path, JSON body);
read-only lookups the decision needed are marked as sent.  Nothing is written to
Klaviyo or the hub, and the queue is left untouched.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from engine.cli._hub import common_options
from engine.cli._output import COUNT, RECORD_ID, BoundedFloat, BoundedInt, emit_json, fail
from engine.cli._progress import progress
from engine.collection import load_collections
from engine.connect import open_hub
from engine.errors import CollectionSetError
from engine.flows.outbound import (
    DEFAULT_BATCH,
    DEFAULT_LEASE,
    OutboundReport,
    dispatch,
    open_outbound_client,
    push,
)
from engine.settings import load_settings


def print_report(report: OutboundReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    if report.dry_run:
        for r in report.results:
            click.echo(f"{r.entity} {r.hub_id}: {r.outcome} -- {r.decision or 'nothing to send'}")
            for p in r.prerequisites:
                click.echo(f"  first, Customer {p.hub_id}: {p.outcome} -- {p.decision}")
            for req in r.requests:
                click.echo(f"  {req.line()}")
            for e in [*(x for p in r.prerequisites for x in p.logs), *r.logs]:
                click.echo(f"  would log {e.level}: [{e.flow}] {e.message}" + (f" ({e.detail})" if e.detail else ""))
    else:
        for r in report.results:
            for e in [*(x for p in r.prerequisites for x in p.logs), *r.logs]:
                click.echo(f"{e.level}: {r.entity} {r.hub_id} [{e.flow}] {e.message}"
                           + (f" ({e.detail})" if e.detail else ""), err=True)
    if report.omitted:
        click.echo(f"{report.omitted} more record(s) not listed above: the counts below include them, "
                   "and every problem is in the error log (klaviyo-sync errors)", err=not report.dry_run)
    for line in report.summary.lines():
        click.echo(line)


def run_outbound(config: str | None, hub_path: str | None, dry_run: bool,
         work: Callable[..., Awaitable[OutboundReport]]) -> OutboundReport:
    settings = load_settings(config)
    loaded = load_collections([settings.collections_dir])
    if loaded.errors:
        raise CollectionSetError(loaded.errors)
    hub = open_hub(settings, hub_path)
    try:
        async def main() -> OutboundReport:
            client, transport = open_outbound_client(settings, hub, dry_run=dry_run)
            async with client:
                return await work(settings, hub, client, loaded.collections, transport)

        return asyncio.run(main())
    finally:
        hub.close()


@click.command("dispatch")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send and write nothing.")
@click.option("--limit", type=COUNT, help="Send at most this many queued changes.")
@click.option("--batch", "batch_size", type=BoundedInt(1, 100_000), default=DEFAULT_BATCH, show_default=True,
              help="Changes claimed at once (lists and consent are sent once per batch).")
@click.option("--lease", "lease_seconds", type=BoundedFloat(1, 86_400), default=DEFAULT_LEASE, show_default=True,
              help="Seconds a claimed change stays reserved; a crashed run's changes are reclaimable after it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@common_options
def dispatch_cmd(dry_run: bool, limit: int | None, batch_size: int, lease_seconds: float, as_json: bool,
                 config: str | None, hub_path: str | None) -> None:
    """Send queued hub changes (Customers, Transactions) to Klaviyo.

    On a terminal a progress bar runs on standard error (records done of the queue's length).
    """

    async def work(settings: Any, hub: Any, client: Any, collections: Any, transport: Any) -> OutboundReport:
        def total() -> int:
            queued: int = hub.queue_length()
            return queued if limit is None else min(limit, queued)

        label = "dispatch (dry run)" if dry_run else "dispatch"
        with progress(label, as_json=as_json, total=total) as bar:
            return await dispatch(settings, hub, client, collections, limit=limit, batch_size=batch_size,
                                  lease_seconds=lease_seconds, dry_run=transport,
                                  concurrency=max(8, 2 * settings.throttling.max_concurrency),
                                  on_record=lambda r: bar.advance(r.outcome))

    report = run_outbound(config, hub_path, dry_run, work)
    print_report(report, as_json)
    if report.error is not None:
        fail(report.error)


@click.group("push")
def push_group() -> None:
    """Manual Sync: send one hub record to Klaviyo now, by hub id (exit 1 if it fails)."""


def _push_command(entity: str) -> click.Command:
    @click.argument("record_id", type=RECORD_ID)
    @click.option("--dry-run", is_flag=True, help="Show what would be sent; send and write nothing.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @common_options
    def cmd(record_id: int, dry_run: bool, as_json: bool, config: str | None, hub_path: str | None) -> None:
        async def work(settings: Any, hub: Any, client: Any, collections: Any, transport: Any) -> OutboundReport:
            with progress(f"push {entity.lower()} {record_id}", as_json=as_json, total=1) as bar:
                return await push(settings, hub, client, collections, entity, record_id, dry_run=transport,
                                  on_record=lambda r: bar.advance(r.outcome))

        report = run_outbound(config, hub_path, dry_run, work)
        print_report(report, as_json)
        if report.error is not None:
            fail(report.error)
        if report.results and report.results[0].outcome in ("failed", "invalid"):
            sys.exit(1)

    cmd.__doc__ = f"Send hub {entity} RECORD_ID to Klaviyo (the seeds' Manual Sync)."
    return click.command(entity.lower())(cmd)


push_group.add_command(_push_command("Customer"))
push_group.add_command(_push_command("Transaction"))


def register(group: click.Group) -> None:
    group.add_command(dispatch_cmd)
    group.add_command(push_group)


__all__ = ["register"]
