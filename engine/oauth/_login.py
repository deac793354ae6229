"""``auth login``, ``auth status`` and ``auth logout``: the browser dance on a loopback listener,
how the engine connects (no secrets), and revoking at Klaviyo.

Every failure raises an :class:`~engine.errors.AuthError` carrying the catalog text (seed 002),
written to the hub's error log under :data:`~engine.oauth._client.FLOW`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx
from aiohttp import web
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError

from engine import catalog
from engine.errors import (
    AuthConfigError,
    AuthorizationCodeError,
    AuthorizationDataError,
    KlaviyoSyncError,
    PartialGrantWarning,
    RedirectUrlError,
    RedirectUrlMissingError,
    RevocationError,
    ScopeNotGrantedWarning,
    TokenExchangeError,
)
from engine.klaviyo import scopes as klaviyo_scopes
from engine.oauth._client import (
    FLOW,
    PROVIDER,
    answered,
    client_credentials,
    http_detail,
    log_auth_error,
    oauth_client,
    oauth_endpoints,
    scrub,
    store_tokens,
)
from engine.settings import Settings

log = logging.getLogger("engine.oauth")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_DONE_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>klaviyo-sync</title></head>"
    "<body><h1>{title}</h1><p>{text}</p><p>You can close this window.</p></body></html>"
)


def _loopback_redirect(settings: Settings, hub: Any) -> tuple[str, str, int | None, str]:
    """``(redirect_url, host, port, path)`` of a usable loopback redirect URL, else the error."""
    url = settings.oauth.redirect_url
    if not url:
        raise log_auth_error(hub, RedirectUrlMissingError(catalog.AUTH_REDIRECT_URL_NOT_CONFIGURED,
                                                   detail="set oauth.redirect_url, e.g. http://127.0.0.1:8765/callback"))
    parts = urlsplit(url)
    if parts.scheme != "http" or (parts.hostname or "") not in LOOPBACK_HOSTS:
        raise log_auth_error(hub, RedirectUrlError(
            f"auth login listens on this machine, so oauth.redirect_url must be a loopback http URL "
            f"such as http://127.0.0.1:8765/callback (got {url})"))
    return url, parts.hostname or "127.0.0.1", parts.port, parts.path or "/"


# -- scopes ------------------------------------------------------------------------------


def _enabled_collections(settings: Settings, collections: Any = None) -> Any:
    """``collections``, else what loads from the settings' collections folder (a collection that
    does not load cannot run, so it needs no scope; ``validate`` reports why it does not load)."""
    if collections is not None:
        return collections
    from engine.collection import load_collections  # lazy: loading collections pulls the formula engine

    return load_collections([settings.collections_dir]).collections


def required_scopes(settings: Settings, collections: Any = None) -> dict[str, list[klaviyo_scopes.Reason]]:
    """The scopes these settings' enabled collections need, with the reasons
    (:func:`engine.klaviyo.scopes.required_scopes`), plus every scope listed in
    ``oauth.scopes`` (reason: "listed in oauth.scopes")."""
    needed = klaviyo_scopes.required_scopes(_enabled_collections(settings, collections), settings)
    for extra in settings.oauth.scopes:
        scope = klaviyo_scopes.canonical(extra)
        needed.setdefault(scope, []).append(klaviyo_scopes.Reason("listed in oauth.scopes in the settings"))
    return {scope: needed[scope] for scope in sorted(needed)}


def requested_scopes(settings: Settings, collections: Any = None) -> tuple[str, ...]:
    """What ``auth login`` asks Klaviyo for: the derived scopes and those listed in ``oauth.scopes``."""
    return tuple(required_scopes(settings, collections))


# -- login -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionStatus:
    """How the engine reaches Klaviyo, without any secret.

    ``method`` is ``"oauth"`` (a connection is stored in the hub), ``"api_key"`` or ``"none"``.
    A stored connection whose refresh Klaviyo refused (revoked, uninstalled, 90 days unused,
    client credentials rejected) is ``"oauth"`` with ``needs_reauthorization``: not connected.
    """

    method: str
    expires_at: float | None = None
    scopes: tuple[str, ...] = ()
    refreshable: bool = False
    api_key_source: str | None = None
    #: the recorded refresh failure (``{"code", "message", "detail", "at"}``) when the stored
    #: connection no longer works: a new ``auth login`` is needed.
    failure: Mapping[str, Any] | None = None
    #: the scopes the enabled collections need, with the reasons (:func:`required_scopes`);
    #: empty when not computed.
    required: Mapping[str, list[klaviyo_scopes.Reason]] | None = None

    @property
    def missing_scopes(self) -> list[str]:
        """Required scopes the stored OAuth connection was not granted (OAuth only)."""
        if self.method != "oauth" or not self.required:
            return []
        return klaviyo_scopes.missing(self.required, self.scopes)

    @property
    def needs_reauthorization(self) -> bool:
        """True when the stored OAuth connection failed to refresh and only a new login cures it."""
        return self.method == "oauth" and self.failure is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``auth status --json``)."""
        expires_in = None if self.expires_at is None else round(self.expires_at - time.time())
        failure = dict(self.failure) if self.failure is not None else None
        return {
            "method": self.method,
            "connected": self.method != "none" and not self.needs_reauthorization,
            "needs_reauthorization": self.needs_reauthorization,
            "expires_at": _iso(self.expires_at),
            "expires_in_s": expires_in,
            "expired": expires_in is not None and expires_in <= 0,
            "scopes": list(self.scopes),
            "refreshable": self.refreshable and not self.needs_reauthorization,
            "api_key": self.api_key_source,
            "problem": failure,
            "required_scopes": {scope: [r.text for r in reasons] for scope, reasons in (self.required or {}).items()},
            "missing_scopes": [{"scope": scope, "reasons": [r.text for r in (self.required or {})[scope]]}
                               for scope in self.missing_scopes],
        }

    def scope_lines(self) -> list[str]:
        """What is missing and why, and what to do (empty when nothing is missing)."""
        gaps = self.missing_scopes
        if not gaps:
            return []
        assert self.required is not None
        out = [f"Missing scopes: {' '.join(gaps)} (Klaviyo answers 403 permission_denied to the calls that "
               "need them). Needed for:"]
        out += [f"  {klaviyo_scopes.describe(scope, list(self.required[scope]))}" for scope in gaps]
        out.append("Add them to the app's scopes in Klaviyo if needed, then run `klaviyo-sync auth login` "
                   "again to grant them.")
        return out

    def lines(self) -> list[str]:
        """Plain-text form (``auth status``)."""
        d = self.to_dict()
        if self.needs_reauthorization:
            assert self.failure is not None
            out = ["Not connected: the OAuth connection stored in the hub needs re-authorisation.",
                   str(self.failure.get("message") or ""),
                   f"Last refresh failed at {self.failure.get('at')}"
                   + (f": {self.failure['detail']}" if self.failure.get("detail") else "") + "."]
            if self.api_key_source:
                out.append(f"An API key is also set ({self.api_key_source}); it is not used while an "
                           "OAuth connection is stored (`klaviyo-sync auth logout` removes it).")
            return out
        if self.method == "oauth":
            when = d["expires_at"] or "unknown"
            state = "expired" if d["expired"] else f"in {d['expires_in_s']}s"
            out = ["Connected with OAuth (tokens stored in the hub).",
                   f"Access token expires: {when} ({state}); "
                   + ("refreshed automatically." if self.refreshable else "no refresh token: log in again then."),
                   f"Scopes: {' '.join(self.scopes) or '(none reported)'}"]
            out += self.scope_lines()
            if self.api_key_source:
                out.append(f"An API key is also set ({self.api_key_source}); OAuth is used while connected.")
            return out
        if self.method == "api_key":
            return [f"Connected with the private API key ({self.api_key_source}).",
                    "Run `klaviyo-sync auth login` to connect with OAuth instead."]
        return ["Not connected: set api_key in the settings (or KLAVIYO_API_KEY), "
                "or run `klaviyo-sync auth login`."]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class _Listener:
    """The loopback web server that receives Klaviyo's redirect (one request matters)."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.result: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get(self.path, self._callback)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1" if self.host == "localhost" else self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        if server and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        return self.port

    async def _callback(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        if not self.result.done():
            self.result.set_result(query)
        ok = "code" in query and "error" not in query
        title = "Klaviyo authorisation received" if ok else "Klaviyo authorisation not completed"
        text = ("klaviyo-sync is finishing the connection." if ok
                else "klaviyo-sync will report what went wrong in the terminal.")
        return web.Response(text=_DONE_PAGE.format(title=title, text=text), content_type="text/html")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def login(
    settings: Settings,
    hub: Any,
    *,
    open_url: Callable[[str], object] | None = None,
    port: int | None = None,
    timeout: float = 300.0,
    transport: httpx.AsyncBaseTransport | None = None,
    collections: Any = None,
    read_redirect: Callable[[], str | None] | None = None,
) -> ConnectionStatus:
    """Authorise in the browser, exchange the code, store the tokens in the hub.

    The scopes asked for are :func:`requested_scopes`: what the enabled collections need
    (from Klaviyo's specs) and any listed in ``oauth.scopes``.  What Klaviyo granted (the
    token answer's ``scope``) is stored; the status returned names any scope still missing.

    Args:
        settings: needs ``oauth.client_id``, ``oauth.client_secret`` and a loopback
            ``oauth.redirect_url`` (Klaviyo must have it registered exactly).
        hub: where the tokens go (``save_token``) and errors are logged.
        open_url: called in a worker thread with the authorize URL once the listener
            is up (the CLI prints it and opens a browser; tests follow it with httpx).
        port: listen on this port instead of the redirect URL's (0 = any free port;
            the redirect URI sent is rewritten to match).
        timeout: seconds to wait for the redirect.
        transport: httpx transport for the token call (tests).
        collections: the collections to derive the scopes from (default: the settings' folder).
        read_redirect: for a machine without a browser: a blocking call (run in a daemon
            thread) that returns the redirect address the user pasted, or None when there is
            none (end of input).  Whichever comes first counts: the listener's redirect or the
            pasted one, which is checked exactly like it (``state``, ``code``).  See
            :func:`redirect_query`.

    Returns:
        The new :class:`ConnectionStatus` (no secrets).

    Raises:
        AuthConfigError: Client ID / Client Secret / Redirect URL not configured (A001-A004).
        AuthorizationError: no redirect data (A010), no code / denied / state mismatch (A011),
            token exchange refused (A012).  Each is logged in the hub error log.  A login
            granted fewer scopes than needed succeeds, with a warning A013 in the error log.
    """
    client_id, _ = client_credentials(settings, hub)
    redirect_url, host, url_port, path = _loopback_redirect(settings, hub)
    required = required_scopes(settings, collections)
    endpoints = oauth_endpoints(settings)
    listener = _Listener(host, port if port is not None else (url_port if url_port is not None else 80), path)
    try:
        bound = await listener.start()
    except OSError as exc:
        raise log_auth_error(hub, RedirectUrlError(
            f"cannot listen for the redirect on {host}:{listener.port}: {exc.strerror or exc}")) from None
    try:
        parts = urlsplit(redirect_url)
        netloc = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        redirect_uri = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        if parts.port == bound:
            redirect_uri = redirect_url  # send exactly what is registered
        scopes = tuple(required)
        verifier = generate_token(64)  # [A-Za-z0-9]{64}: inside PKCE's 43..128 unreserved chars
        state = generate_token(32)
        async with oauth_client(settings, hub, transport=transport, scope=" ".join(scopes),
                                redirect_uri=redirect_uri, code_challenge_method="S256") as client:
            url, _ = client.create_authorization_url(endpoints.authorize_url, state=state,
                                                     code_verifier=verifier)
            opener = asyncio.create_task(asyncio.to_thread(open_url, url)) if open_url else None
            if read_redirect is not None:
                _read_pasted(read_redirect, listener.result)
            try:
                query = await asyncio.wait_for(asyncio.shield(listener.result), timeout)
            except TimeoutError:
                raise log_auth_error(hub, AuthorizationDataError(
                    catalog.AUTH_DATA_MISSING,
                    detail=f"no redirect from Klaviyo reached {redirect_uri} within {timeout:g}s")) from None
            finally:
                if opener is not None:
                    await asyncio.gather(opener, return_exceptions=True)
            code = _check_redirect(query, state, hub, settings)
            try:
                token = await client.fetch_token(endpoints.token_url, grant_type="authorization_code",
                                                 code=code, code_verifier=verifier, redirect_uri=redirect_uri)
            except OAuthError as exc:
                raise log_auth_error(hub, TokenExchangeError(
                    catalog.AUTH_TOKEN_EXCHANGE_FAILED, detail=answered(settings, exc),
                )) from None
            except (httpx.HTTPError, ValueError) as exc:
                raise log_auth_error(hub, TokenExchangeError(
                    catalog.AUTH_TOKEN_EXCHANGE_FAILED, detail=http_detail(exc))) from None
        if not token.get("access_token"):
            raise log_auth_error(hub, TokenExchangeError(catalog.AUTH_TOKEN_EXCHANGE_FAILED,
                                                  detail="the token answer held no access_token"))
        store_tokens(hub, token, requested=scopes)
        log.info("OAuth connection stored for client %s", client_id)
    finally:
        await listener.stop()
    status = connection_status(settings, hub, required=required)
    if status.missing_scopes:
        gaps = " ".join(status.missing_scopes)
        log.warning("Klaviyo granted the OAuth connection without the scope(s) %s", gaps)
        try:
            partial = PartialGrantWarning(
                f"Klaviyo granted the OAuth connection without the scope(s) {gaps}: the calls that need them "
                "will be refused (403 permission_denied)",
                detail="; ".join(klaviyo_scopes.describe(s, list(required[s]), 1) for s in status.missing_scopes))
            hub.errors.log(FLOW, partial.message, level="warning", code=partial.code, detail=partial.detail)
        except Exception:  # the warning must never fail a login that worked
            log.exception("could not write the missing-scope warning to the hub error log")
    return status


def redirect_query(text: str) -> dict[str, str] | None:
    """The parameters of a pasted redirect address (the whole URL the browser ended on, or just
    its ``?code=...&state=...`` part), or None when it carries neither ``code`` nor ``error``."""
    text = text.strip()
    if "?" in text:
        text = text.split("?", 1)[1]
    query = dict(parse_qsl(text.split("#", 1)[0], keep_blank_values=True))
    return query if ("code" in query or "error" in query) else None


def _read_pasted(read: Callable[[], str | None], result: asyncio.Future[dict[str, str]]) -> None:
    """Wait for a pasted redirect in a daemon thread (a blocked read of the terminal must not
    keep the process alive once the listener got the redirect) and hand it to ``result``."""
    loop = asyncio.get_running_loop()

    def deliver(query: dict[str, str]) -> None:
        if not result.done():
            result.set_result(query)

    def run() -> None:
        try:
            text = read()
        except (OSError, ValueError, EOFError):  # the input went away
            return
        query = redirect_query(text) if text else None
        if query is not None:
            with contextlib.suppress(RuntimeError):  # the login ended meanwhile (loop closed)
                loop.call_soon_threadsafe(deliver, query)

    threading.Thread(target=run, name="klaviyo-sync-pasted-redirect", daemon=True).start()


def _check_redirect(query: Mapping[str, str], state: str, hub: Any, settings: Settings) -> str:
    """The code from Klaviyo's redirect, or the catalog error that fits what came back."""
    if not query:
        raise log_auth_error(hub, AuthorizationDataError(catalog.AUTH_DATA_MISSING,
                                                  detail="the redirect carried no parameters"))
    if "error" in query:
        why = query.get("error_description")
        raise log_auth_error(hub, AuthorizationCodeError(
            catalog.AUTH_CODE_MISSING,
            detail=scrub(settings, f"Klaviyo answered {query['error']}" + (f": {why}" if why else ""))))
    if query.get("state") != state:
        raise log_auth_error(hub, AuthorizationCodeError(
            catalog.AUTH_CODE_MISSING,
            detail="the state value on the redirect does not match this login (a stale or foreign link)"))
    code = query.get("code")
    if not code:
        raise log_auth_error(hub, AuthorizationCodeError(catalog.AUTH_CODE_MISSING,
                                                  detail="the redirect carried no code"))
    return code


# -- status and logout -------------------------------------------------------------------


def connection_status(settings: Settings, hub: Any, *, collections: Any = None,
                      required: Mapping[str, list[klaviyo_scopes.Reason]] | None = None) -> ConnectionStatus:
    """How :func:`engine.connect.open_client` will authenticate, with no secret in it.

    For a stored OAuth connection the scopes the enabled collections need are derived
    (``required``, or from ``collections`` / the settings' folder) so the status can name
    the ones not granted.
    """
    key = settings.api_key.source if settings.api_key is not None and settings.api_key.reveal() else None
    stored = hub.get_token(PROVIDER) if hub is not None else None
    if stored and (stored.get("access_token") or stored.get("refresh_token")):
        failure = hub.token_failure(PROVIDER) if hasattr(hub, "token_failure") else None
        if required is None:
            required = required_scopes(settings, collections)
        return ConnectionStatus("oauth", stored.get("expires_at"), tuple(stored.get("scopes") or ()),
                                bool(stored.get("refresh_token")), key, failure, required)
    return ConnectionStatus("api_key" if key else "none", api_key_source=key)


def scope_warnings(settings: Settings, hub: Any, collections: Any) -> list[KlaviyoSyncError]:
    """``validate``'s warnings (code W020): one per scope the enabled ``collections`` need that
    the OAuth connection stored in ``hub`` was not granted, located at the first row (or
    collection) that needs it.  None without a stored connection (a private key's scopes
    are not visible to the engine)."""
    status = connection_status(settings, hub, collections=collections)
    out: list[KlaviyoSyncError] = []
    for scope in status.missing_scopes:
        reasons = list((status.required or {})[scope])
        located = next((r for r in reasons if r.location is not None and r.location.line is not None),
                       next((r for r in reasons if r.location is not None), None))
        first = located or reasons[0]
        others = [r.text for r in reasons if r is not first]
        what = f"collection '{first.collection}' {first.why}" if first.collection and first.why else first.text
        out.append(ScopeNotGrantedWarning(
            f"the OAuth connection stored in the hub was not granted the scope {scope}: Klaviyo will answer "
            f"403 permission_denied when {what}; run `klaviyo-sync auth login` to grant it",
            location=first.location,
            detail=("also needed by: " + "; ".join(others[:3])
                    + (f" (and {len(others) - 3} more)" if len(others) > 3 else ""))
            if others else None))
    return out


@dataclass(frozen=True)
class LogoutResult:
    """What ``auth logout`` did: ``connected`` (a connection was stored), ``revoked`` (Klaviyo
    accepted the revocation), ``deleted`` (forgotten locally), ``detail`` (why not revoked)."""

    connected: bool
    revoked: bool
    deleted: bool
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"connected": self.connected, "revoked": self.revoked, "deleted": self.deleted,
                "detail": self.detail}


async def logout(settings: Settings, hub: Any, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> LogoutResult:
    """Revoke the stored refresh token at Klaviyo, then delete the tokens from the hub.

    The local copy is deleted even when revocation fails (the failure is logged and
    reported in ``detail``): after ``logout`` the engine no longer uses OAuth.
    """
    stored = hub.get_token(PROVIDER)
    if not stored:
        return LogoutResult(False, False, False, "no OAuth connection is stored")
    token = stored.get("refresh_token") or stored.get("access_token")
    hint = "refresh_token" if stored.get("refresh_token") else "access_token"
    revoked, detail = False, None
    try:
        async with oauth_client(settings, hub, transport=transport) as client:
            resp = await client.revoke_token(oauth_endpoints(settings).revoke_url, token=token,
                                              token_type_hint=hint)
        revoked = resp.status_code == 200
        if not revoked:
            detail = f"Klaviyo answered HTTP {resp.status_code} to the revocation"
    except AuthConfigError as err:
        detail = f"not revoked at Klaviyo: {err.message}"
    except httpx.HTTPError as exc:
        detail = f"not revoked at Klaviyo: {http_detail(exc)}"
    if detail and revoked is False:
        log_auth_error(hub, RevocationError("The OAuth connection was removed locally but could not be "
                                            "revoked at Klaviyo; remove the integration in Klaviyo "
                                            "(Profile > Integrations).", detail=detail))
    deleted = hub.delete_token(PROVIDER)
    return LogoutResult(True, revoked, deleted, detail)


__all__ = [
    "LOOPBACK_HOSTS", "ConnectionStatus", "LogoutResult", "connection_status", "login", "logout", "redirect_query",
    "required_scopes", "requested_scopes", "scope_warnings",
]
