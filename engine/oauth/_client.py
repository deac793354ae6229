"""What both halves of OAuth share: the endpoints, the client credentials, the authlib client,
storing a token answer, and logging a failure without a secret in it.

:mod:`engine.oauth._login` (``auth login`` / ``status`` / ``logout``) and
:mod:`engine.oauth._source` (the token source the Klaviyo client calls) are built on this
module; it imports neither.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client.errors import OAuthError

with warnings.catch_warnings():
    # authlib 1.9 prefers the httpx2 fork and warns when it falls back to httpx; the
    # engine is built on httpx (the Klaviyo client, MockTransport tests), so stay on it.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from engine import catalog
from engine.errors import ClientIdMissingError, ClientSecretMissingError, KlaviyoSyncError
from engine.hub import redact, secret_forms
from engine.settings import Settings

log = logging.getLogger("engine.oauth")

E = TypeVar("E", bound=KlaviyoSyncError)

PROVIDER = "klaviyo"
FLOW = "Authorization and Connection"
KLAVIYO_AUTHORIZE_URL = "https://www.klaviyo.com/oauth/authorize"


# -- configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class OAuthEndpoints:
    """Where each OAuth step goes. Token and revoke sit on the API host (Klaviyo blocks
    them on www since 2025-03-31); the browser page on www for Klaviyo."""

    authorize_url: str
    token_url: str
    revoke_url: str


def oauth_endpoints(settings: Settings) -> OAuthEndpoints:
    """The endpoints for these settings (see :class:`OAuthEndpoints`)."""
    base = settings.api_url.rstrip("/")
    host = (urlsplit(base).hostname or "").lower()
    on_klaviyo = host == "klaviyo.com" or host.endswith(".klaviyo.com")
    authorize = settings.oauth.authorize_url or (
        KLAVIYO_AUTHORIZE_URL if on_klaviyo else f"{base}/oauth/authorize")
    return OAuthEndpoints(authorize, f"{base}/oauth/token", f"{base}/oauth/revoke")


def log_auth_error(hub: Any, err: E) -> E:
    """Write ``err`` to the hub's error log under :data:`FLOW` (no-op without a hub) and return
    it, so that a failure is raised as ``raise log_auth_error(hub, SomeAuthError(...))``."""
    if hub is None:
        return err
    try:
        hub.errors.log(FLOW, err.message, code=err.code, detail=err.detail)
    except Exception:  # the log must never hide the error being reported
        log.exception("could not write the authorisation error to the hub error log")
    return err


def secret_forms_of(settings: Settings) -> tuple[str, ...]:
    """Every spelling of this subscription's secrets an echoed request may show: the client
    secret raw, URL-encoded and as HTTP Basic ``base64(client_id:client_secret)`` (standard,
    URL-safe, unpadded, URL-encoded), and the API key raw and URL-encoded."""
    forms: list[str] = []
    secret = settings.oauth.client_secret.reveal() if settings.oauth.client_secret else ""
    if secret:
        forms += secret_forms(secret, client_id=settings.oauth.client_id or "")
    api_key = settings.api_key.reveal() if settings.api_key is not None else ""
    if api_key:
        forms += secret_forms(api_key)
    return tuple(forms)


def scrub(settings: Settings, text: str, limit: int = 300) -> str:
    """``text`` from an OAuth HTTP answer made safe to print and store: every form of the
    client secret and API key masked (:func:`secret_forms_of`), token shapes masked, cut to
    ``limit`` characters (a hostile endpoint may echo the whole request back)."""
    clean = redact(text, secret_forms_of(settings))
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def answered(settings: Settings, exc: OAuthError) -> str:
    """``Klaviyo answered <error>[: <description>]`` for a token-endpoint error, scrubbed."""
    text = f"Klaviyo answered {exc.error}" + (f": {exc.description}" if exc.description else "")
    return scrub(settings, text)


def client_credentials(settings: Settings, hub: Any) -> tuple[str, str]:
    """``(client_id, client_secret)``, or the catalog error for the first one missing (logged)."""
    client_id = settings.oauth.client_id
    secret = settings.oauth.client_secret.reveal() if settings.oauth.client_secret else ""
    if not client_id:
        raise log_auth_error(hub, ClientIdMissingError(catalog.AUTH_CLIENT_ID_NOT_CONFIGURED,
                                                detail="set oauth.client_id in the settings file"))
    if not secret:
        raise log_auth_error(hub, ClientSecretMissingError(catalog.AUTH_CLIENT_SECRET_NOT_CONFIGURED,
                                                    detail="set oauth.client_secret (e.g. ${KLAVIYO_CLIENT_SECRET})"))
    return client_id, secret


def oauth_client(settings: Settings, hub: Any, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 30.0, **kwargs: Any) -> AsyncOAuth2Client:
    """An authlib client that authenticates to the token endpoint with HTTP Basic."""
    client_id, secret = client_credentials(settings, hub)
    extra: dict[str, Any] = {"timeout": timeout}
    if transport is not None:
        extra["transport"] = transport
    return AsyncOAuth2Client(
        client_id, secret, token_endpoint_auth_method="client_secret_basic",
        revocation_endpoint_auth_method="client_secret_basic", **kwargs, **extra)


def store_tokens(hub: Any, token: Mapping[str, Any], *, previous: Mapping[str, Any] | None = None,
                 requested: tuple[str, ...] = ()) -> None:
    """Save a token-endpoint answer in the hub: expiry from ``expires_in``; a refresh token
    the answer leaves out keeps the previous one; scopes from ``scope`` or what was asked."""
    expires_in = token.get("expires_in")
    try:
        expires_at = time.time() + float(expires_in) if expires_in is not None else None
    except (TypeError, ValueError):
        expires_at = None
    scope = token.get("scope")
    scopes = (scope.split() if isinstance(scope, str) else list(scope) if isinstance(scope, list)
              else list(previous.get("scopes") or []) if previous else list(requested))
    hub.save_token(
        PROVIDER,
        access_token=str(token["access_token"]),
        refresh_token=token.get("refresh_token") or (previous or {}).get("refresh_token"),
        expires_at=expires_at,
        scopes=scopes or list(requested),
    )


def http_detail(exc: Exception) -> str:
    """A secret-free description of a failed token-endpoint call."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"the token endpoint answered HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return f"An error occurred while contacting Klaviyo: {type(exc).__name__}"
    return "the token endpoint's answer was not a JSON object"


__all__ = [
    "FLOW", "PROVIDER", "KLAVIYO_AUTHORIZE_URL", "OAuthEndpoints", "answered",
    "client_credentials", "http_detail", "log_auth_error", "oauth_client", "oauth_endpoints", "scrub",
    "secret_forms_of", "store_tokens",
]
