"""``klaviyo-sync serve``: the integration as one long-running process (see docs/service.md)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import click

from engine.cli._hub import common_options, load_cli_settings


@click.command("serve")
@click.option("--host", help="Address to bind (default: settings service.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535),
              help="Port to listen on (default: settings service.port, 8780; 0 picks a free one).")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds a claimed change stays reserved; a killed service's changes are sent after it.")
@click.option("--no-sync", "no_sync", is_flag=True,
              help="Serve the pages and the API only: no poll, no dispatch, no serve lock (for a shared hub whose "
                   "workers do the work; Manual Sync and retries still run here).")
@click.option("--subscriptions", "subscriptions_dir", type=click.Path(file_okay=False),
              help="Folder of other subscriptions' settings (each *.yaml is one, named by its subscription key): "
                   "their pages and API allow actions. Without it, other subscriptions of a shared hub are "
                   "read-only.")
@click.option("--keep-open", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="Other subscriptions' hubs kept open at most (the least recently used is closed first).")
@click.option("--json", "as_json", is_flag=True,
              help='Once listening print one JSON line {"url", "pid", "hub"} on standard output; other messages '
                   "go to standard error.")
@common_options
def serve_cmd(host: str | None, port: int | None, lease_seconds: float, no_sync: bool, subscriptions_dir: str | None,
              keep_open: int, as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Run the integration: poll, dispatch, pages and the hub API, until Ctrl-C or SIGTERM.

    Polls Klaviyo every poll_interval (the same cursor as poll), sends queued hub
    changes continuously while an outbound trigger is enabled, and serves the
    Dashboard, Error Logs and Manual Sync pages and the hub API (/openapi.json).
    One serve per hub (per subscription of a PostgreSQL hub): a second one refuses
    to start.  On a shared PostgreSQL hub every subscription is shown
    (/subscriptions, /api/subscriptions): read-only unless --subscriptions holds
    its settings.  With --no-sync the workers poll and dispatch instead.
    Ctrl-C or SIGTERM stops claiming work, finishes what is in flight, saves the
    cursor and exits 0.  With --json the start is one JSON line on standard
    output (the URL to call).
    """
    from engine.service import serve

    settings = load_cli_settings(config)

    def announce(line: str) -> None:
        click.echo(line, err=as_json)
        sys.stdout.flush()

    def listening(url: str, hub: str) -> None:
        click.echo(json.dumps({"url": url, "pid": os.getpid(), "hub": hub}))
        sys.stdout.flush()

    sys.exit(asyncio.run(serve(settings, hub_path, host=host, port=port, lease_seconds=lease_seconds,
                               announce=announce, on_listening=listening if as_json else None, sync=not no_sync,
                               subscriptions_dir=subscriptions_dir, keep_open=keep_open)))


def register(group: click.Group) -> None:
    """Add the ``serve`` command."""
    group.add_command(serve_cmd)
