"""``klaviyo-sync worker``: poll and dispatch every subscription of a folder, with any number of
worker processes sharing the work through a PostgreSQL jobs database (see docs/worker.md)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import click

from engine.cli._output import BoundedFloat, BoundedInt, fail
from engine.errors import KlaviyoSyncError
from engine.settings import mask_url
from engine.worker import ENV_SUBSCRIPTIONS, WorkerOptions, default_jobs_url, load_subscriptions, run_worker

DEFAULTS = WorkerOptions()


@click.command("worker")
@click.option("--subscriptions", "folder", type=click.Path(), envvar=ENV_SUBSCRIPTIONS,
              help=f"Folder of settings files, one *.yaml per subscription (env {ENV_SUBSCRIPTIONS}).")
@click.option("--jobs", "jobs_url", envvar="KLAVIYO_SYNC_JOBS", metavar="URL",
              help="PostgreSQL database for procrastinate's job tables (default: the PostgreSQL hub all the "
                   "subscriptions share; env KLAVIYO_SYNC_JOBS).")
@click.option("--concurrency", type=BoundedInt(1, 256), default=DEFAULTS.concurrency, show_default=True,
              help="Jobs this process runs at once.")
@click.option("--tick", type=click.Choice(["1", "2", "3", "4", "5", "6", "10", "12", "15", "20", "30", "60"]),
              default=str(DEFAULTS.tick), show_default=True,
              help="Seconds between scheduler runs (one across all workers): each defers due polls and dispatches.")
@click.option("--lease", type=BoundedFloat(1, 86_400), default=DEFAULTS.lease, show_default=True,
              help="Seconds a claimed change stays reserved; a killed worker's changes are sent after it.")
@click.option("--batch", type=BoundedInt(1, 10_000), default=DEFAULTS.batch, show_default=True,
              help="Changes a dispatch job claims at once (sent well within --lease).")
@click.option("--heartbeat", type=BoundedFloat(0.1, 3600), default=DEFAULTS.heartbeat, show_default=True,
              help="Seconds between this worker's heartbeats in the jobs database.")
@click.option("--stalled-after", type=BoundedFloat(1, 86_400), default=DEFAULTS.stalled_after, show_default=True,
              help="Seconds without a heartbeat after which a worker counts as dead and its jobs run again "
                   "(at least twice --heartbeat).")
@click.option("--shutdown-timeout", type=BoundedFloat(0, 3600), default=DEFAULTS.shutdown_timeout,
              show_default=True,
              help="On SIGTERM / Ctrl-C, seconds the jobs in hand get to finish before they are cancelled "
                   "and their claimed changes released.")
@click.option("--keep-open", type=BoundedInt(0, 10_000), default=DEFAULTS.max_open, show_default=True,
              help="Subscriptions this process keeps open at most (0: twice --concurrency); the least recently "
                   "used idle one is closed first, so database connections follow the jobs, not the subscriptions.")
@click.option("--name", help="This worker's name in procrastinate's tables and logs (default: worker).")
@click.option("--json", "as_json", is_flag=True,
              help='Once running print one JSON line {"pid", "subscriptions", "jobs"} on standard output; other '
                   "messages go to standard error.")
def worker_cmd(folder: str | None, jobs_url: str | None, concurrency: int, tick: str, lease: float, batch: int,
               heartbeat: float, stalled_after: float, shutdown_timeout: float, keep_open: int, name: str | None,
               as_json: bool) -> None:
    """Poll and dispatch every subscription of a folder, sharing the work with other workers.

    Each *.yaml of --subscriptions is one subscription's settings file (its
    subscription: key names it).  Any number of worker processes, on any number of
    hosts, with the same folder and --jobs database share the work: a scheduler
    (one across all of them) defers a poll for each subscription whose
    poll_interval has passed and a dispatch while its hub queue is not empty.
    A worker killed mid-job loses and duplicates nothing: its jobs run again
    after --stalled-after, its claimed changes after --lease.  SIGTERM or Ctrl-C
    stops cleanly and exits 0.
    """
    try:
        if not folder:
            raise click.UsageError(f"give --subscriptions DIR (or set ${ENV_SUBSCRIPTIONS})")
        if stalled_after < 2 * heartbeat:
            raise click.BadParameter(f"{stalled_after:g} is less than twice --heartbeat ({heartbeat:g})",
                                     param_hint="--stalled-after")
        subscriptions = load_subscriptions(folder)
        url = jobs_url or default_jobs_url(subscriptions)
        if not url.lower().startswith(("postgresql://", "postgres://")):
            raise click.BadParameter(f"{mask_url(url)!r} is not a postgresql:// URL", param_hint="--jobs")
        options = WorkerOptions(concurrency=concurrency, tick=int(tick), lease=lease, batch=batch,
                                heartbeat=heartbeat, stalled_after=stalled_after, shutdown_timeout=shutdown_timeout,
                                max_open=keep_open)

        def announce(line: str) -> None:
            click.echo(line, err=as_json)
            sys.stdout.flush()

        def started() -> None:
            click.echo(json.dumps({"pid": os.getpid(), "subscriptions": sorted(subscriptions),
                                   "jobs": mask_url(url)}))
            sys.stdout.flush()

        code = asyncio.run(run_worker(subscriptions, url, options, name=name, announce=announce,
                                      on_started=started if as_json else None))
    except KlaviyoSyncError as err:
        fail(err)
    sys.exit(code)


def register(group: click.Group) -> None:
    """Add the ``worker`` command."""
    group.add_command(worker_cmd)
