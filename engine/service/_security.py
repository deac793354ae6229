"""Who may do what: the API token, page sessions and CSRF tokens.

- **API** (``/api/...``): every call needs ``Authorization: Bearer <service.token>``.  With no
  token in the settings the API is disabled (401, V401): nothing can change the hub over HTTP.
- **Pages**: with a token set, every page needs a session, opened by entering the token on
  ``/login``; sessions live in the process (a restart signs everyone out).  With no token set,
  pages are read-only: viewing works (the service then only binds a loopback address), every
  form is refused (403, V403).
- **CSRF**: every visitor gets a random ``ks_sid`` cookie (HttpOnly, SameSite=Strict); every
  form carries ``csrf`` = HMAC(process key, sid) and a POST without the matching value is
  refused (403, V403).  Logging in issues a fresh sid (no session fixation).
- ``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json`` need nothing: they hold no
  record data and no secret.

Tokens are compared in constant time and never logged or rendered.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from engine.settings import Secret, is_loopback  # is_loopback: whether binding a host keeps the service on this machine

SID_COOKIE = "ks_sid"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/login", "/static/style.css"})


class Guard:
    """The token check, the page sessions and the CSRF tokens of one app."""

    def __init__(self, token: Secret | None) -> None:
        self._token = token.reveal().encode() if token is not None and token.reveal() else None
        self._key = secrets.token_bytes(32)
        self._sessions: set[str] = set()

    @property
    def enabled(self) -> bool:
        """Whether a token is configured (the API and forms work only then)."""
        return self._token is not None

    def token_ok(self, presented: str | None) -> bool:
        if self._token is None or not presented:
            return False
        return hmac.compare_digest(self._token, presented.encode())

    def bearer_ok(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    @staticmethod
    def new_sid() -> str:
        return secrets.token_urlsafe(24)

    def csrf(self, sid: str) -> str:
        return hmac.new(self._key, f"csrf:{sid}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, sid: str | None, presented: str | None) -> bool:
        return bool(sid and presented) and hmac.compare_digest(self.csrf(sid or ""), presented or "")

    def open_session(self, sid: str) -> None:
        self._sessions.add(sid)

    def close_session(self, sid: str | None) -> None:
        self._sessions.discard(sid or "")

    def signed_in(self, sid: str | None) -> bool:
        return bool(sid) and sid in self._sessions


__all__ = ["Guard", "PUBLIC_PATHS", "SID_COOKIE", "is_loopback"]
