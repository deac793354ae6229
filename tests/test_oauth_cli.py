"""The auth commands end to end: login in a real process against the sandbox, status, logout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from _oauth_helpers import CLIENT_ID, CLIENT_SECRET, SCOPES, follow
from click.testing import CliRunner

from engine import catalog
from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, url: str, **oauth: str) -> Path:
    values = {"client_id": CLIENT_ID, "client_secret": "${KLAVIYO_CLIENT_SECRET}",
              "redirect_url": "http://127.0.0.1:8765/callback", **oauth}
    lines = [f"api_url: {url}", "oauth:"] + [f'  {k}: "{v}"' for k, v in values.items() if v]
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)


def test_login_status_logout_in_a_real_process_print_no_token(sandbox_factory: Any, tmp_path: Path) -> None:
    """auth login (--no-browser --port 0) connects, status shows OAuth and scopes, logout revokes; no token printed."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    config, db = _config(tmp_path, handle.url), tmp_path / "hub.db"
    env = {**os.environ, "KLAVIYO_CLIENT_SECRET": CLIENT_SECRET, "KLAVIYO_API_KEY": ""}
    common = ["--config", str(config), "--hub", str(db)]
    proc = subprocess.Popen([sys.executable, "-m", "engine", "auth", "login", "--no-browser", "--port", "0",
                             "--timeout", "30", *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    printed = [proc.stdout.readline(), proc.stdout.readline()]
    follow(printed[1].strip())
    out, err = proc.communicate(timeout=60)
    printed += [out, err]
    assert 0 == proc.returncode, err
    assert "Connected with OAuth." in out

    status = _run("auth", "status", *common, env=env)
    status_json = json.loads(_run("auth", "status", "--json", *common, env=env).stdout)
    assert "Connected with OAuth" in status.stdout
    assert ("oauth", list(SCOPES), True) == (
        status_json["method"], status_json["scopes"], status_json["refreshable"])
    logout = _run("auth", "logout", *common, env=env)
    after = json.loads(_run("auth", "status", "--json", *common, env=env).stdout)
    assert ("Revoked at Klaviyo.", "none") == (logout.stdout.splitlines()[0], after["method"])

    everything = "".join(printed) + status.stdout + status.stderr + json.dumps(status_json) + logout.stdout
    issued = handle.server.oauth.issued_tokens() | {CLIENT_SECRET}
    assert [] == [t for t in issued if t in everything]


def test_login_without_a_client_id_exits_2_with_the_catalog_text(sandbox: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """A missing Client ID prints its catalog text with the code and exits 2."""
    monkeypatch.setenv("KLAVIYO_CLIENT_SECRET", CLIENT_SECRET)
    config = _config(tmp_path, sandbox.url, client_id="")
    result = CliRunner().invoke(main, ["auth", "login", "--no-browser", "--config", str(config),
                                       "--hub", str(tmp_path / "hub.db")])
    assert (2, f"A001 {catalog.AUTH_CLIENT_ID_NOT_CONFIGURED}") == (result.exit_code, result.output.splitlines()[0])


def test_logout_without_a_connection_says_so(tmp_path: Path) -> None:
    """Logout with nothing stored reports that there is nothing to do."""
    result = CliRunner().invoke(main, ["auth", "logout", "--config", str(_config(tmp_path, "http://127.0.0.1:9")),
                                       "--hub", str(tmp_path / "hub.db")], env={"KLAVIYO_CLIENT_SECRET": "x"})
    assert (0, "No OAuth connection is stored; nothing to do.\n") == (result.exit_code, result.output)
