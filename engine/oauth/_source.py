"""The OAuth token source the Klaviyo client calls (:class:`~engine.klaviyo.TokenSource`).

Contract, as the client uses it:

- ``await get_token()`` before each request: the stored access token while it has
  more than ``skew`` seconds left, else one refresh first;
- ``await on_unauthorized()`` after a 401: one refresh, then the client retries once.

Refreshes are serialised by one :class:`asyncio.Lock` in the process and by a lock
row in the hub across processes (``acquire_token_lock``; a refresh rotates the
refresh token, so two at once would make one fail with ``invalid_grant``): when
many requests or processes find the token expired (or get 401 together), the
first refreshes and the rest take its result.  Each request remembers (in a context variable, so per task) which
generation of the token it was given; a 401 on a token older than the current
one takes the current one instead of refreshing again, so late 401s from
requests already in flight during a refresh cost nothing.  Before refreshing,
the hub is re-read (before and after taking the hub lock, and while waiting for
it), so a token another process already refreshed is adopted without a refresh.

A refresh answer's ``refresh_token`` replaces the stored one (rotation); one
that leaves it out keeps the old.  A rejected refresh token (``invalid_grant``:
revoked, uninstalled, 90 days unused) raises
:class:`~engine.errors.ReauthorizationRequired` with the re-authorise message;
every failure is written to the hub error log (flow "Authorization and Connection"),
and one only a new login cures is recorded (``set_token_failure``) so that
``auth status`` says the connection needs re-authorisation.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
import uuid
from typing import Any

import httpx
from authlib.integrations.base_client.errors import OAuthError

from engine.errors import AuthError, KlaviyoConnectionError, ReauthorizationRequired, RefreshError
from engine.oauth._client import (
    PROVIDER,
    http_detail,
    log_auth_error,
    oauth_client,
    oauth_endpoints,
    scrub,
    store_tokens,
)
from engine.settings import Settings

log = logging.getLogger("engine.oauth")

# (id of the token source, generation of the token this task was given)
_GIVEN: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("oauth_token_given", default=(0, -1))

#: Seconds a refresh lock outlives the token call's timeout (a dead holder frees it then).
LOCK_MARGIN_S = 15.0
#: Seconds between looks at the hub while another process refreshes.
LOCK_POLL_S = 0.05

REAUTHORIZE = ("The Klaviyo OAuth connection is no longer valid: Klaviyo rejected the stored refresh "
               "token (revoked, uninstalled or unused for 90 days). Run `klaviyo-sync auth login` to "
               "authorise again.")


class HubTokenSource:
    """Access tokens from the hub's OAuth connection, refreshed when due.

    Args:
        settings: API URL and OAuth client settings (client id and secret for refreshes).
        hub: the hub store holding the ``"klaviyo"`` tokens.
        skew: refresh when fewer than this many seconds are left (Klaviyo's SDK uses 30).
        transport: httpx transport for token calls (tests).
    """

    def __init__(self, settings: Settings, hub: Any, *, skew: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 30.0) -> None:
        self.settings = settings
        self.hub = hub
        self.skew = skew
        self._transport = transport
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._generation = 0
        self._access: str | None = None
        self._expires_at: float | None = None
        self._load(hub.get_token(PROVIDER))

    def __repr__(self) -> str:  # never show a token
        return f"HubTokenSource(provider={PROVIDER!r}, expires_at={self._expires_at!r})"

    def _load(self, stored: dict[str, Any] | None) -> None:
        self._access = (stored or {}).get("access_token") or None
        self._expires_at = (stored or {}).get("expires_at")

    def _fresh(self) -> bool:
        if not self._access:
            return False
        return self._expires_at is None or self._expires_at - time.time() > self.skew

    async def get_token(self) -> str:
        """A valid access token, refreshing first when it is (nearly) expired."""
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    await self._refresh()
        assert self._access is not None
        _GIVEN.set((id(self), self._generation))
        return self._access

    async def on_unauthorized(self) -> str | None:
        """After a 401: a refreshed token (one refresh however many requests ask)."""
        owner, given = _GIVEN.get()
        async with self._lock:
            if owner != id(self) or given == self._generation:
                await self._refresh()
            _GIVEN.set((id(self), self._generation))
            return self._access

    def _adopt(self) -> bool:
        """Take a fresh token another source (another process) stored since ours; True if taken."""
        stored = self.hub.get_token(PROVIDER)
        if stored and stored.get("access_token") and stored.get("access_token") != self._access:
            self._load(stored)
            if self._fresh():
                self._bump()
                return True
        return False

    async def _refresh(self) -> None:
        """Refresh once across every process on this hub; call under the asyncio lock.

        Waits for the hub's refresh lock (:meth:`SqliteHub.acquire_token_lock`), re-reading
        the stored token meanwhile: when another process refreshed, its token is adopted
        and no refresh is made.
        """
        if self._adopt():
            return
        owner = f"{os.getpid()}-{uuid.uuid4().hex}"
        ttl = self._timeout + LOCK_MARGIN_S
        deadline = time.monotonic() + ttl + LOCK_MARGIN_S
        while not self.hub.acquire_token_lock(PROVIDER, owner, ttl=ttl):
            if self._adopt():
                return
            if time.monotonic() > deadline:  # unreachable while holders honour ttl; never wait forever
                conn = KlaviyoConnectionError(
                    "An error occurred while contacting Klaviyo: another process held the OAuth "
                    f"refresh lock for more than {ttl + LOCK_MARGIN_S:g}s")
                log_auth_error(self.hub, conn)
                raise conn
            await asyncio.sleep(LOCK_POLL_S)
        try:
            if not self._adopt():
                await self._refresh_locked()
        finally:
            self.hub.release_token_lock(PROVIDER, owner)

    def _give_up(self, failure: AuthError) -> AuthError:
        """Log a refresh failure that only a new login cures and record it for ``auth status``."""
        log_auth_error(self.hub, failure)
        try:
            self.hub.set_token_failure(PROVIDER, code=failure.code, message=failure.message,
                                       detail=failure.detail)
        except Exception:  # the record must never hide the error being reported
            log.exception("could not record the OAuth refresh failure in the hub")
        return failure

    async def _refresh_locked(self) -> None:
        """Refresh with the stored refresh token and store the answer; call under both locks."""
        stored = self.hub.get_token(PROVIDER)
        refresh_token = (stored or {}).get("refresh_token")
        if not refresh_token:
            raise self._give_up(ReauthorizationRequired(
                REAUTHORIZE, detail="no refresh token is stored" if stored else "no OAuth connection is stored"))
        try:
            async with oauth_client(self.settings, self.hub, transport=self._transport,
                                    timeout=self._timeout) as client:
                token = await client.refresh_token(oauth_endpoints(self.settings).token_url,
                                                   refresh_token=refresh_token)
        except OAuthError as exc:
            if exc.error == "invalid_client":
                failure: AuthError = RefreshError(
                    "The Klaviyo access token could not be refreshed: Klaviyo rejected the client "
                    "credentials; check oauth.client_id and oauth.client_secret.",
                    detail="Klaviyo answered invalid_client")
            else:
                failure = ReauthorizationRequired(
                    REAUTHORIZE, detail=scrub(self.settings, f"Klaviyo answered {exc.error}"))
            raise self._give_up(failure) from None
        except (httpx.HTTPError, ValueError) as exc:
            conn = KlaviyoConnectionError(
                f"An error occurred while contacting Klaviyo: refreshing the OAuth access token failed "
                f"({http_detail(exc)})")
            log_auth_error(self.hub, conn)
            raise conn from None
        if not token.get("access_token"):
            failure = RefreshError("The Klaviyo access token could not be refreshed: the answer held no "
                                   "access token.")
            log_auth_error(self.hub, failure)
            raise failure
        store_tokens(self.hub, token, previous=stored)
        self._load(self.hub.get_token(PROVIDER))
        self._bump()
        log.info("OAuth access token refreshed (expires in %ss)", token.get("expires_in"))

    def _bump(self) -> None:
        self._generation += 1


def token_source_for(settings: Settings, hub: Any) -> HubTokenSource | None:
    """The factory :func:`engine.connect.open_client` tries: a token source when the hub
    holds an OAuth connection, else None (the API key is used)."""
    if hub is None or not hasattr(hub, "get_token"):
        return None
    stored = hub.get_token(PROVIDER)
    if not stored or not (stored.get("access_token") or stored.get("refresh_token")):
        return None
    return HubTokenSource(settings, hub)


__all__ = ["HubTokenSource", "REAUTHORIZE", "token_source_for"]
