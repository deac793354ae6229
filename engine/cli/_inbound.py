"""Inbound commands: ``poll`` and ``sync profile`` (Klaviyo profiles into hub Customers).

``klaviyo-sync poll`` runs one poll; ``--every 5m`` (or ``--every`` alone: the
settings' ``poll_interval``) keeps polling until Ctrl-C, which finishes the profile
in hand, saves the cursor and stops (a second Ctrl-C aborts at once).  On a terminal
(standard error) a progress display runs (:mod:`engine.cli._progress`); after each poll the
plain summary is printed (``--json``: one JSON object per poll).  ``klaviyo-sync sync profile ID`` is the seeds'
Manual Sync of one profile.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from datetime import datetime

import click

from engine.cli._hub import common_options, load_cli_settings
from engine.cli._output import add_signal_handlers, emit_json, report
from engine.cli._progress import progress
from engine.collection import CollectionSet, load_collections
from engine.connect import open_client, open_hub
from engine.errors import CollectionSetError, EveryOptionError
from engine.flows.inbound import InboundFlow, ProfileResult, parse_since
from engine.flows.summary import RunSummary
from engine.settings import MAX_POLL_SECONDS, MIN_POLL_SECONDS, Settings, parse_duration


def _collections(settings: Settings) -> CollectionSet:
    """The settings' collections. Any load problem stops the command before anything is read or
    written (as dispatch does): running with a collection missing would transfer profiles without
    their address, or not at all, and move the cursor past them."""
    loaded = load_collections([settings.collections_dir])
    if loaded.errors:
        raise CollectionSetError(loaded.errors)
    return loaded.collections


def _print_summary(summary: RunSummary, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary.to_dict(), ensure_ascii=False, default=str))
    else:
        for line in summary.lines():
            click.echo(line)


def _install_stop(flow: InboundFlow, wake: asyncio.Event) -> Callable[[], None]:
    """Ctrl-C / SIGTERM ask the flow to stop cleanly; a second Ctrl-C aborts. Returns an uninstaller."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if not flow.stop_requested:
            click.echo("Stopping after the current profile (Ctrl-C again to abort)...", err=True)
        flow.request_stop()
        wake.set()
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C raises KeyboardInterrupt

    return add_signal_handlers(loop, {signal.SIGINT: on_signal, signal.SIGTERM: on_signal})


async def _poll(settings: Settings, hub_path: str | None, since: datetime | None, every: float | None,
                as_json: bool) -> int:
    collections = _collections(settings)
    hub = open_hub(settings, hub_path)
    try:
        async with open_client(settings, hub) as client:
            rc = 0
            first = True
            while True:
                flow = InboundFlow(hub, client, collections, summary=RunSummary("poll"),
                                   formula_settings=settings.for_formulas())
                wake = asyncio.Event()
                uninstall = _install_stop(flow, wake)
                try:
                    with progress("poll: Klaviyo profiles", as_json=as_json) as bar:
                        await flow.poll(since=since if first else None,
                                        on_profile=lambda r: bar.advance("unchanged" if r is None else r.outcome))
                    _print_summary(flow.summary, as_json)
                    if flow.error is not None:
                        report(flow.error)
                        rc = 1
                    if every is None or flow.stopped:
                        return rc
                    first = False
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=every)
                        return rc  # stopped while waiting
                    except TimeoutError:
                        continue
                finally:
                    uninstall()
    finally:
        hub.close()


@click.command("poll")
@click.option("--since", help="Poll profiles updated after this date/time (e.g. 2024-05-01) instead of "
                              "after the saved cursor.")
@click.option("--every", is_flag=False, flag_value="", default=None, metavar="INTERVAL",
              help="Keep polling every INTERVAL (30s, 5m, 1h; alone: the settings' poll_interval) until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="Print each poll's summary as one JSON line.")
@common_options
def poll_cmd(since: str | None, every: str | None, as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Transfer Klaviyo profiles updated since the last poll into hub Customers.

    Profiles come page by page, oldest change first; each goes through the Add or
    Update Klaviyo Profile TO Hub collection (matched by link, email, then phone)
    and its address child.  The cursor is saved after every page, so a stopped or
    failed poll loses nothing.  Exits 1 if Klaviyo did not answer.
    """
    settings = load_cli_settings(config)
    since_dt = parse_since(since) if since else None
    interval: float | None = None
    if every is not None:
        try:
            interval = parse_duration(every) if every else settings.poll_interval
        except ValueError:
            raise EveryOptionError(f"--every must be a duration such as 30s, 5m or 1h, got {every[:40]!r}") from None
        if not MIN_POLL_SECONDS <= interval <= MAX_POLL_SECONDS:
            raise EveryOptionError(f"--every must be between {MIN_POLL_SECONDS:g}s and "
                                   f"{MAX_POLL_SECONDS // 86400:g} days, got {every[:40]!r}")
    try:
        rc = asyncio.run(_poll(settings, hub_path, since_dt, interval, as_json))
    except KeyboardInterrupt:
        click.echo("Aborted.", err=True)
        rc = 130
    sys.exit(rc)


@click.group("sync")
def sync_group() -> None:
    """Manual Sync: transfer one record now."""


@sync_group.command("profile")
@click.argument("profile_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@common_options
def sync_profile_cmd(profile_id: str, as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Transfer the Klaviyo profile PROFILE_ID into the hub (e.g. 01H8TVABCDEF1234567890 or 44552).

    Exits 1 if the id is unknown to Klaviyo or the transfer did not succeed.
    """
    settings = load_cli_settings(config)
    collections = _collections(settings)

    async def run() -> tuple[ProfileResult, RunSummary]:
        hub = open_hub(settings, hub_path)
        try:
            async with open_client(settings, hub) as client:
                flow = InboundFlow(hub, client, collections, summary=RunSummary("sync profile"),
                                   formula_settings=settings.for_formulas())
                return await flow.sync_profile(profile_id), flow.summary
        finally:
            hub.close()

    result, summary = asyncio.run(run())
    if as_json:
        emit_json({"result": result.to_dict(), "summary": summary.to_dict()})
    else:
        where = f" -> Customer {result.customer_id}" if result.customer_id is not None else ""
        click.echo(f"Profile {result.profile_id}: {result.outcome}{where}"
                   + (f" (matched by {result.matched_by})" if result.matched_by else ""))
        for message in result.messages:
            click.echo(f"  {message}")
        for line in summary.lines():
            click.echo(line)
    sys.exit(0 if result.outcome in ("created", "updated", "linked", "skipped") else 1)


def register(group: click.Group) -> None:
    """Add the ``poll`` and ``sync`` commands."""
    group.add_command(poll_cmd)
    group.add_command(sync_group)
