"""``klaviyo-sync sandbox serve``: run the local Klaviyo sandbox in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import json

import click

from engine.sandbox import SandboxOptions, SandboxServer


def register(group: click.Group) -> None:
    """Add the ``sandbox`` command group to ``group``."""
    group.add_command(sandbox)


@click.group()
def sandbox() -> None:
    """A local Klaviyo (loopback HTTP server) for demos and tests."""


@sandbox.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (keep it loopback).")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0 = any free port).")
@click.option("--api-key", "api_keys", multiple=True, help="Accept only these private keys (repeatable). Default: any pk_ key.")
@click.option("--latency-ms", default=0.0, type=float, show_default=True, help="Delay added to every API request.")
@click.option("--fault-5xx", default=0.0, type=float, show_default=True, help="Share of requests answered 503.")
@click.option("--fault-timeout", default=0.0, type=float, show_default=True,
              help="Share of requests applied but answered only after --timeout-hold seconds.")
@click.option("--timeout-hold", default=30.0, type=float, show_default=True, help="Seconds a 'timeout' answer is held back.")
@click.option("--fault-drop", default=0.0, type=float, show_default=True, help="Share of connections dropped unanswered.")
@click.option("--no-rate-limits", is_flag=True, help="Do not enforce Klaviyo's rate tiers.")
@click.option("--tiers", default=None, help='Tier overrides as JSON, e.g. \'{"L": {"burst": 10, "steady": 100}}\'.')
@click.option("--state", "state_file", default=None, type=click.Path(dir_okay=False), help="Load/save state in this JSON file.")
@click.option("--seed", default=None, type=int, help="Seed for fault choice and ids.")
def serve(host: str, port: int, api_keys: tuple[str, ...], latency_ms: float, fault_5xx: float, fault_timeout: float,
          timeout_hold: float, fault_drop: float, no_rate_limits: bool, tiers: str | None, state_file: str | None,
          seed: int | None) -> None:
    """Serve Klaviyo's API on HOST:PORT until Ctrl-C."""
    try:
        tier_map = json.loads(tiers) if tiers else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--tiers") from None
    options = SandboxOptions(
        host=host, port=port, api_keys=api_keys, latency_ms=latency_ms, fault_5xx=fault_5xx,
        fault_timeout=fault_timeout, timeout_hold_s=timeout_hold, fault_drop=fault_drop,
        rate_limits=not no_rate_limits, tiers=tier_map, state_file=state_file, seed=seed,
    )
    server = SandboxServer(options)

    async def run() -> None:
        url = await server.start()
        click.echo(f"Klaviyo sandbox listening on {url} (Ctrl-C to stop)")
        click.echo(f"Point the engine at it with API URL {url} and any key starting with pk_"
                   if not api_keys else f"Point the engine at it with API URL {url} and one of the given keys")
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
