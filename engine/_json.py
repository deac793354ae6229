"""JSON text checked for nesting before it is parsed.

``json.loads`` recurses once per level: a record nested 100,000 deep exhausts the stack, and
what Python runs while the stack is that deep (a finaliser, the unraisable-exception hook) can
fail too and print to standard error.  :func:`nested_deeper_than` finds such text without
parsing it, so it is refused before ``json.loads`` ever sees it.
"""

from __future__ import annotations

import re

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def nested_deeper_than(text: str, limit: int) -> bool:
    """True when lists and objects nest more than ``limit`` levels deep in the JSON ``text``.

    Brackets inside strings do not count.  Text with at most ``limit`` opening brackets in all
    cannot be too deep and is answered without a scan.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


__all__ = ["nested_deeper_than"]
