"""Masking secrets before anything is stored or printed.

The hub's error log and every printed setting pass through :func:`redact`, so a
Klaviyo private key (``pk_...``), an OAuth bearer token or a client secret that
slipped into an exception message never reaches the database or the terminal.
Known secret values (the configured API key, the client secret) can be given
explicitly and are masked wherever they appear, in every spelling a request
carries them in (see :func:`secret_forms`):

- the raw value, and its URL-encoded forms (a form body, a query string);
- HTTP Basic client authentication, ``base64(client_id:client_secret)``, in
  standard, URL-safe and unpadded base64, and each of those URL-encoded.  When
  the client id is not known, every base64-looking run in the text is decoded
  and masked if it holds a known secret, so an echoed ``Authorization: Basic``
  value is caught whatever id it was built with.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote_plus

MASK = "********"
_MIN_SECRET = 4

# Shapes that are secrets whatever their context.  Klaviyo private keys are
# "pk_" followed by hex; bearer tokens and "Klaviyo-API-Key" headers carry the
# secret after a space; key=value and "key": "value" forms cover tokens in
# query strings, form bodies and JSON.
_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)"
        r"(?:(?:Bearer|Basic|Klaviyo-API-Key)(?:\s+|%20|\+))?[^\"'\s,}]+"
    ),
    re.compile(r"\bpk_[A-Za-z0-9_]{6,}"),
    re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9._~+/=-]+"),
    # "Basic <base64>": a run with a digit or base64 punctuation, so "Basic authentication" stays
    re.compile(r"(\bBasic(?:\s+|%20|\+))(?=[A-Za-z0-9+/=%_-]*[0-9+/=%])[A-Za-z0-9+/=%_-]{8,}"),
    re.compile(r"(?i)(\bKlaviyo-API-Key\s+)\S+"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|api_key|password)"
        r"[\"']?\s*(?:[:=]|%3D)\s*[\"']?)[^\"'&\s,}]+"
    ),
)
# A run that may be base64 (standard or URL-safe), padding possibly URL-encoded; it does not
# start inside a %XX escape.
_BASE64_RUN = re.compile(r"(?<!%)(?<!%[0-9A-Fa-f])[A-Za-z0-9+/_-]{8,}(?:(?:=|%3[Dd]){1,2})?")


def _encodings(text: str) -> set[str]:
    return {text, quote(text, safe=""), quote_plus(text, safe="")}


def _base64_forms(raw: bytes) -> set[str]:
    std, url = base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()
    forms = {std, url, std.rstrip("="), url.rstrip("=")}
    return {f for form in forms for f in _encodings(form)}


def secret_forms(secret: str, *, client_id: str | None = None) -> tuple[str, ...]:
    """Every spelling of ``secret`` an HTTP request or its echo may carry, longest first.

    Args:
        secret: the literal value (an API key, a client secret, a token).
        client_id: the OAuth client id, when ``secret`` is its client secret: adds
            ``base64(client_id:secret)`` (HTTP Basic, RFC 6749 2.3.1 and as sent raw)
            in standard, URL-safe and unpadded base64, each also URL-encoded.

    Returns:
        The forms, longest first (so a longer spelling is masked before a part of it).
    """
    if not secret or len(secret) < _MIN_SECRET:
        return ()
    forms = _encodings(secret)
    if client_id is not None:
        for ident, value in ((client_id, secret), (quote_plus(client_id), quote_plus(secret))):
            for encoding in ("utf-8", "latin-1"):
                try:
                    raw = f"{ident}:{value}".encode(encoding)
                except UnicodeEncodeError:
                    continue
                forms |= _base64_forms(raw)
    return tuple(sorted(forms, key=lambda f: (-len(f), f)))


@functools.lru_cache(maxsize=64)
def _prepared(secrets: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every form to replace, the raw values and their URL-encoded forms to look for in base64)."""
    raw = tuple(s for s in dict.fromkeys(secrets) if s and len(s) >= _MIN_SECRET)
    forms = {f for s in raw for f in secret_forms(s)}
    return tuple(sorted(forms, key=lambda f: (-len(f), f))), tuple(forms)


def _holds_secret(run: str, needles: tuple[str, ...]) -> bool:
    """True when ``run`` (or it shifted by up to 3 characters, for a run glued to a prefix
    such as ``%20``) decodes as base64 to text holding one of ``needles``."""
    body = run.replace("%3D", "=").replace("%3d", "=")
    for shift in range(4):
        chunk = body[shift:].rstrip("=")
        if len(chunk) < 6:
            break
        chunk += "=" * (-len(chunk) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                text = decode(chunk).decode("latin-1")
            except (binascii.Error, ValueError):
                continue
            if any(n in text or n in unquote_plus(text) for n in needles):
                return True
    return False


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every secret-looking part replaced by ``********``.

    Args:
        text: any message, detail or value about to be stored or printed.
        secrets: literal secret values to mask too, in every spelling of
            :func:`secret_forms` and inside any base64 run (empty strings are ignored).
            Pass forms made with a ``client_id`` to mask Basic authentication exactly.

    Returns:
        The masked text; text without secrets comes back unchanged.
    """
    forms, needles = _prepared(tuple(secrets))
    for value in forms:
        text = text.replace(value, MASK)
    if needles:
        text = _BASE64_RUN.sub(lambda m: MASK if _holds_secret(m.group(0), needles) else m.group(0), text)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


def looks_secret(text: str) -> bool:
    """True when :func:`redact` would change ``text``."""
    return redact(text) != text


__all__ = ["MASK", "looks_secret", "redact", "secret_forms"]
