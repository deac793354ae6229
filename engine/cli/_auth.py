"""OAuth commands: ``auth login``, ``auth status``, ``auth logout``.

``auth login`` prints the authorize URL (and opens a browser unless
``--no-browser``), waits for Klaviyo's redirect on the loopback redirect URL,
exchanges the code and stores the tokens in the hub.  No command prints a
token: ``status`` shows how the engine connects, the expiry and the scopes.
The work is in :mod:`engine.oauth`; this module only parses and prints.
"""

from __future__ import annotations

import asyncio
import webbrowser
from pathlib import Path
from typing import Any

import click

from engine.cli._hub import _common, _open, _settings
from engine.cli._output import BoundedFloat, emit_json
from engine.errors import KlaviyoSyncError
from engine.hub import SqliteHub
from engine.oauth import connection_status, login, logout, requested_scopes, scope_warnings


@click.group("auth")
def auth_group() -> None:
    """Connect to Klaviyo with OAuth (the alternative to a private API key)."""


@auth_group.command("login")
@click.option("--no-browser", is_flag=True, help="Only print the authorize URL; open it yourself.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Listen on this port instead of the redirect URL's (0 = any free port).")
@click.option("--timeout", type=BoundedFloat(1, 3600), default=300.0, show_default=True,
              help="Seconds to wait for the browser to come back.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the connection's status as JSON once connected (the URL and prompts go to standard error).")
@_common
def login_cmd(no_browser: bool, port: int | None, timeout: float, as_json: bool, config: str | None,
              hub_path: str | None) -> None:
    """Authorise klaviyo-sync in the browser and store the OAuth tokens in the hub."""
    settings, store = _open(config, hub_path)

    def show(url: str) -> None:
        click.echo("Open this URL to authorise klaviyo-sync with Klaviyo:", err=as_json)
        click.echo(url, err=as_json)
        click.echo(f"Scopes requested (what the enabled collections use): {' '.join(requested_scopes(settings))}",
                   err=as_json)
        if not no_browser:
            webbrowser.open(url)
        click.echo("Waiting for Klaviyo to redirect back ...", err=as_json)

    with store:
        status = asyncio.run(login(settings, store, open_url=show, port=port, timeout=timeout))
    if as_json:
        emit_json(status.to_dict())
        return
    click.echo("Connected with OAuth.")
    for line in status.lines()[1:]:
        click.echo(line)


@auth_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_common
def status_cmd(as_json: bool, config: str | None, hub_path: str | None) -> None:
    """How the engine connects to Klaviyo (OAuth or API key), token expiry and scopes; no secrets."""
    settings, store = _open(config, hub_path)
    with store:
        status = connection_status(settings, store)
    if as_json:
        emit_json(status.to_dict())
        return
    for line in status.lines():
        click.echo(line)


@auth_group.command("logout")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_common
def logout_cmd(as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Revoke the OAuth connection at Klaviyo and delete the tokens from the hub."""
    settings, store = _open(config, hub_path)
    with store:
        result = asyncio.run(logout(settings, store))
    if as_json:
        emit_json(result.to_dict())
        return
    if not result.connected:
        click.echo("No OAuth connection is stored; nothing to do.")
        return
    click.echo("Revoked at Klaviyo." if result.revoked else f"Warning: {result.detail}.")
    click.echo("OAuth tokens deleted from the hub." if result.deleted else "No tokens were left in the hub.")


def validate_scopes(config: str | None, hub_path: str | None, collections: Any,
                    ) -> tuple[list[KlaviyoSyncError], list[KlaviyoSyncError]]:
    """``validate --config/--hub``: ``(errors, warnings)`` of the scope check.

    Runs only when a settings file or hub is named (option or environment), so a plain
    ``validate`` reads nothing but the collections.  Warnings (W020) name each scope the
    enabled collections need that the OAuth connection stored in the hub was not granted;
    a hub file that does not exist is not created (nothing stored, nothing to report).
    """
    if config is None and hub_path is None:
        return [], []
    try:
        settings = _settings(config)
    except KlaviyoSyncError as err:
        return [err], []
    path = Path(hub_path) if hub_path else settings.hub_path
    if not path.is_file():
        return [], []
    try:
        with SqliteHub(path, outbound_triggers=settings.outbound_triggers.entities(),
                       secrets=settings.secrets()) as store:
            return [], scope_warnings(settings, store, collections)
    except KlaviyoSyncError as err:
        return [err], []


def register(group: click.Group) -> None:
    group.add_command(auth_group)
