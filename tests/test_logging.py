"""--log-level and --log-format on every command; secrets masked in every log record."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from engine import logconfig
from engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
KEY = "pk_logging_secret_9876543210"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = [(prefix, group)]
    for name, cmd in group.commands.items():
        out += _commands(cmd, (*prefix, name)) if isinstance(cmd, click.Group) else [((*prefix, name), cmd)]
    return out


def test_every_command_has_both_log_options() -> None:
    for path, cmd in _commands(main):
        names = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        assert {"--log-level", "--log-format"} <= names, " ".join(path) or "klaviyo-sync"


def _run(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_SYNC")}
    env.update(PYTHONPATH=str(ROOT), KLAVIYO_API_KEY="", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)


def test_debug_json_lines_from_a_real_dispatch_mask_the_key(tmp_path: Path, sandbox) -> None:
    (tmp_path / "klaviyo-sync.yaml").write_text(
        f"api_url: {sandbox.url}\napi_key: {KEY}\nhub: hub.db\noutbound_triggers: {{customer: true}}\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"EmailAddress": "log@example.com", "CustomerNumber": "L-1"}) + "\n")
    assert 0 == _run(tmp_path, "hub", "import", "customers", "c.jsonl").returncode
    run = _run(tmp_path, "dispatch", "--log-level", "debug", "--log-format", "json")
    assert 0 == run.returncode, run.stderr
    records = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert records and {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["level"] == "debug" and r["logger"].startswith("engine.klaviyo") for r in records)
    assert KEY not in run.stdout + run.stderr
    quiet = _run(tmp_path, "dispatch")
    assert "debug" not in quiet.stderr.lower()


def test_the_environment_sets_the_level(tmp_path: Path) -> None:
    run = _run(tmp_path, "status", env_extra={"KLAVIYO_SYNC_LOG_LEVEL": "nonsense"})
    assert 2 == run.returncode and "--log-level" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("text", [
    f"key {KEY} refused", f"Authorization: Klaviyo-API-Key {KEY}", "Authorization: Bearer eyJhbGciOi.abc.def",
    'body {"access_token": "tok-123456", "refresh_token": "ref-654321"}', "GET /cb?code=abc123&state=x",
    "https://user:hunter2pass@a.klaviyo.com/api", "client_secret=shh-s3cret-value",
])
def test_credentials_never_reach_a_log_line(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    logconfig.register_secret("shh-s3cret-value")
    logconfig.configure("info", "text")
    try:
        logging.getLogger("engine.test").warning("%s", text)
        try:
            raise ValueError(text)
        except ValueError:
            logging.getLogger("engine.test").exception("failed")
    finally:
        logconfig.reset()
    err = capsys.readouterr().err
    for secret in (KEY, "eyJhbGciOi.abc.def", "tok-123456", "ref-654321", "abc123", "hunter2pass", "shh-s3cret-value"):
        assert secret not in err
    assert "***" in err
