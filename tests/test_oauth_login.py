"""OAuth login against the sandbox over loopback: PKCE, denial, state, reused code, configuration."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from _oauth_helpers import CLIENT_ID, CLIENT_SECRET, SCOPES, Recorder, follow, oauth_settings
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from engine import catalog
from engine.connect import open_client
from engine.errors import AuthConfigError, AuthorizationError
from engine.oauth import FLOW, PROVIDER, connection_status, login, oauth_endpoints
from engine.settings import Secret, Settings


@pytest.fixture
def oauth_sandbox(sandbox_factory: Any) -> Any:
    return sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})


def _logged(hub: Any) -> list[tuple[str, str, str | None]]:
    return [(e["Flow"], e["Message"], e["Code"]) for e in hub.errors.list()]


@pytest.mark.sqlite_only("runs the CLI on the hub file")
async def test_login_with_pkce_stores_tokens_and_the_client_uses_them(oauth_sandbox, hub, tmp_path) -> None:
    """Login sends an S256 challenge, exchanges the code, stores the tokens owner-only, and API calls use Bearer."""
    settings = oauth_settings(oauth_sandbox, tmp_path)
    browser = Recorder()
    status = await login(settings, hub, open_url=browser, timeout=10)

    query = parse_qs(urlsplit(browser.urls[0]).query)
    assert ["code", CLIENT_ID, "S256", " ".join(SCOPES)] == [
        query["response_type"][0], query["client_id"][0], query["code_challenge_method"][0], query["scope"][0]]
    assert 43 == len(query["code_challenge"][0])  # base64url(sha256) without padding
    stored = hub.get_token(PROVIDER)
    assert stored["access_token"] in oauth_sandbox.server.oauth.access_tokens
    assert stored["refresh_token"] in oauth_sandbox.server.oauth.refresh_tokens
    assert ("oauth", list(SCOPES), True) == (status.method, stored["scopes"], status.refreshable)
    assert 3590 < stored["expires_at"] - __import__("time").time() <= 3600
    assert 0o600 == stat.S_IMODE(os.stat(tmp_path / "hub.db").st_mode)
    async with open_client(settings, hub) as client:
        pid, created = await client.create_profile({"email": "oauth@example.com"})
    assert (True, "oauth@example.com") == (created, oauth_sandbox.state.profiles[pid]["attributes"]["email"])


async def test_the_sandbox_refuses_a_code_exchange_without_the_right_verifier(oauth_sandbox, tmp_path) -> None:
    """The token endpoint checks the PKCE verifier against the challenge (Klaviyo's texts)."""
    verifier = "v" * 50
    redirect = "http://127.0.0.1:9/cb"
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": redirect, "scope": "profiles:read",
              "state": "s1", "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"}
    answers = []
    for sent in ("w" * 50, "short"):
        resp = httpx.get(f"{oauth_sandbox.url}/oauth/authorize?{urlencode(params)}", follow_redirects=False)
        code = parse_qs(urlsplit(resp.headers["location"]).query)["code"][0]
        token = httpx.post(f"{oauth_sandbox.url}/oauth/token", auth=(CLIENT_ID, CLIENT_SECRET),
                           data={"grant_type": "authorization_code", "code": code, "code_verifier": sent,
                                 "redirect_uri": redirect})
        answers.append((token.status_code, token.json()["error_description"]))
    assert [(400, "Code challenge failed."), (400, 'Invalid "code_verifier"')] == answers


async def test_a_denied_authorisation_reports_the_missing_code(sandbox_factory, hub, tmp_path) -> None:
    """When the user denies access the login fails with the code-missing text, logged under the flow."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET}, oauth_decision="deny")
    with pytest.raises(AuthorizationError) as info:
        await login(oauth_settings(handle, tmp_path), hub, open_url=follow, timeout=10)
    assert (catalog.AUTH_CODE_MISSING, "A011") == (info.value.message, info.value.code)
    assert "access_denied" in (info.value.detail or "")
    assert [(FLOW, catalog.AUTH_CODE_MISSING, "A011")] == _logged(hub)
    assert None is hub.get_token(PROVIDER)


async def test_the_page_decision_shows_a_form_whose_allow_button_completes_login(sandbox_factory, hub, tmp_path) -> None:
    """With oauth_decision="page" a person's Allow (the form POST) finishes the login."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET}, oauth_decision="page")

    def click_allow(url: str) -> None:
        page = httpx.get(url)
        assert "Allow" in page.text
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        httpx.post(f"{handle.url}/oauth/authorize", data={**query, "decision": "allow"}, follow_redirects=True)

    status = await login(oauth_settings(handle, tmp_path), hub, open_url=click_allow, timeout=10)
    assert "oauth" == status.method


async def test_a_redirect_with_another_state_is_refused(oauth_sandbox, hub, tmp_path) -> None:
    """A redirect whose state differs from the login's gets the code-missing text and no tokens."""

    def forged(url: str) -> None:
        parts = urlsplit(url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        query["state"] = "not-the-state-we-sent"
        follow(parts._replace(query=urlencode(query)).geturl())

    with pytest.raises(AuthorizationError) as info:
        await login(oauth_settings(oauth_sandbox, tmp_path), hub, open_url=forged, timeout=10)
    assert (catalog.AUTH_CODE_MISSING, "A011") == (info.value.message, info.value.code)
    assert "state" in (info.value.detail or "")
    assert None is hub.get_token(PROVIDER)
    assert 0 == oauth_sandbox.options.counters.get("oauth_code_exchange", 0)


async def test_a_reused_code_fails_the_exchange_and_revokes_its_grant(oauth_sandbox, hub_factory, tmp_path) -> None:
    """Replaying a used code gives the token-exchange text, and the tokens it granted stop working."""
    settings = oauth_settings(oauth_sandbox, tmp_path)
    first_hub = hub_factory("first.db")
    codes: list[str] = []

    def capture(url: str) -> None:
        resp = httpx.get(url, follow_redirects=False)
        location = resp.headers["location"]
        codes.append(parse_qs(urlsplit(location).query)["code"][0])
        httpx.get(location)

    await login(settings, first_hub, open_url=capture, timeout=10)
    granted = first_hub.get_token(PROVIDER)["access_token"]

    def replay(url: str) -> None:
        query = parse_qs(urlsplit(url).query)
        httpx.get(f"{query['redirect_uri'][0]}?{urlencode({'code': codes[0], 'state': query['state'][0]})}")

    second_hub = hub_factory("second.db")
    with pytest.raises(AuthorizationError) as info:
        await login(settings, second_hub, open_url=replay, timeout=10)
    assert (catalog.AUTH_TOKEN_EXCHANGE_FAILED, "A012") == (info.value.message, info.value.code)
    assert "invalid_grant" in (info.value.detail or "")
    assert [(FLOW, catalog.AUTH_TOKEN_EXCHANGE_FAILED, "A012")] == _logged(second_hub)
    assert oauth_sandbox.server.oauth.access_tokens[granted].revoked


async def test_a_wrong_client_secret_fails_the_exchange(oauth_sandbox, hub, tmp_path) -> None:
    """A client secret Klaviyo does not know gives the token-exchange text (invalid_client)."""
    settings = oauth_settings(oauth_sandbox, tmp_path, client_secret=Secret("not-the-secret"))
    with pytest.raises(AuthorizationError) as info:
        await login(settings, hub, open_url=follow, timeout=10)
    assert (catalog.AUTH_TOKEN_EXCHANGE_FAILED, "Klaviyo answered invalid_client: Client authentication failed.") == (
        info.value.message, info.value.detail)


@pytest.mark.parametrize("missing, text, code", [
    ("client_id", catalog.AUTH_CLIENT_ID_NOT_CONFIGURED, "A001"),
    ("client_secret", catalog.AUTH_CLIENT_SECRET_NOT_CONFIGURED, "A002"),
    ("redirect_url", catalog.AUTH_REDIRECT_URL_NOT_CONFIGURED, "A003"),
])
async def test_each_missing_setting_has_its_catalog_text(oauth_sandbox, hub, tmp_path, missing, text, code) -> None:
    """A missing Client ID, Client Secret or Redirect URL stops login with its exact text, logged."""
    opened: list[str] = []
    with pytest.raises(AuthConfigError) as info:
        await login(oauth_settings(oauth_sandbox, tmp_path, **{missing: None}), hub, open_url=opened.append)
    assert (text, code, 2) == (info.value.message, info.value.code, info.value.exit_code)
    assert ([], [(FLOW, text, code)]) == (opened, _logged(hub))


async def test_a_non_loopback_redirect_url_is_refused(oauth_sandbox, hub, tmp_path) -> None:
    """auth login only listens on this machine, so a remote redirect URL is a configuration error."""
    with pytest.raises(AuthConfigError) as info:
        await login(oauth_settings(oauth_sandbox, tmp_path, redirect_url="https://example.com/cb"), hub)
    assert "A004" == info.value.code


async def test_no_redirect_in_time_reports_missing_data(oauth_sandbox, hub, tmp_path) -> None:
    """When the browser never comes back the login reports the data-missing text."""
    with pytest.raises(AuthorizationError) as info:
        await login(oauth_settings(oauth_sandbox, tmp_path), hub, open_url=lambda url: None, timeout=0.3)
    assert (catalog.AUTH_DATA_MISSING, "A010") == (info.value.message, info.value.code)
    assert [(FLOW, catalog.AUTH_DATA_MISSING, "A010")] == _logged(hub)


async def test_a_redirect_without_parameters_reports_missing_data(oauth_sandbox, hub, tmp_path) -> None:
    """A bare redirect (no code, no state, no error) is the data-missing case."""

    def bare(url: str) -> None:
        httpx.get(parse_qs(urlsplit(url).query)["redirect_uri"][0])

    with pytest.raises(AuthorizationError) as info:
        await login(oauth_settings(oauth_sandbox, tmp_path), hub, open_url=bare, timeout=10)
    assert catalog.AUTH_DATA_MISSING == info.value.message


def test_authorize_url_is_klaviyos_www_host_and_token_calls_go_to_the_api_host(tmp_path: Path) -> None:
    """On Klaviyo the browser goes to www.klaviyo.com; off Klaviyo everything follows api_url."""
    klaviyo = oauth_endpoints(Settings())
    local = oauth_endpoints(Settings(api_url="http://127.0.0.1:9"))
    assert ("https://www.klaviyo.com/oauth/authorize", "https://a.klaviyo.com/oauth/token",
            "https://a.klaviyo.com/oauth/revoke") == (klaviyo.authorize_url, klaviyo.token_url, klaviyo.revoke_url)
    assert "http://127.0.0.1:9/oauth/authorize" == local.authorize_url


def test_status_without_a_connection_names_the_api_key_source(hub) -> None:
    """With no OAuth connection stored, status reports the API key (its source, never its value)."""
    status = connection_status(Settings(api_key=Secret("pk_abcdef123456", "env:KLAVIYO_API_KEY")), hub)
    assert ("api_key", "env:KLAVIYO_API_KEY") == (status.method, status.to_dict()["api_key"])
    assert "pk_abcdef123456" not in " ".join(status.lines())
