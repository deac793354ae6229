"""Several SqliteHubs on one file in one process keep SQLite's file locks (and so the WAL) intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.hub import SqliteHub

ROOT = Path(__file__).resolve().parents[1]
_WRITE = ("import sys; from engine.hub import SqliteHub; h = SqliteHub(sys.argv[1]); "
          "h.add_customer({'EmailAddress': sys.argv[2], 'CustomerNumber': 'x'}); h.close()")
_READ = ("import sys; from engine.hub import SqliteHub; "
         "print(' '.join(sorted(c['EmailAddress'] for c in SqliteHub(sys.argv[1]).iter_customers())))")


def _python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                          check=True, cwd=ROOT)
    return done.stdout.strip()


def test_a_second_hub_on_the_file_leaves_the_first_ones_writes_visible(tmp_path: Path) -> None:
    """Opening and closing a second hub on a file, then another process writing it, loses none of the first hub's
    later writes: every process sees them (the header check does not drop the first connection's locks)."""
    path = tmp_path / "hub.db"
    first = SqliteHub(path)
    first.add_customer({"EmailAddress": "a@example.com", "CustomerNumber": "1"})
    SqliteHub(path).close()
    _python(_WRITE, str(path), "b@example.com")
    first.add_customer({"EmailAddress": "c@example.com", "CustomerNumber": "3"})
    assert "a@example.com b@example.com c@example.com" == _python(_READ, str(path))
    first.close()


def test_a_file_that_is_no_hub_is_still_refused_once_a_hub_is_open(tmp_path: Path) -> None:
    """The header check is skipped only for a file this process has open: another path is still checked."""
    hub = SqliteHub(tmp_path / "hub.db")
    text = tmp_path / "notes.db"
    text.write_text("not a database", encoding="utf-8")
    try:
        SqliteHub(text)
    except Exception as exc:  # noqa: BLE001 - the class and code are asserted
        assert "H005" == getattr(exc, "code", None)
    else:
        raise AssertionError("a text file was opened as a hub")
    finally:
        hub.close()
    assert "not a database" == text.read_text(encoding="utf-8")
