"""``--json`` on every command: each takes it and prints one JSON document on standard output.

The command list is read from the CLI group itself, so a new command without ``--json`` (or
missing from the tables below) fails here.  Commands that finish quickly run in-process against
the real sandbox and a real hub file; the long-running ones (the two servers, ``auth login``)
run as real processes and print one JSON line on start (or, for login, once connected).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from _oauth_helpers import CLIENT_ID, CLIENT_SECRET, follow
from click.testing import CliRunner

from engine.cli import main
from engine.hub import SqliteHub

ROOT = Path(__file__).resolve().parent.parent
GOLDEN_RECORD = ROOT / "tests/golden/add-profile-to-hub/create_full/record.json"

#: Command -> (arguments after it, expected exit code, a key the JSON document must have).
#: ``{dir}`` is the test's folder (settings, hub.db, customers.jsonl).
QUICK: dict[str, tuple[list[str], int, str]] = {
    "validate": ([], 0, "ok"),
    "map": (["add-profile-to-hub", str(GOLDEN_RECORD)], 0, "status"),
    "docs": (["--out", "{dir}/mapping-docs"], 0, "files"),
    "demo": (["--dir", "{dir}/demo", "--customers", "3", "--transactions", "1", "--profiles", "1"], 0, "phases"),
    "hub import": (["customers", "{dir}/customers.jsonl"], 1, "errors"),
    "hub show": (["customer", "1"], 0, "EmailAddress"),
    "hub export": (["customers", "{dir}/out.jsonl"], 0, "exported"),
    "errors": ([], 0, ""),
    "status": ([], 0, "counts"),
    "settings show": ([], 0, "api_url"),
    "poll": ([], 0, "flows"),
    "sync profile": (["44552"], 0, "result"),
    "dispatch": (["--dry-run"], 0, "records"),
    "push customer": (["1"], 0, "records"),
    "push transaction": (["1", "--dry-run"], 0, "records"),
    "backfill customers": (["--dry-run"], 2, "error"),
    "backfill transactions": (["--dry-run"], 0, "records"),  # the folder's revision 2023-10-15 has no bulk import
    "auth status": ([], 0, "method"),
    "auth logout": ([], 0, "connected"),
}
#: Long-running commands, each run as a real process by a test below.
LONG_RUNNING = {"sandbox serve", "serve", "worker", "auth login"}


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, cmd in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            found.update(_commands(cmd, path + " "))
        else:
            found[path] = cmd
    return found


def test_every_command_takes_json() -> None:
    """Every command of the CLI has a --json flag and is run by a test of this file."""
    commands = _commands(main)
    assert [] == [name for name, cmd in commands.items() if not any("--json" in p.opts for p in cmd.params)]
    assert set(commands) == set(QUICK) | LONG_RUNNING


@pytest.fixture
def folder(sandbox: Any, tmp_path: Path) -> Path:
    """Settings for the sandbox, a hub with one queued Customer and one Transaction, a customers
    file with one bad line, and a profile 44552 in the sandbox."""
    (tmp_path / "klaviyo-sync.yaml").write_text(
        f"api_url: {sandbox.url}\napi_key: pk_test_0123456789abcdef\nhub: hub.db\n"
        "outbound_triggers: {customer: true, transaction: true}\n", encoding="utf-8")
    with SqliteHub(tmp_path / "hub.db", outbound_triggers={"Customer", "Transaction"}) as store:
        store.upsert_customer({"EmailAddress": "json1@example.com", "CustomerNumber": "1"})
        store.upsert_transaction({"TransactionNumber": "T-1", "CustomerId": 1, "Total": 5,
                                  "Lines": [{"Sku": "A"}]})
    (tmp_path / "customers.jsonl").write_text(
        '{"EmailAddress": "json2@example.com", "CustomerNumber": "2"}\n{"CustomerNumber": "3"}\n', encoding="utf-8")
    sandbox.state.add_profile(profile_id="44552", email="numeric@example.com")
    return tmp_path


@pytest.mark.parametrize("command", sorted(QUICK))
def test_quick_command_prints_one_json_document(command: str, folder: Path) -> None:
    """The command with --json prints one JSON document (and nothing else) on stdout."""
    args, code, key = QUICK[command]
    argv = [*command.split(), *(a.format(dir=folder) for a in args), "--json"]
    env = {"KLAVIYO_SYNC_CONFIG": str(folder / "klaviyo-sync.yaml"), "KLAVIYO_API_KEY": ""}
    if command in ("validate", "map", "demo", "docs"):
        env = {"KLAVIYO_SYNC_CONFIG": "", "KLAVIYO_API_KEY": ""}
    result = CliRunner().invoke(main, argv, env=env, catch_exceptions=False)
    assert code == result.exit_code, result.output
    document = json.loads(result.stdout)
    assert not key or key in document, document


def test_hub_import_json_lists_the_skipped_line_with_its_location(folder: Path) -> None:
    """hub import --json counts what was imported and locates each skipped line; stderr stays empty."""
    file = str(folder / "customers.jsonl")
    result = CliRunner().invoke(main, ["hub", "import", "customers", file, "--json",
                                       "--config", str(folder / "klaviyo-sync.yaml")], catch_exceptions=False)
    document = json.loads(result.stdout)
    assert (1, "") == (result.exit_code, result.stderr)
    assert {"kind": "customers", "file": file, "imported": 1, "added": 1, "updated": 0, "unchanged": 0,
            "skipped": 1} == {k: v for k, v in document.items() if k != "errors"}
    assert [("H001", file, 2)] == [(e["code"], e["file"], e["line"]) for e in document["errors"]]


def test_hub_export_json_without_a_file_is_a_usage_error(folder: Path) -> None:
    """Without FILE standard output carries the JSONL, so --json is refused with exit 2."""
    result = CliRunner().invoke(main, ["hub", "export", "customers", "--json",
                                       "--config", str(folder / "klaviyo-sync.yaml")])
    assert 2 == result.exit_code
    assert "--json needs FILE" in result.stderr and "" == result.stdout


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, cwd=ROOT, env={**os.environ, **(env or {})})


def _first_line_then_stop(proc: subprocess.Popen[str]) -> tuple[dict[str, Any], str, str]:
    """The JSON line printed on start; then SIGTERM and the rest of stdout and stderr."""
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        started = json.loads(line) if line.strip() else {}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    return started, out, err


def test_sandbox_serve_json_prints_one_line_with_the_url(tmp_path: Path) -> None:
    """sandbox serve --json prints {"url", "pid", "state"} on start; the URL answers; nothing else on stdout."""
    state = tmp_path / "state.json"
    proc = _start("sandbox", "serve", "--port", "0", "--state", str(state), "--json")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        started = json.loads(line)
        answer = httpx.get(started["url"] + "/api/profiles", headers={"Authorization": "Klaviyo-API-Key pk_x",
                                                                       "revision": "2024-10-15"}, timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert (proc.pid, str(state), 200) == (started["pid"], started["state"], answer.status_code)
    assert ("", 0) == (out, proc.returncode)
    assert "listening on" in err and state.is_file()


def test_serve_json_prints_one_line_with_the_url(sandbox: Any, tmp_path: Path) -> None:
    """serve --json prints {"url", "pid", "hub"} once listening; its announcements go to stderr."""
    config = tmp_path / "klaviyo-sync.yaml"
    config.write_text(f"api_url: {sandbox.url}\napi_key: pk_test_0123456789abcdef\nhub: hub.db\n", encoding="utf-8")
    proc = _start("serve", "--port", "0", "--json", "--config", str(config), env={"KLAVIYO_API_KEY": ""})
    started, out, err = _first_line_then_stop(proc)
    assert (proc.pid, str(tmp_path / "hub.db")) == (started.get("pid"), started.get("hub")), err
    assert started["url"].startswith("http://127.0.0.1:")
    assert ("", 0) == (out, proc.returncode)
    assert "klaviyo-sync serve: listening on" in err and "stopped cleanly" in err


def test_worker_json_prints_one_line_with_its_subscriptions(sandbox: Any, tmp_path: Path, jobs_url: str) -> None:
    """worker --json prints {"pid", "subscriptions", "jobs"} once running; its announcements go to stderr."""
    subs = tmp_path / "subscriptions"
    subs.mkdir()
    (subs / "one.yaml").write_text(f"subscription: one\napi_url: {sandbox.url}\napi_key: pk_test_0123456789abcdef\n"
                                   "hub: ../one.db\n", encoding="utf-8")
    proc = _start("worker", "--subscriptions", str(subs), "--jobs", jobs_url, "--json", env={"KLAVIYO_API_KEY": ""})
    started, out, err = _first_line_then_stop(proc)
    assert (proc.pid, ["one"], jobs_url) == (started.get("pid"), started.get("subscriptions"), started.get("jobs")), err
    assert ("", 0) == (out, proc.returncode)
    assert "klaviyo-sync worker: running 1 subscription(s)" in err and "stopped cleanly" in err


def test_auth_login_json_prints_the_status_once_connected(sandbox_factory: Any, tmp_path: Path) -> None:
    """auth login --json shows the URL on stderr and prints the connection's status as JSON on stdout."""
    handle = sandbox_factory(oauth_clients={CLIENT_ID: CLIENT_SECRET})
    config = tmp_path / "klaviyo-sync.yaml"
    config.write_text(f"api_url: {handle.url}\noauth:\n  client_id: \"{CLIENT_ID}\"\n"
                      "  client_secret: \"${KLAVIYO_CLIENT_SECRET}\"\n"
                      "  redirect_url: \"http://127.0.0.1:8765/callback\"\n", encoding="utf-8")
    proc = _start("auth", "login", "--no-browser", "--port", "0", "--timeout", "30", "--json",
                  "--config", str(config), "--hub", str(tmp_path / "hub.db"),
                  env={"KLAVIYO_CLIENT_SECRET": CLIENT_SECRET, "KLAVIYO_API_KEY": ""})
    assert proc.stderr is not None
    prompt = [proc.stderr.readline(), proc.stderr.readline()]
    follow(prompt[1].strip())
    out, err = proc.communicate(timeout=60)
    assert 0 == proc.returncode, err
    assert "oauth" == json.loads(out)["method"]
    assert prompt[0].startswith("Open this URL")
    issued = handle.server.oauth.issued_tokens() | {CLIENT_SECRET}
    assert [] == [t for t in issued if t in out + err + "".join(prompt)]
