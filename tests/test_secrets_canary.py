"""No secret in any output, log, error or file but the hub's token table.

Every CLI command runs as a real process (successes, failures and ``--json`` variants) with canary
secrets: a private API key and an OAuth client secret in the settings file, and the access and
refresh tokens a real sandbox OAuth login stored in the hub.  Half the commands talk to the
sandbox, the other half to a hostile Klaviyo on loopback that echoes every request back (form
body with ``client_secret``, ``Authorization: Basic base64(id:secret)``, ``Bearer`` and
``Klaviyo-API-Key`` headers) in its error answers.  Then every stdout and stderr, and every file
the commands wrote under the test folder (SQLite files dumped table by table, the token table
left out), is searched for every form of every secret: raw, URL-encoded, base64 of
``client_id:client_secret``.  None may be found.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import click
import httpx
from aiohttp import web

from engine.cli import main
from engine.hub._sqlite import SIDE_FILES, is_sqlite_file

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "pk_CANARYKEY0123456789abcdef01"
CLIENT_ID = "canary-client"
CLIENT_SECRET = "CANARYSECRET+k/9=Zq7w"
URL_PASSWORD = "CANARYPASSWORD42"
SERVICE_TOKEN = "CANARYSERVICETOKEN7x9y"
SCOPES = "accounts:read profiles:read profiles:write events:write lists:write subscriptions:write"


# -- the hostile Klaviyo: every answer echoes the request ---------------------------------------


class EchoKlaviyo:
    """A loopback server whose token, revoke and API endpoints answer errors that quote the whole
    request (method, URL, headers, body); ``token_mode`` picks how the token endpoint answers."""

    MODES = ("json-description", "json-error", "text-401", "html-200")

    def __init__(self) -> None:
        self.token_mode = "json-description"
        self.requests = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    async def _echo(request: web.Request) -> str:
        body = await request.text()
        headers = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        return f"{request.method} {request.path_qs} headers[{headers}] body[{body}]"

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        target = f"{q['redirect_uri']}?{urlencode({'code': 'echo-code', 'state': q.get('state', '')})}"
        raise web.HTTPFound(target)

    async def _token(self, request: web.Request) -> web.Response:
        self.requests += 1
        echo = await self._echo(request)
        if self.token_mode == "json-description":
            return web.json_response({"error": "invalid_request", "error_description": echo}, status=400)
        if self.token_mode == "json-error":
            return web.json_response({"error": echo}, status=400)
        if self.token_mode == "text-401":
            return web.Response(text=echo, status=401)
        return web.Response(text=f"<html><body>{echo}</body></html>", content_type="text/html")

    async def _revoke(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.json_response({"error": "invalid_request", "error_description": await self._echo(request)},
                                 status=400)

    async def _api(self, request: web.Request) -> web.Response:
        self.requests += 1
        echo = await self._echo(request)
        status = 401 if "Bearer" in request.headers.get("Authorization", "") else 400
        return web.json_response({"errors": [{"id": "echo", "status": status, "code": "invalid",
                                              "title": "Echo", "detail": echo,
                                              "source": {"pointer": "/data"}}]}, status=status)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/oauth/authorize", self._authorize)
        app.router.add_post("/oauth/token", self._token)
        app.router.add_post("/oauth/revoke", self._revoke)
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> EchoKlaviyo:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# -- running commands -------------------------------------------------------------------------


class Runner:
    """Runs CLI commands as processes in the work folder and keeps every byte they print."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.printed: list[tuple[str, str]] = []
        self.commands: set[str] = set()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
        self.env = {**env, "PYTHONPATH": str(ROOT), "KLAVIYO_API_KEY": API_KEY}

    def _note(self, args: tuple[str, ...]) -> None:
        words = [a for a in args if not a.startswith("-")]
        for depth in (1, 2):
            self.commands.add(" ".join(words[:depth]))

    def run(self, *args: str, config: str | None = None, ok: bool | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run one command (``config``: the settings file name in the folder); ``ok`` checks the exit."""
        full = [*args, *(["--config", config] if config else [])]
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "engine", *full], capture_output=True, text=True,
                              cwd=self.folder, env=self.env, timeout=180, input=stdin)
        print(f"{time.monotonic() - started:6.2f}s rc={proc.returncode} {' '.join(full)}")
        self.printed.append((" ".join(full), proc.stdout + proc.stderr))
        self._note(args)
        assert "Traceback" not in proc.stderr, proc.stderr
        if ok is not None:
            assert ok == (proc.returncode == 0), (full, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def login(self, config: str) -> subprocess.CompletedProcess[str]:
        """``auth login --no-browser --port 0``, the test following the printed URL as the browser."""
        args = ("auth", "login", "--no-browser", "--port", "0", "--timeout", "30", "--config", config)
        proc = subprocess.Popen([sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.folder, env=self.env)
        assert proc.stdout is not None
        head = [proc.stdout.readline(), proc.stdout.readline()]
        httpx.get(head[1].strip(), follow_redirects=True, timeout=30)
        out, err = proc.communicate(timeout=60)
        self.printed.append((" ".join(args), "".join(head) + out + err))
        self._note(args)
        assert "Traceback" not in err, err
        return subprocess.CompletedProcess(args, proc.returncode, "".join(head) + out, err)


def leaf_commands(group: click.Group, prefix: str = "") -> set[str]:
    """Every runnable command of the CLI, as space-separated paths ("hub export")."""
    out: set[str] = set()
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        out |= leaf_commands(command, path + " ") if isinstance(command, click.Group) else {path}
    return out


# -- what must never appear -------------------------------------------------------------------


def forms(secret: str, client_id: str | None = None) -> set[str]:
    """Every spelling of ``secret`` to search for."""
    spelled = {secret, quote(secret, safe=""), quote_plus(secret)}
    if client_id is not None:
        for ident, value in ((client_id, secret), (quote_plus(client_id), quote_plus(secret))):
            raw = f"{ident}:{value}".encode()
            for b64 in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
                spelled |= {b64, b64.rstrip("="), quote(b64, safe=""), quote(b64.rstrip("="), safe="")}
    return spelled


def tokens_in(db: Path) -> set[str]:
    """The access and refresh tokens stored in a hub's token table."""
    if not db.exists():
        return set()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT access_token, refresh_token FROM oauth_tokens").fetchall()
    return {t for row in rows for t in row if t}


def dump_without_tokens(db: Path) -> str:
    """Every row of every table but ``oauth_tokens``, as text."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(f"{t}: {row!r}" for t in tables if t != "oauth_tokens"
                         for row in conn.execute(f'SELECT * FROM "{t}"'))
    finally:
        conn.close()


def written_files(folder: Path, inputs: set[Path]) -> Iterator[tuple[Path, str]]:
    """(path, text) of every file under ``folder`` but the test's own inputs and SQLite side files."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path in inputs or path.name.endswith(SIDE_FILES):
            continue
        if is_sqlite_file(path):
            yield path, dump_without_tokens(path)
        else:
            yield path, path.read_bytes().decode("latin-1")


# -- the test ---------------------------------------------------------------------------------


def _settings(url: str, *, oauth: bool = True, hub: str = "hub.db", extra: str = "") -> str:
    text = (f"api_url: {url}\napi_key: {API_KEY}\nhub: {hub}\n"
            "outbound_triggers: {customer: true, transaction: true}\n")
    if oauth:
        text += ("oauth:\n"
                 f"  client_id: {CLIENT_ID}\n"
                 f"  client_secret: \"{CLIENT_SECRET}\"\n"
                 "  redirect_url: http://127.0.0.1:8765/callback\n"
                 f"  scopes: [{', '.join(SCOPES.split())}]\n")
    return text + extra


def _expire(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE oauth_tokens SET expires_at = ?", (time.time() - 60,))


CUSTOMERS = (
    '{"Id": 1, "EmailAddress": "ann@example.com", "CustomerNumber": "C1", "FirstName": "Ann", "Phone": "+12125550101",'
    ' "Addresses": [{"Address1": "1 Main St", "City": "Boston", "Country": "United States", "IsPrimaryBilling": true}]}\n'
    '{"Id": 2, "EmailAddress": "bob@example.com", "CustomerNumber": "C2"}\n'
    '{"CustomerNumber": "no email"}\n'
    '{"Id": 3, "EmailAddress": "eve@example.com", "CustomerNumber": "C3"}\n'
)
TRANSACTIONS = (
    '{"Id": 501, "TransactionNumber": "SO-501", "CustomerId": 1, "Total": 12.5, "TransactionDate": "2026-01-02T10:00:00Z",'
    ' "Lines": [{"Id": 5011, "Sku": "MUG", "Description": "Mug", "Qty": 1, "UnitPrice": 12.5, "ExtendedPrice": 12.5}]}\n'
)


def test_no_command_prints_or_writes_a_secret(sandbox_factory: Any, tmp_path: Path, jobs_url: str) -> None:
    """Every command, against the sandbox and an echoing hostile Klaviyo, prints and writes no form
    of the API key, the client secret (raw, URL-encoded, Basic base64) or an OAuth token."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    work = tmp_path / "work"
    work.mkdir()
    r = Runner(work)
    inputs: set[Path] = set()

    def write(name: str, text: str) -> str:
        path = work / name
        path.write_text(text, encoding="utf-8")
        inputs.add(path)
        return name

    with EchoKlaviyo() as echo:
        sandbox = write("sandbox.yaml", _settings(handle.url))
        hostile = write("hostile.yaml", _settings(echo.url, hub="hostile.db"))
        hostile_tokens = write("hostile-tokens.yaml", _settings(echo.url, hub="hostile-tokens.db"))
        hostile_key = write("hostile-key.yaml", _settings(echo.url, oauth=False, hub="hostile-key.db"))
        write("customers.jsonl", CUSTOMERS)
        write("transactions.jsonl", TRANSACTIONS)
        write("record.json", json.dumps({"type": "profile", "id": "01HCANARY", "attributes": {
            "email": "rec@example.com", "phone_number": "+12125550199", "first_name": "Rec",
            "properties": {"note": "a note"}}}))
        write("broken.yaml", "title: broken\ndirection: to_hub\nrows: [{formula: 'x +'}]\n")
        bad = {
            "oauth-list.yaml": f"oauth:\n  - client_id: {CLIENT_ID}\n  - client_secret: \"{CLIENT_SECRET}\"\n",
            "wrong-key.yaml": f"api_url: {handle.url}\napi_kee: {API_KEY}\nclient_secret: \"{CLIENT_SECRET}\"\n",
            "url-password.yaml": f"api_url: https://user:{URL_PASSWORD}@a.klaviyo.com\napi_key: {API_KEY}\n",
            "bad-types.yaml": f"api_key: [{API_KEY}]\noauth: {{client_id: {CLIENT_ID}, client_secret: [\"{CLIENT_SECRET}\"]}}\n",
            "bad-yaml.yaml": f"api_key: {API_KEY}\noauth: {{client_secret: \"{CLIENT_SECRET}\"\n",
        }
        for name, text in bad.items():
            write(name, text)
        tokens: set[str] = set()

        # -- against the sandbox: connect with OAuth, then every command -----------------------
        assert 0 == r.login(sandbox).returncode
        tokens |= tokens_in(work / "hub.db")
        for args in (("auth", "status"), ("auth", "status", "--json"), ("settings", "show"),
                     ("settings", "show", "--json"), ("status",), ("status", "--json")):
            r.run(*args, config=sandbox, ok=True)
        r.run("hub", "import", "customers", "customers.jsonl", config=sandbox, ok=False)
        r.run("hub", "import", "transactions", "transactions.jsonl", config=sandbox, ok=True)
        r.run("hub", "import", "customers", "missing.jsonl", config=sandbox, ok=False)
        for args in (("hub", "show", "customer", "1"), ("hub", "show", "customer", "3", "--json"),
                     ("hub", "show", "transaction", "501", "--json"), ("hub", "export", "customers"),
                     ("hub", "export", "customers", "export.jsonl"),
                     ("hub", "export", "transactions", "export-tx.jsonl")):
            r.run(*args, config=sandbox, ok=True)
        r.run("hub", "show", "customer", "999", config=sandbox, ok=False)
        r.run("hub", "export", "customers", "hub.db", config=sandbox, ok=False)
        r.run("dispatch", "--dry-run", "--json", config=sandbox, ok=True)
        _expire(work / "hub.db")  # the next run refreshes (the sandbox rotates the refresh token)
        r.run("dispatch", "--json", config=sandbox, ok=True)
        tokens |= tokens_in(work / "hub.db")
        r.run("dispatch", config=sandbox, ok=True)
        r.run("poll", "--json", config=sandbox, ok=True)
        r.run("poll", "--since", "not a date", config=sandbox, ok=False)
        profile = next(iter(handle.state.profiles))
        r.run("sync", "profile", profile, "--json", config=sandbox, ok=True)
        r.run("sync", "profile", "01HZZZZZZZZZZZZZZZZZZZZZZZ", config=sandbox, ok=False)
        r.run("push", "customer", "1", "--json", config=sandbox, ok=True)
        r.run("push", "transaction", "501", "--dry-run", "--json", config=sandbox, ok=True)
        r.run("push", "customer", "999", config=sandbox, ok=False)
        r.run("backfill", "customers", "--dry-run", config=sandbox, ok=False)  # 2023-10-15: no bulk import
        bulk = write("bulk.yaml", _settings(handle.url, extra="api_revision: '2026-07-15'\n"))
        r.run("backfill", "customers", "--dry-run", "--json", config=bulk, ok=True)
        r.run("backfill", "customers", "--all", "--json", config=bulk, ok=True)
        r.run("backfill", "transactions", "--json", config=sandbox, ok=True)
        r.run("errors", config=sandbox)
        r.run("errors", "--json", "--all", config=sandbox, ok=True)
        r.run("errors", "--resolve", "1", "--json", config=sandbox)
        r.run("errors", "--resolve", "99999", config=sandbox, ok=False)
        r.run("validate", ok=True)
        r.run("validate", "--json", "broken.yaml", ok=False)
        r.run("validate", "broken.yaml", ok=False)
        r.run("map", "add-profile-to-hub", "record.json", ok=True)
        r.run("map", "add-profile-to-hub", "-", stdin="{not json", ok=False)
        r.run("docs", "--out", "pages", ok=True)
        r.run("docs", "broken.yaml", ok=False)
        r.run("demo", "--dir", "demo", "--customers", "3", "--transactions", "1", "--profiles", "1", "--json", ok=True)
        r.run("demo", "--dir", ".", ok=False)  # the work folder is not the demo's: refused
        r.run("--help", ok=True)
        r.run("auth", "logout", "--json", config=sandbox, ok=True)
        r.run("auth", "status", config=sandbox, ok=True)

        # -- the sandbox CLI itself, with the canary key as its only accepted key ---------------
        serve = subprocess.Popen([sys.executable, "-m", "engine", "sandbox", "serve", "--port", "0",
                                  "--api-key", API_KEY, "--state", "sandbox-state.json", "--no-rate-limits"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=r.env)
        assert serve.stdout is not None
        first = serve.stdout.readline()
        url = first.split(" on ")[1].split(" ")[0]
        served = write("served.yaml", _settings(url, oauth=False, hub="served.db"))
        r.run("poll", "--json", config=served, ok=True)
        serve.send_signal(signal.SIGINT)
        out, err = serve.communicate(timeout=30)
        r.printed.append(("sandbox serve", first + out + err))
        r._note(("sandbox", "serve"))
        r.run("sandbox", "serve", "--port", "99999", ok=False)

        # -- the service, with a canary service token: pages, API, metrics, then SIGTERM ----------
        svc_cfg = write("service.yaml", _settings(handle.url, oauth=False, hub="service.db",
                                                  extra=f"service:\n  token: {SERVICE_TOKEN}\n"))
        svc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0", "--config", svc_cfg],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=r.env)
        assert svc.stdout is not None
        first = svc.stdout.readline()
        base = first.split(" on ")[1].split(" ")[0]
        bodies = []
        with httpx.Client(base_url=base, timeout=30) as web_client:
            auth = {"authorization": f"Bearer {SERVICE_TOKEN}"}
            for path in ("/", "/errors", "/sync", "/login", "/metrics", "/openapi.json", "/healthz", "/readyz",
                         "/records/customer/1"):
                bodies.append(web_client.get(path).text)
            for path in ("/api/status", "/api/errors", "/api/queue", "/api/customers/1"):
                bodies.append(web_client.get(path, headers=auth).text)
            bodies.append(web_client.post("/api/customers", headers=auth,
                                          json=[{"EmailAddress": "svc@example.com", "CustomerNumber": "S1"}]).text)
            bodies.append(web_client.post("/api/customers", headers=auth, content=b"{bad json").text)
            bodies.append(web_client.get("/api/status", headers={"authorization": "Bearer wrong"}).text)
            login = web_client.post("/login", data={"token": SERVICE_TOKEN})
            bodies.append(login.text)
            bodies.append(web_client.get("/").text)
        svc.send_signal(signal.SIGTERM)
        out, err = svc.communicate(timeout=30)
        assert 0 == svc.returncode, err
        r.printed.append(("serve", first + out + err + "\n".join(bodies)))
        r._note(("serve",))

        # -- the worker, its jobs database URL holding the canary password (trust auth ignores it) --
        (work / "subscriptions").mkdir()
        write("subscriptions/canary.yaml", "subscription: canary\n" + _settings(handle.url, hub="../worker.db"))
        canary_jobs = jobs_url.replace("@", f":{URL_PASSWORD}@", 1)
        wrk = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--subscriptions", "subscriptions",
                                "--jobs", canary_jobs, "--json", "--tick", "1", "--log-level", "debug"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work, env=r.env)
        assert wrk.stdout is not None
        first = wrk.stdout.readline()
        time.sleep(3)  # a scheduler run, a poll and a dispatch
        wrk.send_signal(signal.SIGTERM)
        out, err = wrk.communicate(timeout=30)
        assert 0 == wrk.returncode, err
        r.printed.append(("worker", first + out + err))
        r._note(("worker",))
        r.run("worker", "--subscriptions", "subscriptions", "--jobs",
              f"postgresql://root:{URL_PASSWORD}@127.0.0.1:1/none", ok=False)

        # -- bad settings that hold secrets ----------------------------------------------------
        for name in bad:
            r.run("settings", "show", config=name)
            r.run("settings", "show", "--json", config=name)
            r.run("status", config=name)

        # -- against the hostile echo: login, refresh, logout and API calls all echo -------------
        for mode in EchoKlaviyo.MODES:
            echo.token_mode = mode
            assert 0 != r.login(hostile).returncode
        r.run("errors", "--json", config=hostile, ok=True)
        # real tokens from a sandbox login, then used against the echo (closed hub: WAL checkpointed)
        assert 0 == r.login(sandbox).returncode
        tokens |= tokens_in(work / "hub.db")
        shutil.copy(work / "hub.db", work / "hostile-tokens.db")
        for args in (("poll", "--json"), ("sync", "profile", profile), ("push", "customer", "1", "--json")):
            r.run(*args, config=hostile_tokens, ok=False)  # valid token: the echo answers 401, the refresh echoes
        for mode in EchoKlaviyo.MODES:
            echo.token_mode = mode
            _expire(work / "hostile-tokens.db")
            r.run("dispatch", "--json", config=hostile_tokens)
        r.run("auth", "status", "--json", config=hostile_tokens, ok=True)
        r.run("errors", "--json", config=hostile_tokens, ok=True)
        r.run("auth", "logout", config=hostile_tokens, ok=True)
        r.run("hub", "import", "customers", "customers.jsonl", config=hostile_key, ok=False)
        for args in (("dispatch", "--json"), ("poll",), ("sync", "profile", profile, "--json"),
                     ("push", "customer", "1"), ("errors", "--json"), ("status", "--json")):
            r.run(*args, config=hostile_key)
        assert echo.requests >= 15

    tokens |= handle.server.oauth.issued_tokens()
    secrets = forms(API_KEY) | forms(CLIENT_SECRET, CLIENT_ID) | forms(URL_PASSWORD) | forms(SERVICE_TOKEN)
    for token in tokens:
        secrets |= forms(token)
    assert len(tokens) >= 6

    leaks = [(where, s) for where, text in r.printed for s in secrets if s in text]
    leaks += [(str(path.relative_to(work)), s) for path, text in written_files(work, inputs)
              for s in secrets if s in text]
    for leak in leaks:
        print("LEAK", leak, [text for where, text in r.printed if where == leak[0]][:1])
    assert [] == leaks
    assert set() == leaf_commands(main) - r.commands, "a command the canary test does not run"
