"""Printing helpers shared by the CLI modules: one way to report an error and exit."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from engine.errors import CollectionSetError, KlaviyoSyncError


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (for ``--json`` and ``map``)."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False, default=str))


def report(err: KlaviyoSyncError) -> None:
    """Print one error (or each error of a set) on stderr as ``where: CODE message``."""
    errors = err.errors if isinstance(err, CollectionSetError) else [err]
    for e in errors:
        click.echo(str(e), err=True)


def fail(err: KlaviyoSyncError) -> NoReturn:
    """Report ``err`` and exit with its exit code."""
    report(err)
    sys.exit(err.exit_code)
