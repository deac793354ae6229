"""``backfill customers``: an initial load through Klaviyo's bulk profile import jobs.

It prints the run summary and the jobs (or ``--json``); on a terminal a progress display
runs on standard error meanwhile (:mod:`engine.cli._progress`).  ``--dry-run`` packs the
jobs and shows them (profiles, bytes, lists, first records) without sending anything.
A run stopped by Klaviyo (refused credentials, Klaviyo unreachable) or killed resumes
where it stopped when run again (docs/backfill.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from engine.cli._hub import common_options
from engine.cli._outbound import print_report as _print_outbound, run_outbound
from engine.cli._output import BoundedInt, emit_json, fail
from engine.cli._progress import progress
from engine.collection import load_collections
from engine.connect import open_client, open_hub
from engine.errors import CollectionSetError, KlaviyoSyncError
from engine.flows._backfill_transactions import backfill_transactions
from engine.flows.backfill import BackfillReport, backfill_customers, revision_error
from engine.flows.outbound import DEFAULT_BATCH, OutboundReport
from engine.klaviyo import revision as rev
from engine.settings import load_settings


def _print_report(report: BackfillReport) -> None:
    for job in report.jobs:
        head = f"job {job['id']}" if "id" in job else "job (not sent)"
        line = (f"{head}: {job['profiles']} profile(s), {job['bytes']:,} bytes, Customers {job['hub_ids'][0]}"
                f"-{job['hub_ids'][1]}" + (f", lists {', '.join(job['lists'])}" if job["lists"] else ""))
        if "status" in job:
            line += f" -- {job['status']}: {job['linked']} linked, {job['updated']} updated, {job['failed']} failed"
        click.echo(line)
        for rec in job.get("first_records", []):
            click.echo(f"  Customer {rec['hub_id']} ({rec['email']}): "
                       + json.dumps(rec["profile"], ensure_ascii=False, default=str))
    for line in report.summary.lines():
        click.echo(line)


def _stop(as_json: bool, err: KlaviyoSyncError) -> None:
    if as_json:
        emit_json({"error": err.to_dict()})
    fail(err)


@click.group("backfill")
def backfill_group() -> None:
    """Initial loads through Klaviyo's bulk jobs (API revision 2023-12-15 or later)."""


@backfill_group.command("customers")
@click.option("--all", "include_linked", is_flag=True,
              help="Every Customer, linked ones too (default: only Customers not yet linked to a profile).")
@click.option("--dry-run", is_flag=True, help="Show the jobs that would be sent; send and write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@common_options
def customers_cmd(include_linked: bool, dry_run: bool, as_json: bool, config: str | None,
                  hub_path: str | None) -> None:
    """Send hub Customers to Klaviyo in bulk profile import jobs and link each one.

    Customers are mapped by the Add (unlinked) or Update (linked) Klaviyo Profile FROM Hub
    collection, packed into jobs of at most 10,000 profiles and 5 MB, polled to completion
    and linked; import errors go to the error log. Killed or stopped, it resumes when run again.
    """
    try:
        settings = load_settings(config)
        if not rev.supports(settings.api_revision, "bulk_profile_import"):
            raise revision_error(settings)
        loaded = load_collections([settings.collections_dir])
        if loaded.errors:
            raise CollectionSetError(loaded.errors)
        hub = open_hub(settings, hub_path)
    except KlaviyoSyncError as err:
        _stop(as_json, err)
    try:
        def total() -> int:
            customers = int(hub.counts()["customers"])
            return customers if include_linked else max(0, customers - hub.link_count("Customer"))

        async def main() -> BackfillReport:
            label = "backfill customers (dry run)" if dry_run else "backfill customers"
            with progress(label, as_json=as_json, total=total) as bar:
                if dry_run:
                    return await backfill_customers(settings, hub, None, loaded.collections,
                                                    include_linked=include_linked, dry_run=True, on_progress=bar.set)
                async with open_client(settings, hub) as client:
                    return await backfill_customers(settings, hub, client, loaded.collections,
                                                    include_linked=include_linked, on_progress=bar.set)

        report = asyncio.run(main())
    except KlaviyoSyncError as err:
        _stop(as_json, err)
    finally:
        hub.close()
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_report(report)
    if report.error is not None:
        fail(report.error)


def register(group: click.Group) -> None:
    group.add_command(backfill_group)


__all__ = ["register"]


@backfill_group.command("transactions")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send and write nothing.")
@click.option("--batch", "batch_size", type=BoundedInt(1, 100_000), default=DEFAULT_BATCH, show_default=True,
              help="Transactions read and sent at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@common_options
def transactions_cmd(dry_run: bool, batch_size: int, as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Send historical hub Transactions as Placed Order and Ordered Product events.

    The same order flow as dispatch (the same unique ids and versions), so a later dispatch never
    duplicates an event; every revision works.  From api_revision 2024-05-15 the events go in bulk
    event jobs of up to 1,000, before it one event per call inside the XL tier.  Resumes
    after the last Transaction a previous run handled; on a terminal a progress bar runs on
    standard error.
    """

    async def work(settings: Any, hub: Any, client: Any, collections: Any, transport: Any) -> OutboundReport:
        with progress("backfill transactions" + (" (dry run)" if dry_run else ""), as_json=as_json,
                      total=lambda: int(hub.counts().get("transactions", 0))) as bar:
            return await backfill_transactions(settings, hub, client, collections, batch_size=batch_size,
                                               dry_run=transport,
                                               concurrency=max(8, 2 * settings.throttling.max_concurrency),
                                               on_record=lambda r: bar.advance(r.outcome))

    report = run_outbound(config, hub_path, dry_run, work)
    _print_outbound(report, as_json)
    if report.error is not None:
        fail(report.error)
