"""Progress bars of poll, hub import, dispatch and push: on a terminal only, on standard error only.

Each command runs as a real process against the real sandbox and a real hub file, once with
standard error on a pseudo-terminal and once on pipes (or with --json); standard output must be
the same either way.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
TIMING = re.compile(r"\d+\.\d+s\b")
# printf style: the text is JSON, whose braces an f-string would have to double
CUSTOMERS = ['{"EmailAddress": "p%d@example.com", "CustomerNumber": "%d"}' % (i, i) for i in range(1, 6)]  # noqa: UP031


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE")}
    return {**env, "TERM": "xterm-256color", "COLUMNS": "200", "KLAVIYO_API_KEY": ""}


def on_tty(*args: str) -> tuple[int, str, str]:
    """Run the CLI with standard error on a pseudo-terminal: (exit code, stdout, the terminal's text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "engine", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, env=_env())
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out.decode(), ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def on_pipes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, cwd=ROOT, env=_env(), timeout=120)


def _folder(root: Path, name: str, url: str) -> tuple[Path, Path]:
    """A folder with settings for the sandbox at ``url`` (customer trigger on) and a customers file."""
    folder = root / name
    folder.mkdir()
    config = folder / "klaviyo-sync.yaml"
    config.write_text(f"api_url: {url}\napi_key: pk_test_0123456789abcdef\nhub: hub.db\n"
                      "outbound_triggers: {customer: true}\n", encoding="utf-8")
    (folder / "customers.jsonl").write_text("\n".join(CUSTOMERS) + "\n", encoding="utf-8")
    return config, folder / "customers.jsonl"


def _plain(text: str) -> str:
    return TIMING.sub("Ns", text)


def test_hub_import_and_dispatch_show_progress_on_a_terminal_and_print_the_same(sandbox_factory: Any,
                                                                               tmp_path: Path) -> None:
    """On a terminal hub import and dispatch draw a bar with their counts on stderr; stdout is as on a pipe."""
    config, customers = _folder(tmp_path, "tty", sandbox_factory().url)
    rc, imported, tty = on_tty("hub", "import", "customers", str(customers), "--config", str(config))
    assert 0 == rc, tty
    assert "hub import customers 5 added" in tty and "5/5" in tty, tty
    rc, dispatched, tty = on_tty("dispatch", "--config", str(config))
    assert 0 == rc, tty
    assert "dispatch 5 created" in tty and "5/5" in tty and "/s" in tty and "eta" in tty, tty

    config, customers = _folder(tmp_path, "pipe", sandbox_factory().url)
    piped_import = on_pipes("hub", "import", "customers", str(customers), "--config", str(config))
    piped = on_pipes("dispatch", "--config", str(config))
    assert "" == piped_import.stderr
    assert [] == [mark for mark in ("━", "5/5", "eta", "dispatch 5 created") if mark in piped.stderr]
    assert "Imported 5 customers (5 added, 0 updated, 0 unchanged)\n" == imported == piped_import.stdout
    assert "5 created" in dispatched
    assert _plain(piped.stdout) == _plain(dispatched)


def test_push_shows_progress_on_a_terminal(sandbox: Any, tmp_path: Path) -> None:
    """push customer ID draws its bar with the outcome on a terminal; the printed report is unchanged."""
    config, customers = _folder(tmp_path, "tty", sandbox.url)
    assert 0 == on_pipes("hub", "import", "customers", str(customers), "--config", str(config)).returncode
    rc, out, tty = on_tty("push", "customer", "1", "--config", str(config))
    assert 0 == rc, tty
    assert "push customer 1 1 created" in tty and "1/1" in tty, tty
    assert out.startswith("push customer 1: ") and "1 created" in out
    assert "━" not in out


def test_poll_shows_progress_on_stderr_not_stdout(sandbox: Any, tmp_path: Path) -> None:
    """poll's spinner and counts go to the terminal on stderr; stdout holds only the summary."""
    for i in range(3):
        sandbox.state.add_profile(email=f"polled{i}@example.com")
    config, _ = _folder(tmp_path, "tty", sandbox.url)
    rc, out, tty = on_tty("poll", "--config", str(config))
    assert 0 == rc, tty
    assert "poll: Klaviyo profiles 3 created" in tty and "3/?" in tty, tty
    assert out.startswith("poll: ") and "━" not in out and "3/?" not in out


def test_json_or_a_pipe_draws_no_progress(sandbox: Any, tmp_path: Path) -> None:
    """With --json nothing reaches the terminal and stdout is one JSON document; on pipes stderr stays empty."""
    config, customers = _folder(tmp_path, "json", sandbox.url)
    rc, out, tty = on_tty("hub", "import", "customers", str(customers), "--json", "--config", str(config))
    assert (0, "") == (rc, tty)
    assert (5, 5, []) == (json.loads(out)["imported"], json.loads(out)["added"], json.loads(out)["errors"])
    rc, out, tty = on_tty("dispatch", "--json", "--config", str(config))
    assert (0, "") == (rc, tty)
    assert {"created": 5} == json.loads(out)["flows"]["Add Klaviyo Profile FROM Hub"]
    rc, out, tty = on_tty("push", "customer", "2", "--json", "--config", str(config))
    assert (0, "") == (rc, tty)
    assert "push customer 2" == json.loads(out)["name"]
    sandbox.state.add_profile(email="quiet@example.com")
    rc, out, tty = on_tty("poll", "--json", "--config", str(config))
    assert (0, "") == (rc, tty)
    assert "poll" == json.loads(out)["name"]
    piped = on_pipes("poll", "--config", str(config))
    assert (0, "") == (piped.returncode, piped.stderr)
