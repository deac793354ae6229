"""Klaviyo's ``filter`` query syntax, parsed and evaluated for the sandbox.

Grammar (``API-NOTES.md`` §2.1): comma-separated conditions, all ANDed; each
``operator(field,value)``; values are double- or single-quoted strings,
``[...]`` lists, unquoted ISO datetimes, numbers, ``true``/``false``/``null``.
Each endpoint declares which field/operator pairs it allows, as Klaviyo's spec
does; anything else is a :class:`FilterError` naming the offending part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.errors import FilterError

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<punct>[(),\[\]])
    | (?P<word>[^\s(),\[\]"']+)
    )""",
    re.X,
)


@dataclass(frozen=True)
class Condition:
    op: str
    field: str
    value: Any


# Alike flows/_inbound_cursor.parse_time (which also converts to UTC) on purpose: the sandbox reads
# times as Klaviyo would, sharing no parsing with the engine it tests.
def parse_datetime(text: str) -> datetime:
    """An ISO-8601 datetime; naive values are UTC."""
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"Invalid filter: unexpected text at position {pos}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _literal(kind: str, raw: str) -> Any:
    if kind == "str":
        body = raw[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    if re.fullmatch(r"-?\d+(\.\d+)?", raw):
        return float(raw) if "." in raw else int(raw)
    try:
        return parse_datetime(raw)
    except ValueError:
        raise FilterError(f"Invalid filter value {raw!r}: strings must be quoted") from None


def parse(text: str, allowed: Mapping[str, set[str]], datetimes: Collection[str] = ()) -> list[Condition]:
    """Parse ``text`` into conditions, checking each against ``allowed`` (field -> operators).

    Fields in ``datetimes`` take an unquoted ISO datetime, as Klaviyo's do: a quoted one
    (``greater-than(updated,"2024-01-01T00:00:00Z")``) is a string, refused like Klaviyo does
    rather than compared to nothing.
    """
    toks = _tokens(text)
    conds: list[Condition] = []
    i = 0

    def expect(kind: str, value: str | None = None) -> str:
        nonlocal i
        if i >= len(toks) or toks[i][0] != kind or (value is not None and toks[i][1] != value):
            got = toks[i][1] if i < len(toks) else "end of filter"
            raise FilterError(f"Invalid filter: expected {value or kind} but found {got!r}")
        i += 1
        return toks[i - 1][1]

    while i < len(toks):
        op = expect("word")
        expect("punct", "(")
        field = expect("word")
        expect("punct", ",")
        if i < len(toks) and toks[i] == ("punct", "["):
            i += 1
            values: list[Any] = []
            while i < len(toks) and toks[i] != ("punct", "]"):
                kind, raw = toks[i]
                if kind == "punct" and raw == ",":
                    i += 1
                    continue
                values.append(_literal(kind, raw))
                i += 1
            expect("punct", "]")
            value: Any = values
        else:
            if i >= len(toks):
                raise FilterError("Invalid filter: missing value")
            value = _literal(*toks[i])
            i += 1
        expect("punct", ")")
        if i < len(toks):
            expect("punct", ",")
        if field not in allowed:
            raise FilterError(f"'{field}' is not a valid field for the resource. "
                              f"Allowed fields: {', '.join(sorted(allowed))}")
        if op not in allowed[field]:
            raise FilterError(f"Operator '{op}' is not allowed for field '{field}'. "
                              f"Allowed: {', '.join(sorted(allowed[field]))}")
        if op == "any" and not isinstance(value, list):
            raise FilterError(f"Operator 'any' needs a list value for field '{field}'")
        if field in datetimes and not all(isinstance(v, datetime)
                                          for v in (value if isinstance(value, list) else [value])):
            shown = json.dumps(value) if isinstance(value, str) else repr(value)
            raise FilterError(
                f"Invalid filter: '{field}' takes a datetime, not {shown}; write it unquoted in ISO 8601, "
                f"e.g. {op}({field},2024-01-01T00:00:00Z)")
        conds.append(Condition(op, field, value))
    return conds


def _cmp_value(v: Any) -> Any:
    return v  # callers normalise case-insensitive fields (email) on both sides


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": lambda a, b: a is not None and _cmp_value(a) == _cmp_value(b),
    "any": lambda a, b: a is not None and _cmp_value(a) in [_cmp_value(x) for x in b],
    "greater-than": lambda a, b: a is not None and a > b,
    "greater-or-equal": lambda a, b: a is not None and a >= b,
    "less-than": lambda a, b: a is not None and a < b,
    "less-or-equal": lambda a, b: a is not None and a <= b,
}


def matches(conds: list[Condition], getter: Callable[[str], Any]) -> bool:
    """Whether a record satisfies every condition; ``getter(field)`` reads the record."""
    for c in conds:
        actual = getter(c.field)
        expected = c.value
        if isinstance(actual, datetime) and not isinstance(expected, (datetime, list)):
            return False
        try:
            if not OPS[c.op](actual, expected):
                return False
        except TypeError:
            return False
    return True


__all__ = ["Condition", "parse", "matches", "parse_datetime"]
