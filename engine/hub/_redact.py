"""Masking secrets before anything is stored or printed.

The hub's error log and every printed setting pass through :func:`redact`, so a
Klaviyo private key (``pk_...``), an OAuth bearer token or a client secret that
slipped into an exception message never reaches the database or the terminal.
Known secret values (the configured API key, the client secret) can be given
explicitly and are masked wherever they appear, whatever their shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "********"

# Shapes that are secrets whatever their context.  Klaviyo private keys are
# "pk_" followed by hex; bearer tokens and "Klaviyo-API-Key" headers carry the
# secret after a space; key=value and "key": "value" forms cover tokens in
# query strings, form bodies and JSON.
_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)"
        r"(?:(?:Bearer|Basic|Klaviyo-API-Key)\s+)?[^\"'\s,}]+"
    ),
    re.compile(r"\bpk_[A-Za-z0-9_]{6,}"),
    re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(\bKlaviyo-API-Key\s+)\S+"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|api_key|password)"
        r"[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]+"
    ),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret-looking part replaced by ``********``.

    Args:
        text: any message, detail or value about to be stored or printed.
        secrets: literal secret values to mask too (empty strings are ignored).

    Returns:
        The masked text; text without secrets comes back unchanged.
    """
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


def looks_secret(text: str) -> bool:
    """True when :func:`redact` would change ``text``."""
    return redact(text) != text
