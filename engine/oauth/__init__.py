"""Connecting to Klaviyo with OAuth: login, status, logout, and the token source the client calls.

Klaviyo offers two ways in (seed 004): a private API key, or OAuth, where the
user authorises the integration in the browser and the integration stores and
refreshes the tokens.  An OAuth install also gets its own rate-limit quota.

Glossary:

- **authorize URL**: the browser page where the user allows or denies access
  (``www.klaviyo.com/oauth/authorize`` for Klaviyo; ``<api_url>/oauth/authorize``
  for the sandbox, or ``oauth.authorize_url`` in the settings).
- **state**: a random value sent with the authorize URL and checked on the
  redirect, so a redirect we did not start is refused.
- **PKCE** (S256): a random *verifier* stays here; its SHA-256 *challenge* goes in
  the URL; the code exchange must present the verifier, so a stolen code is useless.
- **code exchange**: ``POST <api_url>/oauth/token`` with a form body,
  HTTP Basic client authentication and the verifier; the answer holds the access
  token (short-lived), the refresh token and ``expires_in``.
- **hub token store**: ``hub.save_token("klaviyo", ...)``; the hub file is owner-only.

:func:`login` runs the whole browser dance against a loopback listener,
:func:`connection_status` says how the engine connects (no secrets), and
:func:`logout` revokes at Klaviyo and forgets locally.  Every failure raises an
:class:`~engine.errors.AuthError` carrying the catalog text (seed 002) and is
written to the hub's error log under the flow ``"Authorization and Connection"``.
Tokens never appear in a message, a log line or an output.

The modules, each depending only on those above it:

- :mod:`engine.oauth._client`  endpoints, client credentials, the authlib client, storing tokens
- :mod:`engine.oauth._login`   ``auth login`` / ``status`` / ``logout``
- :mod:`engine.oauth._source`  :class:`HubTokenSource`, the access tokens the Klaviyo client asks for
  (refreshed when due); :func:`token_source_for` is what :func:`engine.connect.open_client` tries
"""

from __future__ import annotations

from engine.oauth._client import (
    FLOW,
    KLAVIYO_AUTHORIZE_URL,
    PROVIDER,
    OAuthEndpoints,
    client_credentials,
    log_auth_error,
    oauth_client,
    oauth_endpoints,
    store_tokens,
)
from engine.oauth._login import (
    ConnectionStatus,
    LogoutResult,
    connection_status,
    login,
    logout,
    redirect_query,
    requested_scopes,
    required_scopes,
    scope_warnings,
)
from engine.oauth._source import REAUTHORIZE, HubTokenSource, token_source_for

__all__ = [
    "FLOW", "PROVIDER", "KLAVIYO_AUTHORIZE_URL", "REAUTHORIZE", "ConnectionStatus", "HubTokenSource", "LogoutResult",
    "OAuthEndpoints", "client_credentials", "connection_status", "log_auth_error", "login", "logout", "oauth_client",
    "oauth_endpoints", "redirect_query", "required_scopes", "requested_scopes", "scope_warnings", "store_tokens",
    "token_source_for",
]
