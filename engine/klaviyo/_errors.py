"""Turning Klaviyo's answers and transport failures into the catalog's errors.

Two texts come from the specification (``engine.catalog``) and are kept word for
word: ``Error calling Klaviyo (HTTP <status>): <detail> [source: <pointer>]`` for a
rejection and ``An error occurred while contacting Klaviyo: <detail>`` for a
transport failure.  Every text built here passes through :func:`redact` so a
key or token can never leak into a message.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any

import httpx

from engine.catalog import ERROR_CALLING_KLAVIYO, KLAVIYO_CONNECTION_ERROR
from engine.errors import KlaviyoApiError, KlaviyoConnectionError

_TAG_RE = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_WS_RE = re.compile(r"\s+")
_AVAILABLE_RE = re.compile(r"available in (\d+(?:\.\d+)?) second", re.I)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _first_error(body: Any) -> dict[str, Any] | None:
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return errors[0]
    return None


def parse_retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait from ``Retry-After`` (or the 429 body's "available in N second")."""
    raw = response.headers.get("retry-after")
    if raw:
        try:
            return max(float(raw), 0.0)
        except ValueError:
            from email.utils import parsedate_to_datetime
            from datetime import datetime, timezone

            try:
                when = parsedate_to_datetime(raw)
                return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)
            except (TypeError, ValueError):
                pass
    try:
        err = _first_error(response.json())
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None
    if err and isinstance(err.get("detail"), str):
        m = _AVAILABLE_RE.search(err["detail"])
        if m:
            return float(m.group(1))
    return None


def _text_detail(response: httpx.Response) -> str:
    """A short readable detail from a non-JSON body (an HTML page from a proxy, say)."""
    text = html.unescape(_TAG_RE.sub(" ", response.text or ""))
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
    a readable detail.
    """
    secrets = list(secrets)
    status = response.status_code
    err: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = []
    try:
        body = response.json()
        err = _first_error(body)
        if err is not None:
            errors = [e for e in body["errors"] if isinstance(e, dict)]
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    if err is not None:
        detail = str(err.get("detail") or err.get("title") or response.reason_phrase or "no detail")
        code = err.get("code") if isinstance(err.get("code"), str) else None
        source = err.get("source") if isinstance(err.get("source"), dict) else {}
        pointer = source.get("pointer") or source.get("parameter")
        pointer = str(pointer) if pointer else None
    else:
        detail, code, pointer = _text_detail(response), None, None
    message = f"{ERROR_CALLING_KLAVIYO} (HTTP {status}): {detail}"
    if pointer:
        message += f" [source: {pointer}]"
    retry_after = parse_retry_after(response) if status == 429 else None
    return KlaviyoApiError(
        redact(message, secrets),
        status=status,
        klaviyo_code=code,
        pointer=pointer,
        retry_after=retry_after,
        errors=json.loads(redact(json.dumps(errors), secrets)),
    )


def connection_error(exc: BaseException, secrets: Iterable[str | None] = ()) -> KlaviyoConnectionError:
    """Build the "An error occurred while contacting Klaviyo" error for a transport failure."""
    detail = str(exc).strip() or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException) and "timed out" not in detail.lower():
        detail = f"request timed out ({type(exc).__name__}: {detail})"
    return KlaviyoConnectionError(redact(f"{KLAVIYO_CONNECTION_ERROR}: {detail}", secrets))


__all__ = ["api_error", "connection_error", "parse_retry_after", "redact"]
