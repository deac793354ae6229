"""Helpers for the OAuth tests: settings pointing at a sandbox, and a scripted "browser"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from engine.sandbox import SandboxHandle
from engine.settings import OAuthSettings, Secret, Settings

CLIENT_ID = "sbx-client-id"
CLIENT_SECRET = "sbx-client-secret-0123456789"
REDIRECT = "http://127.0.0.1:0/callback"
#: what the shipped collections need (derived from Klaviyo's specs; tests/test_oauth_scopes.py)
SCOPES = ("accounts:read", "events:write", "lists:read", "lists:write", "profiles:read", "profiles:write",
          "subscriptions:write")


def oauth_settings(handle: SandboxHandle, tmp_path: Path, **oauth: Any) -> Settings:
    """Settings on the sandbox with a complete OAuth client (override any oauth field)."""
    values: dict[str, Any] = {"client_id": CLIENT_ID, "client_secret": Secret(CLIENT_SECRET),
                              "redirect_url": REDIRECT, "scopes": SCOPES}
    values.update(oauth)
    return Settings(api_url=handle.url, oauth=OAuthSettings(**values), hub_path=tmp_path / "hub.db")


def follow(url: str) -> httpx.Response:
    """The browser: open the authorize URL and follow its redirect to the loopback listener."""
    return httpx.get(url, follow_redirects=True, timeout=10)


class Recorder:
    """A browser that remembers the authorize URL it was given, then follows it."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url: str) -> httpx.Response:
        self.urls.append(url)
        return follow(url)
