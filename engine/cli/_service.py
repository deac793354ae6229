"""``klaviyo-sync serve``: the integration as one long-running process (see docs/service.md)."""

from __future__ import annotations

import asyncio
import sys

import click

from engine.cli._hub import _common, _settings


@click.command("serve")
@click.option("--host", help="Address to bind (default: settings service.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535),
              help="Port to listen on (default: settings service.port, 8780; 0 picks a free one).")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds a claimed change stays reserved; a killed service's changes are sent after it.")
@_common
def serve_cmd(host: str | None, port: int | None, lease_seconds: float, config: str | None,
              hub_path: str | None) -> None:
    """Run the integration: poll, dispatch, pages and the hub API, until Ctrl-C or SIGTERM.

    Polls Klaviyo every poll_interval (the same cursor as poll), sends queued hub
    changes continuously while an outbound trigger is enabled, and serves the
    Dashboard, Error Logs and Manual Sync pages and the hub API (/openapi.json).
    One serve per hub: a second one refuses to start.  Ctrl-C or SIGTERM stops
    claiming work, finishes what is in flight, saves the cursor and exits 0.
    """
    from engine.service import serve

    settings = _settings(config)

    def announce(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    sys.exit(asyncio.run(serve(settings, hub_path, host=host, port=port, lease_seconds=lease_seconds,
                               announce=announce)))


def register(group: click.Group) -> None:
    """Add the ``serve`` command."""
    group.add_command(serve_cmd)
