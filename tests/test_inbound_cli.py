"""The ``poll`` and ``sync profile`` commands, and the cursor's own rules."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main
from engine.flows._inbound_cursor import PollCursor
from engine.flows.inbound import check_profile_id, parse_since

ADD = "Add Klaviyo Profile TO Hub"


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {url}\napi_key: pk_test_0123456789abcdef\nhub: hub.db\n", encoding="utf-8")
    return path


def test_poll_json_prints_the_summary(sandbox, tmp_path):
    """`poll --json` transfers the profiles and prints one JSON summary."""
    sandbox.state.add_profile(email="cli1@example.com")
    sandbox.state.add_profile(email="cli2@example.com")
    result = CliRunner().invoke(main, ["poll", "--config", str(_config(tmp_path, sandbox.url)), "--json"])
    assert 0 == result.exit_code, result.output
    assert {"created": 2} == json.loads(result.output)["flows"][ADD]


def test_poll_plain_summary_and_since(sandbox, tmp_path):
    """Without --json the plain summary is printed; --since after every change finds nothing."""
    sandbox.state.add_profile(email="cli3@example.com")
    config = str(_config(tmp_path, sandbox.url))
    result = CliRunner().invoke(main, ["poll", "--config", config, "--since", "2100-01-01"])
    assert 0 == result.exit_code, result.output
    assert result.output.startswith("poll: ")
    assert "profiles updated after 2100-01-01T00:00:00Z" in result.output


def test_sync_profile_by_numeric_id(sandbox, tmp_path):
    """`sync profile 44552` transfers that profile and says which Customer it is."""
    sandbox.state.add_profile(profile_id="44552", email="num@example.com")
    result = CliRunner().invoke(main, ["sync", "profile", "44552", "--config", str(_config(tmp_path, sandbox.url))])
    assert 0 == result.exit_code, result.output
    assert result.output.startswith("Profile 44552: created -> Customer 1")


def test_sync_unknown_profile_exits_1_with_clear_error(sandbox, tmp_path):
    """An unknown id exits 1 and names the id; the error is in the hub's log."""
    config = str(_config(tmp_path, sandbox.url))
    result = CliRunner().invoke(main, ["sync", "profile", "01H8TVABCDEF1234567890", "--config", config])
    assert 1 == result.exit_code
    assert "I003 Klaviyo has no profile with id 01H8TVABCDEF1234567890" in result.output
    logged = CliRunner().invoke(main, ["errors", "--json", "--config", config])
    assert ["I003"] == [e["Code"] for e in json.loads(logged.output)]


def test_poll_every_stops_cleanly_on_ctrl_c(sandbox, tmp_path):
    """`poll --every 1s` keeps polling until SIGINT, then prints its summary and exits 0 with the cursor saved."""
    sandbox.state.add_profile(email="loop@example.com")
    config = _config(tmp_path, sandbox.url)
    cmd = [sys.executable, "-m", "engine", "poll", "--every", "1s", "--json", "--config", str(config)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path)) as proc:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert 0 == proc.returncode, err
    assert {"created": 1} == json.loads(first)["flows"][ADD]
    from engine.hub import SqliteHub

    with SqliteHub(tmp_path / "hub.db") as hub:
        assert PollCursor.load(hub).watermark is not None


def test_cursor_filter_reaches_back_by_the_overlap():
    """The next query starts `overlap` seconds before the watermark, in Klaviyo's filter syntax."""
    cursor = PollCursor(watermark=datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC), overlap=2)
    assert "greater-than(updated,2024-05-01T11:59:58Z)" == cursor.filter()
    assert None is PollCursor().filter()


def test_cursor_prunes_entries_the_next_query_cannot_return():
    """Seen entries at or before the query start are dropped; later ones stay."""
    wm = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    cursor = PollCursor(watermark=wm, overlap=2, seen={
        "old": [(wm - timedelta(seconds=2)).isoformat(), "a"], "new": [(wm - timedelta(seconds=1)).isoformat(), "b"]})
    cursor.prune()
    assert ["new"] == list(cursor.seen)


def test_cursor_only_moves_forward_and_keeps_failures_for_retry():
    """A handled profile moves the watermark forward only; a failed one joins the retry list until it passes."""
    cursor = PollCursor()
    cursor.handled("a", ("2024-05-01T12:00:05+00:00", "x"))
    cursor.handled("b", ("2024-05-01T12:00:01+00:00", "y"), failed=True)
    assert (datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC), ["b"]) == (cursor.watermark, cursor.retry)
    assert cursor.already_handled("a", ("2024-05-01T12:00:05+00:00", "x"))
    assert not cursor.already_handled("a", ("2024-05-01T12:00:05+00:00", "changed"))
    cursor.handled("b", ("2024-05-01T12:00:09+00:00", "z"), advance=False)
    assert (datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC), []) == (cursor.watermark, cursor.retry)


def test_profile_id_forms_and_since_parsing():
    """Both seed id forms pass, other text does not; --since takes a date or an ISO time."""
    assert ["01H8TVABCDEF1234567890", "44552"] == [check_profile_id(x) for x in (" 01H8TVABCDEF1234567890", "44552")]
    for bad in ("", "a/b", "12 34"):
        try:
            check_profile_id(bad)
        except Exception as exc:  # noqa: BLE001
            assert "I002" == getattr(exc, "code", None)
        else:
            raise AssertionError(f"{bad!r} passed")
    assert datetime(2024, 5, 1, tzinfo=UTC) == parse_since("2024-05-01")
    assert datetime(2024, 5, 1, 10, tzinfo=UTC) == parse_since("2024-05-01T12:00:00+02:00")
