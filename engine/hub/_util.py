"""Small helpers shared by the hub's modules."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds (sorts correctly as text)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON (stable text, so equal values compare equal as strings)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
