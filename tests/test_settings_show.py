"""`settings show` writes boolean settings as the specification does: TRUE / FALSE (JSON keeps true/false)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _show(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KLAVIYO_API_KEY": "", "KLAVIYO_SYNC_CONFIG": "", "KLAVIYO_SYNC_HUB": ""}
    return subprocess.run([sys.executable, "-m", "engine", "settings", "show", "--config", str(config), *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_text_output_writes_booleans_true_false_and_json_keeps_json_booleans(tmp_path: Path) -> None:
    """generate_events and the outbound triggers print TRUE / FALSE; --json has true / false."""
    config = tmp_path / "klaviyo-sync.yaml"
    config.write_text("generate_events: false\noutbound_triggers: {customer: true, transaction: false}\n",
                      encoding="utf-8")
    text = _show(config)
    assert (0, "") == (text.returncode, text.stderr)
    lines = text.stdout.splitlines()
    assert "generate_events: FALSE" in lines
    triggers = lines.index("outbound_triggers:")
    assert ["  customer: TRUE", "  transaction: FALSE"] == lines[triggers + 1:triggers + 3]
    assert not [line for line in lines if line.endswith((": True", ": False"))]
    data = json.loads(_show(config, "--json").stdout)
    assert (False, {"customer": True, "transaction": False}) == (data["generate_events"], data["outbound_triggers"])


def test_the_default_generate_events_prints_true(tmp_path: Path) -> None:
    """With no generate_events in the file the default shows as TRUE, as the specification's example."""
    config = tmp_path / "klaviyo-sync.yaml"
    config.write_text("name: Klaviyo Integration\n", encoding="utf-8")
    assert "generate_events: TRUE" in _show(config).stdout.splitlines()
