"""`auth login --no-browser` on a machine without a browser: the redirect address pasted on
standard input completes the login (real process against the sandbox's OAuth endpoints)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from _oauth_helpers import CLIENT_ID, CLIENT_SECRET, follow

from engine import catalog

ROOT = Path(__file__).resolve().parent.parent


def _setup(tmp_path: Path, url: str) -> tuple[list[str], dict[str, str]]:
    config = tmp_path / "klaviyo-sync.yaml"
    config.write_text(f"api_url: {url}\noauth:\n  client_id: {CLIENT_ID}\n  client_secret: ${{KLAVIYO_CLIENT_SECRET}}\n"
                      "  redirect_url: http://127.0.0.1:8765/callback\n", encoding="utf-8")
    env = {**os.environ, "KLAVIYO_CLIENT_SECRET": CLIENT_SECRET, "KLAVIYO_API_KEY": "", "KLAVIYO_SYNC_CONFIG": "",
           "KLAVIYO_SYNC_HUB": ""}
    return ["--config", str(config), "--hub", str(tmp_path / "hub.db")], env


def _login(common: list[str], env: dict[str, str], stdin: int = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine", "auth", "login", "--no-browser", "--port", "0",
                             "--timeout", "30", *common], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _authorize(proc: subprocess.Popen[str]) -> tuple[list[str], str]:
    """Read the printed lines up to the paste hint; return them and the address the browser is
    sent to (the sandbox approves at once), without following it to the listener."""
    assert proc.stdout is not None
    printed = [proc.stdout.readline() for _ in range(5)]
    answer = httpx.get(printed[1].strip(), follow_redirects=False, timeout=10)
    assert 302 == answer.status_code
    return printed, answer.headers["Location"]


def test_the_pasted_redirect_address_completes_the_login(sandbox_factory: Any, tmp_path: Path) -> None:
    """A line that is not a redirect gets a hint; the pasted address then connects; nothing secret is printed."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    common, env = _setup(tmp_path, handle.url)
    proc = _login(common, env)
    printed, location = _authorize(proc)
    assert printed[3].startswith("Waiting for Klaviyo to redirect back to http://127.0.0.1:")
    assert "paste it here" in printed[4]
    out, err = proc.communicate(f"not it\n{location}\n", timeout=60)
    assert (0, "Connected with OAuth.") == (proc.returncode, out.splitlines()[0]), err
    assert "That is not the address Klaviyo redirected to (it has no code= or error=): paste the whole address " \
           "from the browser's address bar.\n" == err
    assert 1 == handle.options.counters.get("oauth_code_exchange")
    status = subprocess.run([sys.executable, "-m", "engine", "auth", "status", "--json", *common],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert "oauth" == json.loads(status.stdout)["method"]
    code = dict(parse_qsl(urlsplit(location).query))["code"]
    secrets = handle.server.oauth.issued_tokens() | {CLIENT_SECRET, code}
    assert [] == [s for s in secrets if s in "".join(printed) + out + err + status.stdout]


def test_a_pasted_redirect_of_another_login_is_refused_with_the_catalog_text(sandbox_factory: Any,
                                                                             tmp_path: Path) -> None:
    """A pasted address whose state is not this login's fails with A011, as a stale link would."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    common, env = _setup(tmp_path, handle.url)
    proc = _login(common, env)
    _, location = _authorize(proc)
    parts = urlsplit(location)
    query = {**dict(parse_qsl(parts.query)), "state": "from-another-login"}
    out, err = proc.communicate(f"{parts.path}?{urlencode(query)}\n", timeout=60)
    assert 0 != proc.returncode
    assert f"A011 {catalog.AUTH_CODE_MISSING}" in err
    assert "Connected" not in out


def test_without_input_the_listener_still_receives_the_redirect(sandbox_factory: Any, tmp_path: Path) -> None:
    """With standard input at its end (nothing to paste), the browser's redirect to the listener connects."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    common, env = _setup(tmp_path, handle.url)
    proc = _login(common, env, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    printed = [proc.stdout.readline(), proc.stdout.readline()]
    follow(printed[1].strip())
    out, err = proc.communicate(timeout=60)
    assert (0, True) == (proc.returncode, "Connected with OAuth." in out.splitlines()), err
