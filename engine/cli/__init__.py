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

_COMMAND_MODULES = [
    # one line per command module; each defines register(group: click.Group) -> None
    "_collections",
    "_demo",
    "_sandbox",
    "_hub",
    "_inbound",
    "_outbound",
    "_auth",
    "_service",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="klaviyo-sync")
def main() -> None:
    """klaviyo-sync: a Klaviyo integration run from declarative YAML mapping collections."""


for _name in _COMMAND_MODULES:
    importlib.import_module(f"engine.cli.{_name}").register(main)

__all__ = ["main"]
