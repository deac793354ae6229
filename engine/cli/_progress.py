"""One progress display for the long commands: ``poll``, ``hub import``, ``dispatch``, ``push``,
``backfill customers``.

It is drawn with rich on **standard error**, and only when standard error is a terminal and
``--json`` is off; it is erased when the command ends.  Standard output is never touched, so a
command prints exactly the same there with or without it.  It shows a spinner, the command's
label, a bar with the items done out of the total (``n/?`` when the total is unknown, as for a
poll), the rate, the time taken and the time left, and the counts per outcome
(``3 created, 1 failed``).

A command opens it with :func:`progress` and hands the flow a small callback that calls
:meth:`Progress.advance` (one item finished with an outcome) or :meth:`Progress.set` (the counts
so far, for flows that report in batches).  When the display is not shown those methods return
at once, so the flows are called the same way on a terminal and off it.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress, Task
    from rich.text import Text

#: The order counts are shown in (any other outcome follows, alphabetically).
_ORDER = ("created", "added", "updated", "unchanged", "linked", "skipped", "invalid", "failed", "not sent")


def shown(as_json: bool) -> bool:
    """Whether a command draws its progress: standard error is a terminal and ``--json`` is off."""
    return not as_json and sys.stderr.isatty()


def count_lines(path: str) -> int:
    """The number of lines of a file (read in 1 MiB chunks; a last line without newline counts)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def _counts_text(counts: Mapping[str, int]) -> str:
    order = {name: i for i, name in enumerate(_ORDER)}
    items = sorted((k for k, v in counts.items() if v), key=lambda k: (order.get(k, len(order)), k))
    return ", ".join(f"{counts[k]} {k}" for k in items)


class Progress:
    """A live progress display on standard error (see the module docstring); thread-safe.

    Args:
        label: what runs, e.g. ``"dispatch"`` or ``"hub import customers"``.
        total: how many items the run will finish, or None when unknown (a pulsing bar).
        visible: False for a display that draws nothing (not a terminal, or ``--json``).
    """

    def __init__(self, label: str, total: int | None, *, visible: bool) -> None:
        self.label = label
        self.counts: Counter[str] = Counter()
        self.done = 0
        self._lock = threading.Lock()
        self._rich: RichProgress | None = None
        if visible:
            self._rich = _rich_progress()
            self._task = self._rich.add_task(label, total=total, counts="")

    @property
    def visible(self) -> bool:
        return self._rich is not None

    def start(self) -> None:
        if self._rich is not None:
            self._rich.start()

    def stop(self) -> None:
        if self._rich is not None:
            self._rich.stop()

    def advance(self, outcome: str, n: int = 1) -> None:
        """``n`` more items finished with ``outcome``."""
        if self._rich is None:
            return
        with self._lock:
            self.counts[outcome] += n
            self.done += n
            self._rich.update(self._task, completed=self.done, counts=_counts_text(self.counts))

    def set(self, done: int, counts: Mapping[str, int]) -> None:
        """``done`` items finished so far, with these counts per outcome."""
        if self._rich is None:
            return
        with self._lock:
            self.counts = Counter(counts)
            self.done = done
            self._rich.update(self._task, completed=done, counts=_counts_text(self.counts))


@contextmanager
def progress(label: str, *, as_json: bool, total: int | Callable[[], int | None] | None = None,
             ) -> Iterator[Progress]:
    """A :class:`Progress` shown for the ``with`` block when :func:`shown` says so.

    ``total`` may be a function, called only when the display is shown (counting a file's
    lines costs a read that a pipe or ``--json`` run should not pay).
    """
    visible = shown(as_json)
    if visible and callable(total):
        total = total()
    display = Progress(label, total if isinstance(total, int) else None, visible=visible)
    display.start()
    try:
        yield display
    finally:
        display.stop()


def _rich_progress() -> RichProgress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress as RichProgress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None and task.elapsed and task.completed:  # too few samples yet: the mean so far
                speed = task.completed / task.elapsed
            if speed is None:
                return Text("-/s", style="progress.data.speed")
            return Text(f"{speed:,.0f}/s" if speed >= 10 else f"{speed:.1f}/s", style="progress.data.speed")

    # stdout is never redirected: what the command prints there stays exactly as without a display.
    return RichProgress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[counts]}"),
                        BarColumn(bar_width=20), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
                        TextColumn("eta"), TimeRemainingColumn(),
                        console=Console(stderr=True), transient=True, redirect_stdout=False)


__all__ = ["Progress", "count_lines", "progress", "shown"]
