"""OAuth refresh across processes: several `dispatch` processes on one hub with an expired access
token make exactly one refresh at the sandbox (which rotates refresh tokens) and all succeed; after
a refresh Klaviyo refuses, `auth status` says the connection needs re-authorisation."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _oauth_helpers import CLIENT_ID, CLIENT_SECRET, follow, oauth_settings

from engine.errors import ReauthorizationRequired
from engine.hub import SqliteHub
from engine.oauth import FLOW, PROVIDER, REAUTHORIZE, HubTokenSource, connection_status, login

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 3
CUSTOMERS = 24


def _config(folder: Path, url: str) -> Path:
    path = folder / "klaviyo-sync.yaml"
    path.write_text(
        f"api_url: {url}\nhub: hub.db\noutbound_triggers: {{customer: true}}\n"
        "oauth:\n"
        f"  client_id: {CLIENT_ID}\n"
        "  client_secret: ${KLAVIYO_CLIENT_SECRET}\n"
        "  redirect_url: http://127.0.0.1:8765/callback\n", encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KLAVIYO_SYNC_CONFIG", "KLAVIYO_SYNC_HUB")}
    env.update(KLAVIYO_CLIENT_SECRET=CLIENT_SECRET, KLAVIYO_API_KEY="", PYTHONPATH=str(ROOT))
    return env


def _cli(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine", *args, "--config", str(folder / "klaviyo-sync.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=folder, env=_env())


def _expire(store: SqliteHub) -> dict[str, Any]:
    stored = store.get_token(PROVIDER)
    store.save_token(PROVIDER, access_token=stored["access_token"], refresh_token=stored["refresh_token"],
                     expires_at=time.time() - 60, scopes=stored["scopes"])
    return stored


@pytest.fixture
async def connected_hub(sandbox_factory: Any, tmp_path: Path) -> Any:
    """A sandbox (OAuth client, rotating refresh tokens, 20 ms latency), a settings file, and a hub
    with queued Customers and an OAuth connection whose access token has expired."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET}, latency_ms=20)
    for list_name in ("Sms Subscribers", "Preview List"):  # the lists the shipped collections name
        handle.state.add_list(list_name)
    _config(tmp_path, handle.url)
    settings = oauth_settings(handle, tmp_path)
    with SqliteHub(tmp_path / "hub.db", outbound_triggers={"Customer"}) as store:
        for i in range(CUSTOMERS):
            store.add_customer({"EmailAddress": f"p{i}@example.com", "CustomerNumber": f"N{i}"})
        await login(settings, store, open_url=follow, timeout=10)
        _expire(store)
    return handle, settings


def test_concurrent_processes_share_one_refresh_and_all_succeed(connected_hub: Any, tmp_path: Path) -> None:
    """Three dispatch processes started at once on an expired token: one refresh, every process
    exits 0 having sent its share, every Customer reaches Klaviyo, nothing is left queued."""
    handle, _ = connected_hub
    procs = [_cli(tmp_path, "dispatch", "--json", "--batch", "2") for _ in range(PROCESSES)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [0] * PROCESSES == [rc for rc, _, _ in results], [err for _, _, err in results]
    created = [json.loads(out)["flows"].get("Add Klaviyo Profile FROM Hub", {}).get("created", 0)
               for _, out, _ in results]
    emails = sorted(p["attributes"]["email"] for p in handle.state.profiles.values())
    assert (1, CUSTOMERS, sorted(f"p{i}@example.com" for i in range(CUSTOMERS))) == (
        handle.options.counters["oauth_refresh"], sum(created), emails)
    with SqliteHub(tmp_path / "hub.db") as store:
        assert (0, [], None) == (store.queue_length(), store.errors.list(), store.token_failure(PROVIDER))
        assert store.get_token(PROVIDER)["expires_at"] > time.time() + 3000


async def test_a_source_waits_for_the_hub_lock_and_adopts_the_token_stored_meanwhile(
        connected_hub: Any, tmp_path: Path) -> None:
    """While another process holds the refresh lock, a source waits, then takes the token that
    process stored instead of refreshing (the sandbox sees no refresh)."""
    handle, settings = connected_hub
    with SqliteHub(tmp_path / "hub.db") as store, SqliteHub(tmp_path / "hub.db") as other:
        assert other.acquire_token_lock(PROVIDER, "other-process", ttl=30)
        source = HubTokenSource(settings, store)
        waiting = asyncio.create_task(source.get_token())
        await asyncio.sleep(0.3)
        assert not waiting.done()
        other.save_token(PROVIDER, access_token="adopted-access", refresh_token="adopted-refresh",
                         expires_at=time.time() + 3600, scopes=[])
        token = await asyncio.wait_for(waiting, 5)
        other.release_token_lock(PROVIDER, "other-process")
    assert ("adopted-access", 0) == (token, handle.options.counters.get("oauth_refresh", 0))


def test_a_lock_left_by_a_dead_process_expires(hub: SqliteHub) -> None:
    """A refresh lock whose holder never released it is taken once its time runs out, not before."""
    assert hub.acquire_token_lock(PROVIDER, "dead", ttl=0.2)
    assert (False, True) == (hub.acquire_token_lock(PROVIDER, "alive", ttl=30), hub.acquire_token_lock(PROVIDER, "dead", ttl=0.2))
    time.sleep(0.3)
    assert hub.acquire_token_lock(PROVIDER, "alive", ttl=30)


def test_status_after_a_refused_refresh_says_reauthorise(connected_hub: Any, tmp_path: Path) -> None:
    """After Klaviyo refuses the refresh token, dispatch fails, and `auth status` (text and --json)
    says the connection needs re-authorisation with the re-authorise text, not connected."""
    handle, settings = connected_hub
    handle.server.oauth.revoke_all()
    dispatch = _cli(tmp_path, "dispatch")
    _, dispatch_err = dispatch.communicate(timeout=120)
    text = _cli(tmp_path, "auth", "status").communicate(timeout=60)[0]
    data = json.loads(_cli(tmp_path, "auth", "status", "--json").communicate(timeout=60)[0])
    assert (True, REAUTHORIZE in dispatch_err) == (dispatch.returncode != 0, True)
    lines = text.splitlines()
    assert ["Not connected: the OAuth connection stored in the hub needs re-authorisation.", REAUTHORIZE] == lines[:2]
    assert lines[2].startswith("Last refresh failed at ") and lines[2].endswith(": Klaviyo answered invalid_grant.")
    assert (False, True, False, "A020", REAUTHORIZE) == (
        data["connected"], data["needs_reauthorization"], data["refreshable"], data["problem"]["code"],
        data["problem"]["message"])
    with SqliteHub(tmp_path / "hub.db") as store:
        assert CUSTOMERS == store.queue_length()
        assert (FLOW, REAUTHORIZE) in {(e["Flow"], e["Message"]) for e in store.errors.list()}


async def test_a_new_login_clears_the_recorded_failure(connected_hub: Any, tmp_path: Path) -> None:
    """Logging in again after a refused refresh makes the status connected again."""
    handle, settings = connected_hub
    handle.server.oauth.revoke_all()
    with SqliteHub(tmp_path / "hub.db") as store:
        source = HubTokenSource(settings, store)
        with pytest.raises(ReauthorizationRequired):
            await source.get_token()
        before = connection_status(settings, store)
        await login(settings, store, open_url=follow, timeout=10)
        after = connection_status(settings, store)
    assert ((True, False), (False, True)) == ((before.needs_reauthorization, before.to_dict()["connected"]),
                                              (after.needs_reauthorization, after.to_dict()["connected"]))
