"""`klaviyo-sync sandbox serve` in a real process: SIGTERM stops it like Ctrl-C (the --state file is
saved, exit 0), and the OAuth options (--oauth-access-ttl, --no-rotate-refresh, SIGUSR1 to expire
access tokens, SIGUSR2 to revoke every token) let refresh be tried from the command line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
REVISION = {"revision": "2023-10-15", "accept": "application/vnd.api+json"}
KEY = {"Authorization": "Klaviyo-API-Key pk_sigterm_test"}
CLIENT = ("sigterm-client", "sigterm-secret-0123456789")
REDIRECT = "http://127.0.0.1:9/callback"
WAIT_S = 60.0  # a ceiling so a broken process fails the test instead of hanging it


class _Lines:
    """The lines of a child's stream, read by a thread (so waiting for one never blocks the test)."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                self.queue.put(line)
        self.queue.put(None)

    def next(self, pattern: str) -> str:
        """The next line matching ``pattern`` (fails after WAIT_S or at the end of the stream)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen!r}")
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def rest(self) -> str:
        """Everything up to the end of the stream (the process has exited)."""
        self.thread.join(timeout=WAIT_S)
        while (line := self.queue.get_nowait() if not self.queue.empty() else None) is not None:
            self.seen.append(line)
        return "".join(self.seen)


class Serve:
    """`sandbox serve --port 0 ARGS` as a child process; ``url`` once it listens."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "sandbox", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout, self.stderr = _Lines(self.proc.stdout), _Lines(self.proc.stderr)
        self.url = re.search(r"listening on (http://\S+)", self.stdout.next("listening on")).group(1)
        self.pid_line = self.stdout.next(r"^PID \d+")

    def stop(self, sig: int) -> tuple[int, str]:
        """Send ``sig``; the exit code and everything the process wrote on stderr."""
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=WAIT_S)
        self.stdout.rest()
        return rc, self.stderr.rest()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)
        self.stdout.rest()
        self.stderr.rest()


@pytest.fixture
def serve() -> object:
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        started.append(Serve(*args))
        return started[-1]

    yield start
    for s in started:
        s.kill()


def _create_profile(url: str, email: str) -> str:
    body = {"data": {"type": "profile", "attributes": {"email": email, "first_name": "Term"}}}
    answer = httpx.post(f"{url}/api/profiles/", json=body, timeout=10,
                        headers={**REVISION, **KEY, "content-type": "application/vnd.api+json"})
    assert 201 == answer.status_code, answer.text
    return answer.json()["data"]["id"]


def test_sigterm_saves_the_state_file_and_exits_cleanly(tmp_path: Path, serve) -> None:  # type: ignore[no-untyped-def]
    """A profile created just before SIGTERM is in --state afterwards; exit 0, no traceback."""
    state = tmp_path / "state.json"
    server = serve("--state", str(state))
    profile_id = _create_profile(server.url, "term@example.com")
    rc, err = server.stop(signal.SIGTERM)
    assert 0 == rc, err
    assert f"Sandbox stopped; state saved to {state}" in err
    assert "Traceback" not in err
    saved = json.loads(state.read_text(encoding="utf-8"))
    assert "term@example.com" == saved["profiles"][profile_id]["attributes"]["email"]

    again = serve("--state", str(state))  # and a new sandbox starts from it
    answer = httpx.get(f"{again.url}/api/profiles/{profile_id}/", headers={**REVISION, **KEY}, timeout=10)
    assert (200, "term@example.com") == (answer.status_code, answer.json()["data"]["attributes"]["email"])
    assert 0 == again.stop(signal.SIGINT)[0]


def _login(url: str) -> dict[str, object]:
    """The OAuth code flow against the sandbox, as the engine runs it: authorize, then exchange."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({"response_type": "code", "client_id": CLIENT[0], "redirect_uri": REDIRECT,
                       "scope": "profiles:read", "state": "s1", "code_challenge": challenge,
                       "code_challenge_method": "S256"})
    redirect = httpx.get(f"{url}/oauth/authorize?{query}", timeout=10)
    assert 302 == redirect.status_code, redirect.text
    code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
    return _token(url, grant_type="authorization_code", code=code, redirect_uri=REDIRECT, code_verifier=verifier)


def _token(url: str, **form: str) -> dict[str, object]:
    answer = httpx.post(f"{url}/oauth/token", data=form, auth=CLIENT, timeout=10)
    return {"status": answer.status_code, **answer.json()}


def _profiles(url: str, access: object) -> int:
    return httpx.get(f"{url}/api/profiles/", headers={**REVISION, "Authorization": f"Bearer {access}"},
                     timeout=10).status_code


def test_oauth_options_and_signals_let_refresh_be_tried_from_the_cli(serve) -> None:  # type: ignore[no-untyped-def]
    """--oauth-access-ttl sets expires_in; SIGUSR1 expires the access token (401, refresh works, and
    with --no-rotate-refresh the same refresh token works again); SIGUSR2 revokes everything."""
    server = serve("--oauth-access-ttl", "120", "--no-rotate-refresh")
    assert "kill -USR1" in server.pid_line and f"PID {server.proc.pid}" in server.pid_line
    tokens = _login(server.url)
    assert (200, 120) == (tokens["status"], tokens["expires_in"])
    assert 200 == _profiles(server.url, tokens["access_token"])

    server.proc.send_signal(signal.SIGUSR1)
    assert "Expired 1 OAuth access token(s)" in server.stderr.next("Expired")
    assert 401 == _profiles(server.url, tokens["access_token"])
    refreshed = _token(server.url, grant_type="refresh_token", refresh_token=str(tokens["refresh_token"]))
    assert 200 == refreshed["status"] and refreshed["refresh_token"] == tokens["refresh_token"]  # not rotated
    assert 200 == _profiles(server.url, refreshed["access_token"])

    server.proc.send_signal(signal.SIGUSR2)
    assert "Revoked every OAuth token" in server.stderr.next("Revoked")
    assert 401 == _profiles(server.url, refreshed["access_token"])
    again = _token(server.url, grant_type="refresh_token", refresh_token=str(tokens["refresh_token"]))
    assert (400, "invalid_grant") == (again["status"], again["error"])
    assert 0 == server.stop(signal.SIGTERM)[0]


def test_refresh_tokens_rotate_by_default(serve) -> None:  # type: ignore[no-untyped-def]
    """Without --no-rotate-refresh a refresh issues a new refresh token and the old one is refused."""
    server = serve()
    tokens = _login(server.url)
    assert 3600 == tokens["expires_in"]
    refreshed = _token(server.url, grant_type="refresh_token", refresh_token=str(tokens["refresh_token"]))
    assert 200 == refreshed["status"] and refreshed["refresh_token"] != tokens["refresh_token"]
    reused = _token(server.url, grant_type="refresh_token", refresh_token=str(tokens["refresh_token"]))
    assert (400, "invalid_grant") == (reused["status"], reused["error"])
