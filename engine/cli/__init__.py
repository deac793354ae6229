"""The ``klaviyo-sync`` command line.

This package is the only place that imports click and rich.  Each submodule
adds its commands to :data:`main` through a ``register(group)`` function;
:data:`_COMMAND_MODULES` lists them in help order.  Errors reach the user
through :func:`engine.cli._output.fail`, which prints ``file:line:col: CODE
message`` and exits with the error's exit code.
"""

from __future__ import annotations

import importlib

import click

from engine import logconfig

_COMMAND_MODULES = [
    # one line per command module; each defines register(group: click.Group) -> None
    "_collections",
    "_docs",
    "_demo",
    "_sandbox",
    "_hub",
    "_inbound",
    "_outbound",
    "_backfill",
    "_auth",
    "_service",
    "_worker",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="klaviyo-sync")
def main() -> None:
    """klaviyo-sync: a Klaviyo integration run from declarative YAML mapping collections."""


for _name in _COMMAND_MODULES:
    importlib.import_module(f"engine.cli.{_name}").register(main)


def _set_logging(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Configure logging as soon as either option is read (both have defaults and env vars)."""
    if value is None:
        return
    store = ctx.find_root().meta.setdefault("klaviyo_sync.logging", {})
    store[param.name] = value
    logconfig.configure(store.get("log_level", "warning"), store.get("log_format", "text"))


def _log_options(command: click.Command) -> None:
    """``--log-level`` and ``--log-format`` on the command and, for a group, every subcommand."""
    command.params.append(click.Option(
        ["--log-level"], type=click.Choice(logconfig.LEVELS), default="warning", show_default=True,
        envvar="KLAVIYO_SYNC_LOG_LEVEL", expose_value=False, is_eager=True, callback=_set_logging,
        help="Log records at this level and above go to standard error (env KLAVIYO_SYNC_LOG_LEVEL)."))
    command.params.append(click.Option(
        ["--log-format"], type=click.Choice(logconfig.FORMATS), default="text", show_default=True,
        envvar="KLAVIYO_SYNC_LOG_FORMAT", expose_value=False, is_eager=True, callback=_set_logging,
        help="text, or one JSON object per line (env KLAVIYO_SYNC_LOG_FORMAT); secrets are masked in both."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _log_options(sub)


_log_options(main)

__all__ = ["main"]
