"""Turning Klaviyo's answers and transport failures into the catalog's errors.

Two texts come from the specification (``engine.catalog``) and are kept word for
word: ``Error calling Klaviyo (HTTP <status>): <detail> [source: <pointer>]`` for a
rejection (or an answer that is not Klaviyo's for the call: :func:`unexpected_answer`,
:func:`redirect_error`) and ``An error occurred while contacting Klaviyo: <detail>``
for a transport failure (including an answer past the deadline or the size limit).
Every text built here passes through :func:`redact` so a key or token can never
leak into a message, and is cut to a few hundred characters.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from engine.catalog import ERROR_CALLING_KLAVIYO, KLAVIYO_CONNECTION_ERROR
from engine.errors import (
    AuthError,
    KlaviyoApiError,
    KlaviyoAuthError,
    KlaviyoConnectionError,
    OAuthReauthorizationError,
    OAuthRefreshError,
    ReauthorizationRequired,
)
from engine.klaviyo.scopes import scopes_for_request

_TAG_RE = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_WS_RE = re.compile(r"\s+")
_AVAILABLE_RE = re.compile(r"available in (\d+(?:\.\d+)?) second", re.I)
#: How much of an answer a message quotes.
SNIPPET = 300
_USERINFO_RE = re.compile(r"(?<=://)[^/@\s]*@")


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``, and any
    ``user:password@`` inside a URL with ``***@``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _USERINFO_RE.sub("***@", text)


def url_password(url: str) -> str | None:
    """The password inside ``url`` (``https://user:pw@host``), if any."""
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def _cut(text: str, limit: int = SNIPPET) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds(raw: str) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds or HTTP date); ``None`` when unusable.

    NaN, zero, negative and past values are unusable (the caller backs off normally);
    infinity and huge values are returned as they are (the caller caps them).
    """
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(value) or value <= 0:
        return None
    return value


def _first_error(body: Any) -> dict[str, Any] | None:
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return errors[0]
    return None


def parse_retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from ``Retry-After`` (or the 429 body's "available in N second").

    ``None`` when neither gives a usable positive number (see :func:`_seconds`).
    """
    raw = response.headers.get("retry-after")
    if raw:
        value = _seconds(raw)
        if value is not None:
            return value
    err = _first_error(_json_or_none(response))
    if err and isinstance(err.get("detail"), str):
        m = _AVAILABLE_RE.search(err["detail"])
        if m:
            return _seconds(m.group(1))
    return None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _text_detail(response: httpx.Response) -> str:
    """A short readable detail from a non-JSON body (an HTML page from a proxy, say)."""
    head = response.content[:20_000].decode("utf-8", errors="replace")
    text = html.unescape(_TAG_RE.sub(" ", head))
    text = _WS_RE.sub(" ", text).strip()
    ctype = response.headers.get("content-type", "unknown").split(";")[0]
    reason = response.reason_phrase or "no reason given"
    if not text:
        return f"{reason} (non-JSON response, {ctype})"
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{reason} (non-JSON response, {ctype}): {text}"


def api_error(response: httpx.Response, secrets: Iterable[str | None] = ()) -> KlaviyoApiError:
    """Build the "Error calling Klaviyo" error for a rejected request.

    Reads JSON:API ``errors[0]`` (``detail``, ``code``, ``source.pointer`` or
    ``source.parameter``); any other body (HTML, empty, malformed JSON) still gives
    a readable detail.  A 401 or 403 gives :class:`~engine.errors.KlaviyoAuthError`.
    """
    secrets = list(secrets)
    status = response.status_code
    errors: list[dict[str, Any]] = []
    body = _json_or_none(response)
    err = _first_error(body)
    if err is not None:
        errors = [e for e in body["errors"][:20] if isinstance(e, dict)]
    if err is not None:
        detail = _cut(str(err.get("detail") or err.get("title") or response.reason_phrase or "no detail"))
        code = err.get("code") if isinstance(err.get("code"), str) else None
        source = err.get("source")
        source = source if isinstance(source, dict) else {}
        pointer = source.get("pointer") or source.get("parameter")
        pointer = _cut(str(pointer), 100) if pointer else None
    else:
        detail, code, pointer = _text_detail(response), None, None
    message = f"{ERROR_CALLING_KLAVIYO} (HTTP {status}): {detail}"
    denied = status == 403 and code == PERMISSION_DENIED
    if denied:
        message += _needed_scopes(response)
    if pointer:
        message += f" [source: {pointer}]"
    retry_after = parse_retry_after(response) if status == 429 else None
    try:
        safe_errors = json.loads(redact(json.dumps(errors), secrets))
    except (ValueError, TypeError, RecursionError):
        safe_errors = []
    # a missing scope refuses this call, not the credentials: the record's failure, not the run's
    cls = KlaviyoAuthError if status in (401, 403) and not denied else KlaviyoApiError
    return cls(
        redact(message, secrets),
        status=status,
        klaviyo_code=code,
        pointer=pointer,
        retry_after=retry_after,
        errors=safe_errors,
    )


#: Klaviyo's error code for credentials that lack a scope the call needs (HTTP 403).
PERMISSION_DENIED = "permission_denied"


def _needed_scopes(response: httpx.Response) -> str:
    """`` (GET /api/lists needs the scope(s) lists:read)`` from Klaviyo's specs, or ``""``."""
    try:
        request = response.request
    except RuntimeError:  # a response built without its request
        return ""
    try:
        needed = scopes_for_request(request.method, request.url.path, request.headers.get("revision"))
    except (OSError, ValueError, KeyError):
        return ""
    if not needed:
        return ""
    return f" ({request.method} {request.url.path} needs the scope(s) {', '.join(needed)})"


def snippet(response: httpx.Response, secrets: Iterable[str | None] = ()) -> str:
    """What came back: the body as text, whitespace collapsed, redacted, cut to :data:`SNIPPET`."""
    text = _WS_RE.sub(" ", response.content[: SNIPPET * 8].decode("utf-8", errors="replace")).strip()
    return _cut(redact(text, secrets)) if text else "(empty body)"


def unexpected_answer(response: httpx.Response, op: str, expected: str, problem: str,
                      secrets: Iterable[str | None] = ()) -> KlaviyoApiError:
    """The error for an answer that is not Klaviyo's for ``op`` (wrong status or body shape).

    Transient: a proxy or captive portal answering in Klaviyo's place may go away, and
    every write the client sends is safe to repeat.
    """
    status = response.status_code
    ctype = response.headers.get("content-type") or "no content type"
    message = (f"{ERROR_CALLING_KLAVIYO} (HTTP {status}): unexpected answer to {op}: {problem} (expected "
               f"{expected}); got {ctype.split(';')[0].strip()}: {snippet(response, secrets)}")
    return KlaviyoApiError(redact(message, secrets), status=status, transient=True)


def redirect_error(response: httpx.Response, secrets: Iterable[str | None] = ()) -> KlaviyoApiError:
    """The error for a 3xx: redirects are never followed (the API URL is wrong; not transient)."""
    status = response.status_code
    location = response.headers.get("location")
    where = f"redirected to {_cut(redact(location, secrets), 200)}" if location else "a redirect without a Location"
    message = (f"{ERROR_CALLING_KLAVIYO} (HTTP {status}): {where}; redirects are not followed, check api_url "
               f"(Klaviyo's API is https://a.klaviyo.com)")
    return KlaviyoApiError(redact(message, secrets), status=status, transient=False)


def auth_failure(exc: AuthError) -> KlaviyoAuthError:
    """``exc`` from the token source as a :class:`KlaviyoAuthError` that is still the same kind of
    :class:`AuthError` (its message, code and detail kept), so either ``except`` catches it."""
    cls = OAuthReauthorizationError if isinstance(exc, ReauthorizationRequired) else OAuthRefreshError
    return cls(exc.message, status=401, code=exc.code, detail=exc.detail, transient=False)


def connection_error(exc: BaseException | str, secrets: Iterable[str | None] = ()) -> KlaviyoConnectionError:
    """Build the "An error occurred while contacting Klaviyo" error for a transport failure
    (an exception, or the text of a limit the client enforced)."""
    if isinstance(exc, str):
        detail = exc
    else:
        detail = str(exc).strip() or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException) and "timed out" not in detail.lower():
            detail = f"request timed out ({type(exc).__name__}: {detail})"
    return KlaviyoConnectionError(_cut(redact(f"{KLAVIYO_CONNECTION_ERROR}: {detail}", secrets), 500))


__all__ = ["PERMISSION_DENIED", "SNIPPET", "api_error",
           "auth_failure", "connection_error", "parse_retry_after", "redact", "redirect_error", "snippet",
           "unexpected_answer", "url_password"]
