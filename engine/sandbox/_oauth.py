"""The sandbox's OAuth server: Klaviyo's authorize page, token and revoke endpoints.

Routes (mounted beside ``/api/`` by :class:`~engine.sandbox.SandboxServer`):

- ``GET /oauth/authorize``: checks ``response_type=code``, ``client_id``,
  ``redirect_uri``, ``scope``, ``state`` and a PKCE ``S256`` challenge, then acts on
  :attr:`SandboxOptions.oauth_decision`: ``"approve"`` redirects at once with
  ``?code=&state=``, ``"deny"`` with ``?error=access_denied&state=``, ``"page"``
  shows an Allow / Deny form (``POST /oauth/authorize``) for a person to click.
- ``POST /oauth/token`` (form body, HTTP Basic client auth): ``authorization_code``
  (single-use code, same client and redirect URI, ``code_verifier`` checked
  against the challenge) and ``refresh_token`` (a new access token; the refresh
  token rotates when ``oauth_rotate_refresh``).  Access tokens live
  ``oauth_access_ttl_s`` seconds.  Errors are Klaviyo's ``{"error": ...}`` bodies:
  400 ``invalid_grant`` / ``invalid_request`` / ``unsupported_grant_type``, 401 ``invalid_client``.
  The token answer's ``scope`` is what was granted: every scope asked for, or only those
  in :attr:`SandboxOptions.oauth_grant_scopes` when set (a user unticking scopes).
- ``POST /oauth/revoke`` (Basic auth, ``token`` + ``token_type_hint``): a revoked
  refresh token takes its access tokens with it; unknown tokens answer 200 (RFC 7009).

:meth:`SandboxOAuth.auth_hook` wraps the private-key hook so the API also accepts
``Bearer`` tokens issued here; an OAuth install (one client id) is its own account, as
on Klaviyo: its own rate limits, and its own data under ``accounts_by_key``.  A Bearer
request whose endpoint needs a scope the token was not granted (the endpoint's
``x-klaviyo-scopes`` in the spec of the request's revision, read by
:mod:`engine.klaviyo.scopes`) gets Klaviyo's 403 ``permission_denied`` naming the
missing scopes; private keys are not scope-checked.  Tests reach the server side through ``handle.server.oauth``
(:meth:`~SandboxOAuth.expire_access_tokens`, :meth:`~SandboxOAuth.revoke_all`,
:meth:`~SandboxOAuth.issued_tokens`).  Counters in ``options.counters``:
``oauth_code_exchange``, ``oauth_refresh``, ``oauth_revoke``.
"""

from __future__ import annotations

import base64
import html
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlencode, urlsplit

from aiohttp import web
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from engine.errors import SandboxApiError, SandboxOAuthError
from engine.klaviyo import scopes as klaviyo_scopes
from engine.sandbox._accounts import oauth_account
from engine.sandbox._render import REVISION_KEY
from engine.sandbox._server import ROUTE_META_KEY, not_authenticated

if TYPE_CHECKING:
    from engine.sandbox._server import AuthHook, SandboxOptions

CODE_TTL_S = 300.0
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    expires_at: float
    used: bool = False
    refresh_tokens: list[str] = field(default_factory=list)
    asked: str = ""  # the scope parameter as sent (``scope`` is what was granted of it)


@dataclass
class _Refresh:
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class _Access:
    client_id: str
    scope: str
    refresh_token: str
    expires_at: float
    revoked: bool = False


def _error_response(failure: SandboxOAuthError) -> web.Response:
    """The token endpoint's answer for ``failure`` (RFC 6749 section 5.2)."""
    headers = {"Cache-Control": "no-store"}
    if failure.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="oauth"'
    return web.json_response({"error": failure.error, "error_description": failure.description},
                             status=failure.status, headers=headers)


class SandboxOAuth:
    """OAuth state and handlers of one sandbox (see the module docstring)."""

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self.codes: dict[str, _Code] = {}
        self.refresh_tokens: dict[str, _Refresh] = {}
        self.access_tokens: dict[str, _Access] = {}

    # -- test controls ------------------------------------------------------------------

    def expire_access_tokens(self) -> int:
        """Make every live access token expired now (the next API call gets 401)."""
        n = 0
        for rec in self.access_tokens.values():
            if rec.expires_at > time.time():
                rec.expires_at, n = time.time() - 1, n + 1
        return n

    def revoke_all(self) -> None:
        """Revoke every token, as when the user removes the integration in Klaviyo."""
        tokens: tuple[_Refresh | _Access, ...] = (*self.refresh_tokens.values(), *self.access_tokens.values())
        for rec in tokens:
            rec.revoked = True

    def issued_tokens(self) -> set[str]:
        """Every access and refresh token and code issued (tests check none leaks)."""
        return set(self.access_tokens) | set(self.refresh_tokens) | set(self.codes)

    # -- wiring -------------------------------------------------------------------------

    def mount(self, app: web.Application) -> None:
        """Add the ``/oauth/...`` routes to the sandbox application."""
        app.router.add_get("/oauth/authorize", self.authorize)
        app.router.add_post("/oauth/authorize", self.authorize_form)
        app.router.add_post("/oauth/token", self.token)
        app.router.add_post("/oauth/revoke", self.revoke)

    def auth_hook(self, fallback: AuthHook) -> AuthHook:
        """An API auth hook accepting this server's Bearer tokens, else ``fallback``."""
        async def hook(request: web.Request, options: SandboxOptions) -> str:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return await fallback(request, options)
            rec = self.access_tokens.get(token.strip())
            if rec is None or rec.revoked:
                raise not_authenticated("Invalid or revoked access token.")
            if rec.expires_at <= time.time():
                raise not_authenticated("Access token has expired.")
            _check_scopes(request, rec.scope)
            return oauth_account(rec.client_id)

        return hook

    def _bump(self, name: str) -> None:
        self.options.counters[name] = self.options.counters.get(name, 0) + 1

    # -- authorize ----------------------------------------------------------------------

    def _client_ok(self, client_id: str, secret: str | None = None) -> bool:
        clients = self.options.oauth_clients
        if not client_id:
            return False
        if clients:
            return client_id in clients and (secret is None or secrets.compare_digest(clients[client_id], secret))
        return secret is None or bool(secret)

    async def authorize(self, request: web.Request) -> web.Response:
        """The authorize page: validate, then approve, deny or show the form."""
        q = dict(request.query)
        problem = self._check_authorize(q)
        if isinstance(problem, web.Response):
            return problem
        decision = self.options.oauth_decision
        if decision == "page":
            return self._page(q)
        return self._decide(q, decision == "approve")

    async def authorize_form(self, request: web.Request) -> web.Response:
        """The Allow / Deny form's submission."""
        q = {k: str(v) for k, v in (await request.post()).items()}
        problem = self._check_authorize(q)
        if isinstance(problem, web.Response):
            return problem
        return self._decide(q, q.get("decision") == "allow")

    def _check_authorize(self, q: dict[str, str]) -> web.Response | None:
        redirect = q.get("redirect_uri", "")
        if not self._client_ok(q.get("client_id", "")):
            return _html_error("Unknown client_id.")
        if urlsplit(redirect).scheme not in ("http", "https") or not urlsplit(redirect).netloc:
            return _html_error("redirect_uri is missing or not an absolute http(s) URL.")
        missing = [k for k in ("response_type", "scope", "state", "code_challenge", "code_challenge_method")
                   if not q.get(k)]
        if missing:
            return _redirect(redirect, error="invalid_request", state=q.get("state"),
                             error_description=f"Missing required parameter(s): {', '.join(missing)}.")
        if q["response_type"] != "code":
            return _redirect(redirect, error="unsupported_response_type", state=q["state"],
                             error_description="response_type must be code.")
        if q["code_challenge_method"] != "S256":
            return _redirect(redirect, error="invalid_request", state=q["state"],
                             error_description="code_challenge_method must be S256.")
        return None

    def _decide(self, q: dict[str, str], allow: bool) -> web.Response:
        if not allow:
            return _redirect(q["redirect_uri"], error="access_denied", state=q["state"],
                             error_description="The user denied the authorization request.")
        code = "sbx_code_" + secrets.token_urlsafe(24)
        self.codes[code] = _Code(q["client_id"], q["redirect_uri"], q["code_challenge"], self._granted(q["scope"]),
                                 time.time() + CODE_TTL_S, asked=q["scope"])
        return _redirect(q["redirect_uri"], code=code, state=q["state"])

    def _granted(self, asked: str) -> str:
        """The scopes a user grants: all asked for, or only those in ``oauth_grant_scopes``."""
        allowed = self.options.oauth_grant_scopes
        scopes = asked.split()
        if allowed is not None:
            keep = {klaviyo_scopes.canonical(s) for s in allowed}
            scopes = [s for s in scopes if klaviyo_scopes.canonical(s) in keep]
        return " ".join(scopes)

    def _page(self, q: dict[str, str]) -> web.Response:
        hidden = "".join(f"<input type='hidden' name='{html.escape(k)}' value='{html.escape(v)}'>"
                         for k, v in q.items())
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Authorize</title></head><body>"
            f"<h1>Allow {html.escape(q['client_id'])} to access your sandbox Klaviyo account?</h1>"
            f"<p>Scopes: {html.escape(q['scope'])}</p><form method='post' action='/oauth/authorize'>{hidden}"
            "<button name='decision' value='allow'>Allow</button> "
            "<button name='decision' value='deny'>Deny</button></form></body></html>"
        )
        return web.Response(text=body, content_type="text/html")

    # -- token --------------------------------------------------------------------------

    async def _client(self, request: web.Request) -> tuple[str, dict[str, str]]:
        """Authenticate the client (HTTP Basic) and read the form body."""
        if request.content_type != "application/x-www-form-urlencoded":
            raise SandboxOAuthError(400, "invalid_request", "The body must be application/x-www-form-urlencoded.")
        form = {k: str(v) for k, v in (await request.post()).items()}
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        client_id = secret = ""
        if scheme.lower() == "basic":
            try:
                client_id, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = ""
        client_id, secret = unquote(client_id), unquote(secret)
        if not client_id or not self._client_ok(client_id, secret):
            raise SandboxOAuthError(401, "invalid_client", "Client authentication failed.")
        return client_id, form

    async def token(self, request: web.Request) -> web.Response:
        """``POST /oauth/token``: code exchange or refresh."""
        try:
            client_id, form = await self._client(request)
            grant = form.get("grant_type")
            if grant == "authorization_code":
                body = self._exchange(client_id, form)
                self._bump("oauth_code_exchange")
            elif grant == "refresh_token":
                body = self._refresh(client_id, form)
                self._bump("oauth_refresh")
            else:
                raise SandboxOAuthError(400, "unsupported_grant_type", f"Unsupported grant_type {grant!r}.")
        except SandboxOAuthError as failure:
            return _error_response(failure)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _exchange(self, client_id: str, form: dict[str, str]) -> dict[str, Any]:
        rec = self.codes.get(form.get("code", ""))
        if rec is None or rec.client_id != client_id:
            raise SandboxOAuthError(400, "invalid_grant", "Invalid authorization code.")
        if rec.used:
            for token in rec.refresh_tokens:  # a replayed code revokes what it granted (RFC 6749 4.1.2)
                self._revoke_refresh(token)
            raise SandboxOAuthError(400, "invalid_grant", "Authorization code has already been used.")
        rec.used = True
        if rec.expires_at <= time.time():
            raise SandboxOAuthError(400, "invalid_grant", "Authorization code has expired.")
        if form.get("redirect_uri") != rec.redirect_uri:
            raise SandboxOAuthError(400, "invalid_grant", "redirect_uri does not match the authorization request.")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER.match(verifier):
            raise SandboxOAuthError(400, "invalid_grant", 'Invalid "code_verifier"')
        # types-Authlib leaves create_s256_code_challenge unannotated
        if not secrets.compare_digest(create_s256_code_challenge(verifier), rec.challenge):  # type: ignore[no-untyped-call]
            raise SandboxOAuthError(400, "invalid_grant", "Code challenge failed.")
        refresh = "sbx_rt_" + secrets.token_urlsafe(32)
        self.refresh_tokens[refresh] = _Refresh(client_id, rec.scope)
        rec.refresh_tokens.append(refresh)
        return self._issue(client_id, rec.scope, refresh)

    def _refresh(self, client_id: str, form: dict[str, str]) -> dict[str, Any]:
        old = form.get("refresh_token", "")
        rec = self.refresh_tokens.get(old)
        if rec is None or rec.revoked or rec.client_id != client_id:
            raise SandboxOAuthError(400, "invalid_grant", "Invalid or revoked refresh token.")
        refresh = old
        if self.options.oauth_rotate_refresh:
            rec.revoked = True  # the old one stops working; its access tokens live on until expiry
            refresh = "sbx_rt_" + secrets.token_urlsafe(32)
            self.refresh_tokens[refresh] = _Refresh(client_id, rec.scope)
        return self._issue(client_id, rec.scope, refresh)

    def _issue(self, client_id: str, scope: str, refresh: str) -> dict[str, Any]:
        ttl = self.options.oauth_access_ttl_s
        access = "sbx_at_" + secrets.token_urlsafe(32)
        self.access_tokens[access] = _Access(client_id, scope, refresh, time.time() + ttl)
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": int(ttl) if float(ttl).is_integer() else ttl,
                "refresh_token": refresh, "scope": scope}

    # -- revoke -------------------------------------------------------------------------

    def _revoke_refresh(self, token: str) -> None:
        rec = self.refresh_tokens.get(token)
        if rec is not None:
            rec.revoked = True
            for access in self.access_tokens.values():
                if access.refresh_token == token:
                    access.revoked = True

    async def revoke(self, request: web.Request) -> web.Response:
        """``POST /oauth/revoke``: revoke a refresh token (and its access tokens) or an access token."""
        try:
            client_id, form = await self._client(request)
        except SandboxOAuthError as failure:
            return _error_response(failure)
        token = form.get("token", "")
        self._bump("oauth_revoke")
        refresh = self.refresh_tokens.get(token)
        if refresh is not None and refresh.client_id == client_id:
            self._revoke_refresh(token)
        access = self.access_tokens.get(token)
        if access is not None and access.client_id == client_id:
            access.revoked = True
        return web.Response(status=200)


PERMISSION_DENIED_TITLE = "You do not have permission to perform this action."


def permission_denied(missing: list[str]) -> SandboxApiError:
    """Klaviyo's 403 for a token without a scope the endpoint needs."""
    return SandboxApiError(403, "permission_denied", PERMISSION_DENIED_TITLE,
                           f"The access token is missing the required scope(s): {', '.join(missing)}.",
                           pointer="/data/")


def _check_scopes(request: web.Request, granted: str) -> None:
    """Refuse (403 ``permission_denied``) a request whose endpoint needs a scope not granted.

    The endpoint's scopes are those of Klaviyo's spec for the request's revision
    (``x-klaviyo-scopes``, :mod:`engine.klaviyo.scopes`); a path no route matched is left
    to the router (404 / 405)."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    meta = request.app[ROUTE_META_KEY].get(resource.canonical if resource else "", {}).get(request.method)
    if meta is None:
        return
    needed = klaviyo_scopes.scopes_for(request.method, meta["template"], request.get(REVISION_KEY))
    lacking = klaviyo_scopes.missing(needed, granted.split())
    if lacking:
        raise permission_denied(lacking)


def _redirect(uri: str, **params: str | None) -> web.Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    sep = "&" if urlsplit(uri).query else "?"
    return web.Response(status=302, headers={"Location": f"{uri}{sep}{query}"})


def _html_error(text: str) -> web.Response:
    body = f"<!doctype html><html><body><h1>Authorization error</h1><p>{html.escape(text)}</p></body></html>"
    return web.Response(status=400, text=body, content_type="text/html")


__all__ = ["SandboxOAuth", "CODE_TTL_S", "PERMISSION_DENIED_TITLE", "permission_denied"]
