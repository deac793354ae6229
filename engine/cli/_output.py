"""Helpers shared by the CLI modules: one way to report an error and exit, the argument
types that range-check numbers (a bad number is a usage error, exit 2, never a traceback), and
the signal handlers of the long-running commands."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import click

from engine.errors import CollectionSetError, KlaviyoSyncError


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (for ``--json`` and ``map``)."""
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot be printed: escape everything instead
        text = json.dumps(data, indent=2, ensure_ascii=True, sort_keys=False, default=str)
    click.echo(text)


def add_signal_handlers(loop: asyncio.AbstractEventLoop,
                        handlers: Mapping[int, Callable[[], None]]) -> Callable[[], None]:
    """Install each signal's handler on ``loop`` where the platform allows (not the main thread,
    not supported: that one is skipped); returns an uninstaller for the ones installed."""
    installed = []
    for sig, handler in handlers.items():
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not supported here / not the main thread
            pass

    def uninstall() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return uninstall


def report(err: KlaviyoSyncError) -> None:
    """Print one error (or each error of a set) on stderr as ``where: CODE message``."""
    errors = err.errors if isinstance(err, CollectionSetError) else [err]
    for e in errors:
        click.echo(str(e), err=True)


def fail(err: KlaviyoSyncError) -> NoReturn:
    """Report ``err`` and exit with its exit code."""
    report(err)
    sys.exit(err.exit_code)


SQLITE_MAX = 2**63 - 1  # the largest integer SQLite stores: every hub id is at most this


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


class BoundedInt(click.IntRange):
    """An integer between ``low`` and ``high`` (both included); anything else is a usage error
    "must be between LOW and HIGH" (exit 2).  ``--help`` shows the range."""

    def __init__(self, low: int, high: int) -> None:
        super().__init__(low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, bool):
            self.fail(f"{_shown(value)} is not an integer", param, ctx)
        if isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:  # not digits, or more digits than Python converts
                self.fail(f"{_shown(value)!r} is not an integer", param, ctx)
        if not self.min <= number <= self.max:  # type: ignore[operator]
            self.fail(f"must be between {self.min} and {self.max}, got {_shown(number)}", param, ctx)
        return number


class BoundedFloat(click.FloatRange):
    """A finite number between ``low`` and ``high`` (both included; NaN and infinity refused)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__(low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{_shown(value)!r} is not a number", param, ctx)
        if not (math.isfinite(number) and self.min <= number <= self.max):  # type: ignore[operator]
            self.fail(f"must be between {self.min:g} and {self.max:g}, got {_shown(value)}", param, ctx)
        return number


RECORD_ID = BoundedInt(1, SQLITE_MAX)  # a hub id (Customer, Transaction, error-log entry)
COUNT = BoundedInt(1, SQLITE_MAX)  # --limit, --batch
PORT_OR_ANY = BoundedInt(0, 65535)  # a TCP port; 0 = any free port
SHARE = BoundedFloat(0.0, 1.0)  # a fault rate: the share of requests
