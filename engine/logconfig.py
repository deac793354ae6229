"""Logging for the command line: level, text or JSON lines on standard error, secrets masked.

Every module logs through ``logging.getLogger(__name__)`` under the ``engine`` logger;
:func:`configure` gives that logger one handler on standard error.  Every record passes
:class:`MaskSecrets` first, which replaces

* each secret registered with :func:`register_secret` (the settings register the API key,
  the OAuth client secret and tokens when they load), and
* anything shaped like a credential: ``pk_...`` private keys, ``Bearer <token>``,
  ``Klaviyo-API-Key <key>``, ``access_token`` / ``refresh_token`` / ``client_secret`` /
  ``api_key`` values, ``code=`` / ``token=`` in query strings, a password inside a URL,

with ``***`` -- in the message, its arguments and any traceback text.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading
from typing import Any, Final

LEVELS: Final = ("debug", "info", "warning", "error")
FORMATS: Final = ("text", "json")
MASK: Final = "***"

_PATTERNS = [
    (re.compile(r"\bpk_[A-Za-z0-9_]{4,}"), "pk_" + MASK),
    (re.compile(r"(?i)\b(Bearer|Klaviyo-API-Key)\s+[^\s\"',;]+"), r"\1 " + MASK),
    (re.compile(r"(?i)\b(access_token|refresh_token|client_secret|api_key)(\"?\s*[=:]\s*\"?)[^\s\"'&,;}]+"),
     r"\1\2" + MASK),
    (re.compile(r"(?i)([?&](?:code|token)=)[^&\s\"']+"), r"\1" + MASK),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+@"), r"\1" + MASK + "@"),
]
_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it would appear in a log record (values under 4 characters are ignored)."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def mask(text: str) -> str:
    """``text`` with every registered secret and credential-shaped value replaced by ``***``."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class MaskSecrets(logging.Filter):
    """Rewrites a record so its message, arguments and exception text carry no secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = str(record.msg)
        record.msg, record.args = mask(message), None
        if record.exc_info:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_text:
            out["exception"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


_HANDLER_NAME = "klaviyo-sync"


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(level: str = "warning", fmt: str = "text") -> None:
    """Send the ``engine`` loggers' records at ``level`` and above to standard error in ``fmt``.

    Raises:
        ValueError: an unknown level or format (the CLI's choices prevent it).
    """
    if level not in LEVELS or fmt not in FORMATS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)} and format one of {', '.join(FORMATS)}")
    root = logging.getLogger("engine")
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    handler = _Stderr()
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(MaskSecrets())
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def reset() -> None:
    """Remove the handler :func:`configure` installed (tests)."""
    root = logging.getLogger("engine")
    for h in list(root.handlers):
        if h.get_name() == _HANDLER_NAME:
            root.removeHandler(h)
    root.setLevel(logging.NOTSET)


__all__ = ["configure", "reset", "register_secret", "mask", "MaskSecrets", "JsonFormatter", "LEVELS", "FORMATS"]
