"""What a run did, counted per flow, for the CLI's summary and the demo.

A flow (a collection at work) reports one :class:`RunSummary`. Each record ends
as exactly one of the outcomes ``created``, ``updated``, ``unchanged`` (an order
already sent with the same content: nothing sent), ``linked`` (matched to
an existing record and linked), ``skipped`` (filtered, unchanged, or disabled by a
setting such as Generate Events = FALSE), ``invalid`` (mapping refused it) or
``failed`` (the destination refused it, or Klaviyo was unreachable). Warnings and
errors are also written to the hub's error log; the summary only counts them.
docs/outbound.md and docs/inbound.md explain each word per collection ("Outcomes").
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("created", "updated", "unchanged", "linked", "skipped", "invalid", "failed")
#: the outcome of an outbound record not started because Klaviyo refused the credentials earlier
#: in the run (its change stays queued); shown per record (``--dry-run``, ``--json``), never counted
NOT_SENT = "not sent"


@dataclass
class RunSummary:
    """Counts per flow and outcome, warnings, errors, Klaviyo calls and time taken."""

    name: str
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    warnings: int = 0
    errors: int = 0
    notes: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def count(self, flow: str, outcome: str, n: int = 1) -> None:
        """Add ``n`` records of ``outcome`` to ``flow``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
        self.counts.setdefault(flow, Counter())[outcome] += n

    def note(self, text: str) -> None:
        """A line for the summary (e.g. "Generate Events is FALSE: no events were sent")."""
        if text not in self.notes:
            self.notes.append(text)

    def finish(self, calls: dict[str, int] | None = None) -> RunSummary:
        self.finished = time.monotonic()
        if calls:
            self.calls = dict(calls)
        return self

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def total(self, outcome: str) -> int:
        return sum(c[outcome] for c in self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "flows": {flow: {o: c[o] for o in OUTCOMES if c[o]} for flow, c in self.counts.items()},
            "warnings": self.warnings,
            "errors": self.errors,
            "notes": list(self.notes),
            "calls": dict(self.calls),
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """The summary as plain text lines."""
        out = [f"{self.name}: {self.seconds:.1f}s"]
        for flow, c in self.counts.items():
            parts = ", ".join(f"{c[o]} {o}" for o in OUTCOMES if c[o]) or "nothing to do"
            out.append(f"  {flow}: {parts}")
        out.append(f"  warnings: {self.warnings}, errors: {self.errors}")
        if self.calls:
            total = sum(v for k, v in self.calls.items() if k != "retries")
            calls = ", ".join(f"{k} {v}" for k, v in sorted(self.calls.items()))
            out.append(f"  Klaviyo calls: {total} ({calls})")
        out.extend(f"  note: {n}" for n in self.notes)
        return out
