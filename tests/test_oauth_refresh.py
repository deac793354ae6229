"""The OAuth token source in the Klaviyo client: refresh before expiry and on 401, rotation,
one refresh for concurrent requests, the re-authorise message, logout, and no token in any log."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from _oauth_helpers import CLIENT_ID, CLIENT_SECRET, follow, oauth_settings

from engine.connect import open_client
from engine.errors import ReauthorizationRequired
from engine.oauth import FLOW, PROVIDER, REAUTHORIZE, connection_status, login, logout


@pytest.fixture
async def connected(sandbox_factory: Any, hub: Any, tmp_path: Any) -> Any:
    """A sandbox (20 ms latency), settings and a hub with a fresh OAuth connection."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET}, latency_ms=20)
    settings = oauth_settings(handle, tmp_path)
    await login(settings, hub, open_url=follow, timeout=10)
    return handle, settings, hub


def _expire_locally(hub: Any) -> dict[str, Any]:
    stored = hub.get_token(PROVIDER)
    hub.save_token(PROVIDER, access_token=stored["access_token"], refresh_token=stored["refresh_token"],
                   expires_at=time.time() - 5, scopes=stored["scopes"])
    return stored


async def test_an_expired_token_is_refreshed_before_the_request_and_the_refresh_token_rotates(connected) -> None:
    """A stored token past its expiry is refreshed first; the new refresh token replaces the old one."""
    handle, settings, hub = connected
    before = _expire_locally(hub)
    async with open_client(settings, hub) as client:
        pid, _ = await client.create_profile({"email": "fresh@example.com"})
    after = hub.get_token(PROVIDER)
    oauth = handle.server.oauth
    assert (1, 0) == (handle.options.counters["oauth_refresh"], client.stats.retry_reasons["401"])
    assert before["refresh_token"] != after["refresh_token"]
    assert (True, False) == (oauth.refresh_tokens[before["refresh_token"]].revoked,
                             oauth.refresh_tokens[after["refresh_token"]].revoked)
    assert after["expires_at"] > time.time() + 3000
    assert "fresh@example.com" == handle.state.profiles[pid]["attributes"]["email"]


async def test_a_401_refreshes_once_and_the_request_succeeds(connected) -> None:
    """A token Klaviyo no longer accepts (401) is refreshed once and the request retried."""
    handle, settings, hub = connected
    handle.server.oauth.expire_access_tokens()
    async with open_client(settings, hub) as client:
        pid, created = await client.create_profile({"email": "after401@example.com"})
    assert (True, 1, 1) == (created, client.stats.retry_reasons["401"], handle.options.counters["oauth_refresh"])


@pytest.mark.parametrize("how", ["expired locally", "rejected with 401"])
async def test_concurrent_requests_share_one_refresh(connected, how) -> None:
    """Twenty requests that all find the token stale cause exactly one refresh, and all succeed."""
    handle, settings, hub = connected
    if how == "expired locally":
        _expire_locally(hub)
    else:
        handle.server.oauth.expire_access_tokens()
    async with open_client(settings, hub, max_concurrency=20) as client:
        results = await asyncio.gather(*(client.create_profile({"email": f"c{i}@example.com"}) for i in range(20)))
    assert (20, 1) == (sum(created for _, created in results), handle.options.counters["oauth_refresh"])


async def test_a_revoked_refresh_token_asks_to_authorise_again(connected) -> None:
    """When Klaviyo rejects the refresh token the request fails with the re-authorise message, logged."""
    handle, settings, hub = connected
    handle.server.oauth.revoke_all()
    async with open_client(settings, hub) as client:
        with pytest.raises(ReauthorizationRequired) as info:
            await client.create_profile({"email": "nope@example.com"})
    assert (REAUTHORIZE, "A020", "Klaviyo answered invalid_grant") == (
        info.value.message, info.value.code, info.value.detail)
    assert [(FLOW, REAUTHORIZE, "A020")] == [(e["Flow"], e["Message"], e["Code"]) for e in hub.errors.list()]
    assert 0 == len(handle.state.profiles)


async def test_the_api_key_is_used_when_no_oauth_connection_is_stored(sandbox, hub, sandbox_api_key, tmp_path) -> None:
    """Without a stored connection open_client falls back to the private API key."""
    from engine.settings import Secret, Settings

    settings = Settings(api_url=sandbox.url, api_key=Secret(sandbox_api_key))
    async with open_client(settings, hub) as client:
        _, created = await client.create_profile({"email": "key@example.com"})
    assert (True, "api_key") == (created, connection_status(settings, hub).method)


async def test_logout_revokes_at_klaviyo_and_forgets_locally(connected) -> None:
    """Logout revokes the refresh token (and its access tokens) at Klaviyo and deletes the hub copy."""
    handle, settings, hub = connected
    stored = hub.get_token(PROVIDER)
    result = await logout(settings, hub)
    oauth = handle.server.oauth
    assert (True, True, True) == (result.connected, result.revoked, result.deleted)
    assert (True, True) == (oauth.refresh_tokens[stored["refresh_token"]].revoked,
                            oauth.access_tokens[stored["access_token"]].revoked)
    assert (None, "none") == (hub.get_token(PROVIDER), connection_status(settings, hub).method)
    assert (False, False) == ((await logout(settings, hub)).connected, (await logout(settings, hub)).deleted)


async def test_no_token_reaches_a_log_an_error_or_the_error_log(sandbox_factory, hub, tmp_path, caplog) -> None:
    """Through login, refresh, a rejected refresh and logout, no issued token or code appears anywhere printed."""
    caplog.set_level(logging.DEBUG)
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    settings = oauth_settings(handle, tmp_path)
    texts: list[str] = []
    status = await login(settings, hub, open_url=follow, timeout=10)
    texts += [str(status.to_dict()), *status.lines()]
    handle.server.oauth.expire_access_tokens()
    async with open_client(settings, hub) as client:
        await client.create_profile({"email": "a@example.com"})
        handle.server.oauth.revoke_all()
        handle.server.oauth.expire_access_tokens()
        with pytest.raises(ReauthorizationRequired) as info:
            await client.create_profile({"email": "b@example.com"})
        texts += [str(info.value)]
    texts += [str((await logout(settings, hub)).to_dict())]
    # the scripted browser (a worker thread) logs the redirect it follows, code included; a real
    # browser is not our output, so only the engine's and the sandbox's own records are checked
    ours = [r.getMessage() for r in caplog.records if not r.threadName.startswith("asyncio_")]
    texts += [str(e) for e in hub.errors.list()] + ours
    issued = handle.server.oauth.issued_tokens() | {CLIENT_SECRET}
    assert len(issued) >= 5 and any("OAuth access token refreshed" in t for t in ours)
    assert [] == [t for t in issued if any(t in text for text in texts)]


async def test_a_token_refreshed_by_another_process_is_adopted_not_refreshed_again(connected) -> None:
    """Two sources on one hub: after one refreshes (rotating the refresh token), the other takes its token."""
    from engine.oauth import HubTokenSource

    handle, settings, hub = connected
    _expire_locally(hub)
    first, second = HubTokenSource(settings, hub), HubTokenSource(settings, hub)
    token_first = await first.get_token()
    token_second = await second.get_token()
    assert (token_first, 1) == (token_second, handle.options.counters["oauth_refresh"])
