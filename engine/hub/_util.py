"""Small helpers shared by the hub's modules."""

from __future__ import annotations

import json
import time
from typing import Any

_second: tuple[int, str] = (-1, "")  # the last second formatted, replaced whole (thread-safe)


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds (sorts correctly as text).

    The date and time of day are formatted once a second; a write stamps several rows, so
    this is on every import's path.
    """
    global _second
    sec, micro = divmod(time.time_ns() // 1000, 1_000_000)
    last = _second
    if last[0] != sec:
        last = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{last[1]}.{micro:06d}Z"


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON (stable text, so equal values compare equal as strings)."""
    return _ENCODER.encode(value)
