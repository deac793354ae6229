"""OAuth commands: ``auth login``, ``auth status``, ``auth logout``.

``auth login`` prints the authorize URL (and opens a browser unless
``--no-browser``), waits for Klaviyo's redirect on the loopback redirect URL
(with ``--no-browser`` also for the redirect address pasted on standard input),
exchanges the code and stores the tokens in the hub.  No command prints a
token: ``status`` shows how the engine connects, the expiry and the scopes.
The work is in :mod:`engine.oauth`; this module only parses and prints.
"""

from __future__ import annotations

import asyncio
import os
import sys
import webbrowser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import click

from engine.cli._hub import common_options, load_cli_settings, open_settings_hub
from engine.cli._output import BoundedFloat, emit_json
from engine.connect import open_hub
from engine.errors import KlaviyoSyncError
from engine.oauth import connection_status, login, logout, redirect_query, requested_scopes, scope_warnings
from engine.settings import is_hub_url


@click.group("auth")
def auth_group() -> None:
    """Connect to Klaviyo with OAuth (the alternative to a private API key)."""


@auth_group.command("login")
@click.option("--no-browser", is_flag=True,
              help="Print the authorize URL instead of opening a browser, and also accept the address "
                   "the browser is redirected to, pasted on standard input (for a machine without a browser).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Listen on this port instead of the redirect URL's (0 = any free port).")
@click.option("--timeout", type=BoundedFloat(1, 3600), default=300.0, show_default=True,
              help="Seconds to wait for the browser to come back.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the connection's status as JSON once connected (the URL and prompts go to standard error).")
@common_options
def login_cmd(no_browser: bool, port: int | None, timeout: float, as_json: bool, config: str | None,
              hub_path: str | None) -> None:
    """Authorise klaviyo-sync in the browser and store the OAuth tokens in the hub.

    Without a browser on this machine (--no-browser): open the printed URL in a browser
    anywhere, allow access, then paste here the address the browser was sent to (it
    holds code= and state=), unless the redirect reached this machine's listener itself.
    """
    settings, store = open_settings_hub(config, hub_path)

    def show(url: str) -> None:
        click.echo("Open this URL to authorise klaviyo-sync with Klaviyo:", err=as_json)
        click.echo(url, err=as_json)
        click.echo(f"Scopes requested (what the enabled collections use): {' '.join(requested_scopes(settings))}",
                   err=as_json)
        if not no_browser:
            webbrowser.open(url)
            click.echo("Waiting for Klaviyo to redirect back ...", err=as_json)
            return
        redirect = dict(parse_qsl(urlsplit(url).query)).get("redirect_uri", "the redirect URL")
        click.echo(f"Waiting for Klaviyo to redirect back to {redirect} ...", err=as_json)
        click.echo("If the browser runs on another machine, that page will not load there: copy the whole "
                   "address from its address bar and paste it here, then press Enter.", err=as_json)

    reader = _pasted_redirect if no_browser else None
    with store:
        status = asyncio.run(login(settings, store, open_url=show, port=port, timeout=timeout,
                                   read_redirect=reader))
    if as_json:
        emit_json(status.to_dict())
        return
    click.echo("Connected with OAuth.")
    for line in status.lines()[1:]:
        click.echo(line)


def _pasted_redirect() -> str | None:
    """The first line pasted on standard input that is a redirect address (None at end of input).

    Reads the file descriptor itself, not ``sys.stdin``: this runs in a daemon thread that may
    still be waiting when the login ends, and must not hold the buffered reader's lock then.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdin (an embedding, a test runner)
        fd = None
    pending = b""
    while True:
        if fd is None:
            line = sys.stdin.readline()
            if not line:
                return None
        else:
            while b"\n" not in pending:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                pending += chunk
            if not pending:
                return None
            raw, _, pending = pending.partition(b"\n")
            line = raw.decode("utf-8", "replace")
        if redirect_query(line) is not None:
            return line
        if line.strip():
            click.echo("That is not the address Klaviyo redirected to (it has no code= or error=): paste the "
                       "whole address from the browser's address bar.", err=True)


@auth_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def status_cmd(as_json: bool, config: str | None, hub_path: str | None) -> None:
    """How the engine connects to Klaviyo (OAuth or API key), token expiry and scopes; no secrets."""
    settings, store = open_settings_hub(config, hub_path)
    with store:
        status = connection_status(settings, store)
    if as_json:
        emit_json(status.to_dict())
        return
    for line in status.lines():
        click.echo(line)


@auth_group.command("logout")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
def logout_cmd(as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Revoke the OAuth connection at Klaviyo and delete the tokens from the hub."""
    settings, store = open_settings_hub(config, hub_path)
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
        settings = load_cli_settings(config)
    except KlaviyoSyncError as err:
        return [err], []
    target = hub_path or settings.hub_url or str(settings.hub_path)
    if not is_hub_url(target) and not Path(target).is_file():
        return [], []
    try:
        with open_hub(settings, target) as store:
            return [], scope_warnings(settings, store, collections)
    except KlaviyoSyncError as err:
        return [err], []


def register(group: click.Group) -> None:
    group.add_command(auth_group)
