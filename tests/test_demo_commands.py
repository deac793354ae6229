"""The demo's "Inspect the results" lines are commands that run as printed (and as the README shows
them): the way klaviyo-sync was started, e.g. `.venv/bin/klaviyo-sync` from scripts/demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.demo import runnable_command, shown_path

ROOT = Path(__file__).resolve().parent.parent


def test_the_command_follows_how_klaviyo_sync_was_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script below the folder: its relative path; started by name: the name; python -m: the interpreter."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert ".venv/bin/klaviyo-sync" == runnable_command(".venv/bin/klaviyo-sync")
    assert ".venv/bin/klaviyo-sync" == runnable_command(f"{tmp_path}/.venv/bin/klaviyo-sync")
    assert "./klaviyo-sync" == runnable_command("./klaviyo-sync")
    assert "/opt/kv/bin/klaviyo-sync" == runnable_command("/opt/kv/bin/klaviyo-sync")
    assert "klaviyo-sync" == runnable_command("klaviyo-sync")
    assert "'/opt/my env/bin/python' -m engine" == runnable_command("/x/engine/__main__.py", "/opt/my env/bin/python")
    assert ".venv/bin/python -m engine" == runnable_command("-m", str(tmp_path / ".venv" / "bin" / "python"))
    assert ("demo-hub/klaviyo-sync.yaml", "'/srv/my hub/x.yaml'") == (
        shown_path(tmp_path / "demo-hub" / "klaviyo-sync.yaml"), shown_path(Path("/srv/my hub/x.yaml")))


def test_the_printed_inspection_commands_run(tmp_path: Path) -> None:
    """`.venv/bin/klaviyo-sync demo` prints the README's inspection lines; each runs with exit 0."""
    script = tmp_path / ".venv" / "bin" / "klaviyo-sync"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                      "from engine.cli import main\nsys.exit(main())\n", encoding="utf-8")
    script.chmod(0o755)
    env = {**os.environ, "KLAVIYO_API_KEY": "", "KLAVIYO_SYNC_CONFIG": "", "KLAVIYO_SYNC_HUB": ""}
    demo = subprocess.run([".venv/bin/klaviyo-sync", "demo", "--customers", "3", "--transactions", "1",
                           "--profiles", "0"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert 0 == demo.returncode, demo.stderr
    lines = demo.stdout.splitlines()
    shown = [line.strip() for line in lines[lines.index("Inspect the results:") + 1:]]
    assert [".venv/bin/klaviyo-sync status --config demo-hub/klaviyo-sync.yaml",
            ".venv/bin/klaviyo-sync errors --config demo-hub/klaviyo-sync.yaml",
            ".venv/bin/klaviyo-sync hub show customer 1 --config demo-hub/klaviyo-sync.yaml"] == shown[:3]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert all(f"\n{command}\n" in readme for command in shown[:3])
    for command in shown[:3]:
        run = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=120)
        assert (0, "Traceback" in run.stderr) == (run.returncode, False), command
        assert run.stdout.strip(), command
    serve = shown[3].split("   (")[0]
    assert ".venv/bin/klaviyo-sync sandbox serve --state demo-hub/sandbox-state.json" == serve
    proc = subprocess.Popen(["bash", "-c", f"exec {serve} --port 0"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("Klaviyo sandbox listening on http://127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    assert 0 == proc.wait(timeout=30)
    proc.communicate()
