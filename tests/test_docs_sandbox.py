"""Every `curl` command in docs/sandbox.md is true: run in document order (with `bash`, `SANDBOX`
and `KEY` set) against a real `klaviyo-sync sandbox serve` started on a free loopback port with
the page's seed file; each answers 2xx (or the status its shown `errors` document or `# HTTP N`
line gives) and holds every field its shown answer shows ("…" = any value). SIGTERM then saves
the state file in the shape the page shows."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "sandbox.md"
ANY = "…"
KEY = "pk_docs_sandbox_0001"


@dataclass
class Example:
    command: str
    status: int | None  # from a "# HTTP N" line
    answer: Any         # the JSON answer shown after the block, or None
    line: int


def _blocks(text: str) -> list[tuple[str, str, int]]:
    """(info string, body, line number) of every fenced code block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(.*)$", lines[i])
        if m:
            start, body = i + 1, []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            out.append((m.group(1).strip(), "\n".join(body), start))
        i += 1
    return out


def _examples(blocks: list[tuple[str, str, int]]) -> list[Example]:
    found = []
    for n, (info, body, line) in enumerate(blocks):
        if info != "sh" or not body.lstrip().startswith("curl "):
            continue
        commands = re.findall(r"^curl (?:.*\\\n)*.*$", body, flags=re.M)
        assert len(commands) == 1, f"docs/sandbox.md:{line}: one curl command per block"
        status = re.search(r"^# HTTP (\d{3})", body, flags=re.M)
        following = blocks[n + 1] if n + 1 < len(blocks) else ("", "", 0)
        answer = json.loads(following[1]) if following[0] == "json" else None
        found.append(Example(commands[0], int(status.group(1)) if status else None, answer, line))
    return found


def _shown(actual: Any, shown: Any, where: str = "") -> list[str]:
    """Where ``actual`` does not hold what ``shown`` shows (dict: the keys shown; list: the same
    length, item by item; "…": anything)."""
    if shown == ANY:
        return []
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r:.80}"]
        return [p for k, v in shown.items()
                for p in ([f"{where}.{k}: missing"] if k not in actual else _shown(actual[k], v, f"{where}.{k}"))]
    if isinstance(shown, list):
        if not isinstance(actual, list) or len(actual) != len(shown):
            return [f"{where}: expected {len(shown)} item(s), got {actual!r:.200}"]
        return [p for i, (a, s) in enumerate(zip(actual, shown, strict=False)) for p in _shown(a, s, f"{where}[{i}]")]
    return [] if actual == shown else [f"{where}: expected {shown!r}, got {actual!r:.80}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """`sandbox serve` on a free port with the page's seed file as --state; yields (url, state file, process)."""
    seed = [body for info, body, _ in _blocks(DOC.read_text(encoding="utf-8")) if info == "json sandbox.json"]
    assert len(seed) == 1, "docs/sandbox.md shows one seed file (```json sandbox.json)"
    state = tmp_path / "sandbox.json"
    state.write_text(seed[0], encoding="utf-8")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "engine", "sandbox", "serve", "--port", str(port),
                             "--state", str(state), "--api-key", KEY], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url + "/", timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.1)
    yield url, state, proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_every_curl_example_answers_as_shown_and_sigterm_saves_the_state_shown(served: Any, tmp_path: Path) -> None:
    assert shutil.which("curl") and shutil.which("bash"), "this test runs the page's commands with curl and bash"
    url, state, proc = served
    blocks = _blocks(DOC.read_text(encoding="utf-8"))
    examples = _examples(blocks)
    assert len(examples) >= 12
    env = {**os.environ, "SANDBOX": url, "KEY": KEY}
    for ex in examples:
        body = tmp_path / "answer.json"
        body.unlink(missing_ok=True)
        run = subprocess.run(["bash", "-c", f"{ex.command} -o {body} -w '%{{http_code}}'"], env=env,
                             capture_output=True, text=True, timeout=30)
        where = f"docs/sandbox.md:{ex.line}"
        assert 0 == run.returncode, f"{where}: curl failed: {run.stderr}"
        status = int(run.stdout)
        errors = ex.answer.get("errors") if isinstance(ex.answer, dict) else None
        expected = ex.status or (errors[0]["status"] if errors else None)
        if expected is not None:
            assert expected == status, f"{where}: HTTP {status}"
        else:
            assert 200 <= status < 300, f"{where}: HTTP {status}: {body.read_text()[:300]}"
        text = body.read_text(encoding="utf-8") if body.exists() else ""
        if ex.answer is None:
            assert status in (202, 204) and text == "", f"{where}: an answer with a body shows it"
            continue
        assert [] == _shown(json.loads(text), ex.answer), where

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert (0, f"Sandbox stopped; state saved to {state}") == (proc.returncode, err.strip().splitlines()[-1])
    saved = [body for info, body, _ in blocks if info == "json saved-state"]
    assert len(saved) == 1
    assert [] == _shown(json.loads(state.read_text(encoding="utf-8")), json.loads(saved[0]))
    assert KEY not in out + err


def test_the_comparison_refuses_what_the_page_does_not_show() -> None:
    """The checker is strict where the page is: a different value, a missing key, another length."""
    assert [] == _shown({"a": 1, "b": [1, 2], "c": "x"}, {"a": 1, "b": [ANY, 2]})
    assert [".a: expected 2, got 1"] == _shown({"a": 1}, {"a": 2})
    assert [".b: missing"] == _shown({"a": 1}, {"b": 1})
    assert ["[0]: expected 2 item(s), got [1]"] == _shown([[1]], [[1, 2]])


def test_a_json_file_that_is_not_a_state_file_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    """`--state` on a stray JSON file exits 2 naming the file and the keys expected; the file is unchanged."""
    stray = tmp_path / "settings.json"
    stray.write_text('{"api_url": "http://127.0.0.1:8765"}\n', encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "engine", "sandbox", "serve", "--port", "0", "--state", str(stray)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (2, f"Error: Invalid value for --state: {stray}: cannot load the sandbox state: not a sandbox state "
               "file: expected the keys profiles, lists, metrics, events, jobs, got 'api_url'") == (
        run.returncode, run.stderr.strip().splitlines()[-1])
    assert '{"api_url": "http://127.0.0.1:8765"}\n' == stray.read_text(encoding="utf-8")
