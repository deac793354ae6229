"""``klaviyo-sync sandbox serve``: run the local Klaviyo sandbox in the foreground.

Ctrl-C (SIGINT) and SIGTERM both stop it cleanly: it stops listening and saves ``--state``.
For trying OAuth refresh from the command line, ``--oauth-access-ttl`` sets the access-token
lifetime and ``--no-rotate-refresh`` keeps a refresh token valid after use; while it runs,
SIGUSR1 expires every issued access token (the next API call gets 401 and the engine refreshes)
and SIGUSR2 revokes every token (as when the user removes the app in Klaviyo: the engine has to
log in again).  See docs/sandbox.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable

import click

from engine.cli._output import PORT_OR_ANY, SHARE, BoundedFloat, add_signal_handlers
from engine.errors import SandboxStateFileError
from engine.klaviyo.ratelimit import resolve_tiers
from engine.sandbox import SandboxOptions, SandboxServer


def register(group: click.Group) -> None:
    """Add the ``sandbox`` command group to ``group``."""
    group.add_command(sandbox)


@click.group()
def sandbox() -> None:
    """A local Klaviyo (loopback HTTP server) for demos and tests."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (keep it loopback).")
@click.option("--port", default=8765, show_default=True, type=PORT_OR_ANY, help="Port (0 = any free port).")
@click.option("--api-key", "api_keys", multiple=True,
              help="Accept only these private keys (repeatable). Default: any pk_ key.")
@click.option("--latency-ms", default=0.0, type=BoundedFloat(0, 60_000), show_default=True,
              help="Delay added to every API request.")
@click.option("--fault-5xx", default=0.0, type=SHARE, show_default=True, help="Share of requests answered 503.")
@click.option("--fault-timeout", default=0.0, type=SHARE, show_default=True,
              help="Share of requests applied but answered only after --timeout-hold seconds.")
@click.option("--timeout-hold", default=30.0, type=BoundedFloat(0, 3600), show_default=True,
              help="Seconds a 'timeout' answer is held back.")
@click.option("--fault-drop", default=0.0, type=SHARE, show_default=True,
              help="Share of connections dropped unanswered.")
@click.option("--no-rate-limits", is_flag=True, help="Do not enforce Klaviyo's rate tiers.")
@click.option("--tiers", default=None, help='Tier overrides as JSON, e.g. \'{"L": {"burst": 10, "steady": 100}}\'.')
@click.option("--state", "state_file", default=None, type=click.Path(dir_okay=False),
              help="Load/save state in this JSON file.")
@click.option("--seed", default=None, type=int, help="Seed for fault choice and ids.")
@click.option("--oauth-access-ttl", "oauth_access_ttl", default=3600.0, type=BoundedFloat(1, 86_400 * 30),
              show_default=True, help="Seconds an OAuth access token lives (short values make the engine refresh).")
@click.option("--no-rotate-refresh", is_flag=True,
              help="Keep an OAuth refresh token valid after use (default: each refresh issues a new one).")
@click.option("--job-delay", "job_delay", default=0.0, type=BoundedFloat(0, 86_400), show_default=True,
              help="Seconds each asynchronous job (bulk import, subscribe) stays queued before it is processed.")
@click.option("--accounts-by-key", is_flag=True,
              help="Give each private key (and each OAuth client) its own Klaviyo account: its own profiles, lists, "
                   "events and jobs, as at Klaviyo. Default: every key sees one shared account.")
@click.option("--json", "as_json", is_flag=True,
              help='On start print one JSON line {"url", "pid", "state"} on standard output; other messages go to '
                   "standard error.")
def serve(host: str, port: int, api_keys: tuple[str, ...], latency_ms: float, fault_5xx: float, fault_timeout: float,
          timeout_hold: float, fault_drop: float, no_rate_limits: bool, tiers: str | None, state_file: str | None,
          seed: int | None, oauth_access_ttl: float, no_rotate_refresh: bool, job_delay: float, accounts_by_key: bool,
          as_json: bool) -> None:
    """Serve Klaviyo's API on HOST:PORT until Ctrl-C or SIGTERM (both save --state).

    While it runs, `kill -USR1 PID` expires every OAuth access token (the engine's
    next call refreshes) and `kill -USR2 PID` revokes every OAuth token (the engine
    must log in again); PID is printed at start.  With --json the start is one JSON
    line on standard output, so a script reads the URL with one readline.
    GET /__sandbox__/accounts shows each account's counts (see docs/sandbox.md).
    """
    try:
        tier_map = json.loads(tiers) if tiers else None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--tiers") from None
    if tier_map is not None:
        try:
            if not isinstance(tier_map, dict) or not all(isinstance(v, dict) for v in tier_map.values()):
                raise ValueError('must be a JSON object of tiers, e.g. {"L": {"burst": 10, "steady": 100}}')
            resolve_tiers(tier_map)
        except (ValueError, TypeError, OverflowError) as exc:
            raise click.BadParameter(str(exc), param_hint="--tiers") from None
    options = SandboxOptions(
        host=host, port=port, api_keys=api_keys, latency_ms=latency_ms, fault_5xx=fault_5xx,
        fault_timeout=fault_timeout, timeout_hold_s=timeout_hold, fault_drop=fault_drop,
        rate_limits=not no_rate_limits, tiers=tier_map, state_file=state_file, seed=seed,
        oauth_access_ttl_s=oauth_access_ttl, oauth_rotate_refresh=not no_rotate_refresh, job_delay_s=job_delay,
        accounts_by_key=accounts_by_key,
    )
    server = SandboxServer(options)

    async def run() -> None:
        try:
            url = await server.start()
        except SandboxStateFileError as exc:
            raise click.BadParameter(str(exc), param_hint="--state") from None
        except OSError as exc:  # the port is taken, the host is not an address of this machine...
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        stop = asyncio.Event()
        uninstall = _install_signals(server, stop)  # before the first line: a SIGTERM after it saves
        try:
            if as_json:
                click.echo(json.dumps({"url": url, "pid": os.getpid(), "state": state_file}))
                sys.stdout.flush()
            click.echo(f"Klaviyo sandbox listening on {url} (Ctrl-C to stop)", err=as_json)
            click.echo(f"Point the engine at it with API URL {url} and any key starting with pk_"
                       if not api_keys else f"Point the engine at it with API URL {url} and one of the given keys",
                       err=as_json)
            if accounts_by_key:
                click.echo("Each key is its own Klaviyo account (--accounts-by-key); "
                           f"counts per account: {url}/__sandbox__/accounts", err=as_json)
            click.echo(f"PID {os.getpid()}: kill -USR1 expires OAuth access tokens, "
                       "kill -USR2 revokes every OAuth token", err=as_json)
            await stop.wait()
        finally:
            uninstall()
            await server.stop()
        if state_file:
            click.echo(f"Sandbox stopped; state saved to {state_file}", err=True)
        else:
            click.echo("Sandbox stopped.", err=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C before the handlers are in place
        asyncio.run(run())


def _install_signals(server: SandboxServer, stop: asyncio.Event) -> Callable[[], None]:
    """Ctrl-C and SIGTERM set ``stop``; SIGUSR1 / SIGUSR2 expire / revoke the OAuth tokens.
    Returns an uninstaller."""
    loop = asyncio.get_running_loop()

    def expire() -> None:
        n = server.oauth.expire_access_tokens()
        click.echo(f"Expired {n} OAuth access token(s); the next API call with one gets 401.", err=True)

    def revoke() -> None:
        server.oauth.revoke_all()
        click.echo("Revoked every OAuth token; refreshing fails until the engine logs in again.", err=True)

    handlers: dict[int, Callable[[], None]] = {signal.SIGINT: stop.set, signal.SIGTERM: stop.set}
    for name, handler in (("SIGUSR1", expire), ("SIGUSR2", revoke)):
        if hasattr(signal, name):  # not on Windows
            handlers[getattr(signal, name)] = handler
    return add_signal_handlers(loop, handlers)
