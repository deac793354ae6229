"""No command destroys data it did not create: `hub export` never writes over a hub or any
SQLite file and writes all or nothing; `demo --dir` refuses a folder holding anything but its own
files; a `--hub` that is a folder or not a database is refused and left untouched.

Every command runs as a real process on real files."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from engine.demo import DEMO_MARKER
from engine.hub import SqliteHub

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``klaviyo-sync ARGS`` in ``cwd`` (optionally with a file-size limit, to make writes fail)."""

    def limit() -> None:
        if limit_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    env = {k: v for k, v in os.environ.items() if k not in ("KLAVIYO_SYNC_CONFIG", "KLAVIYO_SYNC_HUB")}
    env.update(KLAVIYO_API_KEY="", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120, preexec_fn=limit)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_hub(path: Path, customers: int = 3) -> None:
    """A hub file with ``customers`` Customers, closed (checkpointed) so its bytes are stable."""
    with SqliteHub(path) as store:
        for i in range(1, customers + 1):
            store.add_customer({"EmailAddress": f"c{i}@example.com", "CustomerNumber": f"N{i}",
                                "Comment": "x" * 200})


def emails(path: Path) -> list[str]:
    with SqliteHub(path) as store:
        return [c["EmailAddress"] for c in store.iter_customers()]


# -- hub export ------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["hub.db", "sub/../hub.db", "link.db"])
def test_export_over_the_hub_in_use_is_refused_and_the_hub_is_untouched(tmp_path: Path, spelling: str) -> None:
    """`hub export customers HUBFILE` (any spelling of the hub's path, a symlink too) exits 2, hub bytes unchanged."""
    make_hub(tmp_path / "hub.db")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.db").symlink_to(tmp_path / "hub.db")
    before = digest(tmp_path / "hub.db")
    proc = cli("hub", "export", "customers", spelling, "--hub", "hub.db", cwd=tmp_path)
    assert (2, f"{spelling}: H006 refusing to export over the hub in use (hub.db); choose another FILE\n") == (
        proc.returncode, proc.stderr)
    assert (before, ["c1@example.com", "c2@example.com", "c3@example.com"]) == (
        digest(tmp_path / "hub.db"), emails(tmp_path / "hub.db"))


def test_export_over_another_sqlite_file_is_refused(tmp_path: Path) -> None:
    """An export FILE that starts with SQLite's header (another hub) is refused and keeps its bytes."""
    make_hub(tmp_path / "hub.db")
    make_hub(tmp_path / "other.db", customers=1)
    before = digest(tmp_path / "other.db")
    proc = cli("hub", "export", "transactions", "other.db", "--hub", "hub.db", cwd=tmp_path)
    assert (2, "other.db: H006 refusing to export over other.db: it is a SQLite database (a hub?); "
               "choose another FILE\n") == (proc.returncode, proc.stderr)
    assert before == digest(tmp_path / "other.db")


def test_export_over_the_hubs_wal_file_is_refused(tmp_path: Path) -> None:
    """The hub's -wal file counts as the hub: an export over it is refused."""
    make_hub(tmp_path / "hub.db")
    proc = cli("hub", "export", "customers", "hub.db-wal", "--hub", "hub.db", cwd=tmp_path)
    assert (2, "Traceback" in proc.stderr) == (proc.returncode, False)
    assert "H006 refusing to export over the hub in use (hub.db)" in proc.stderr


def test_export_into_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    """An export into a folder that does not exist exits 2 naming the folder; nothing is created."""
    make_hub(tmp_path / "hub.db")
    proc = cli("hub", "export", "customers", "missing/out.jsonl", "--hub", "hub.db", cwd=tmp_path)
    assert (2, "missing/out.jsonl: H006 cannot export to missing/out.jsonl: the folder missing does not "
               "exist; create it first\n") == (proc.returncode, proc.stderr)
    assert not (tmp_path / "missing").exists()


def test_export_replaces_a_jsonl_file_whole(tmp_path: Path) -> None:
    """An export over an earlier JSONL export replaces it with every record and leaves no temporary file."""
    make_hub(tmp_path / "hub.db")
    (tmp_path / "out.jsonl").write_text("old\n", encoding="utf-8")
    proc = cli("hub", "export", "customers", "out.jsonl", "--hub", "hub.db", cwd=tmp_path)
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert (0, "Exported 3 customers to out.jsonl\n", 3) == (proc.returncode, proc.stderr, len(lines))
    assert ["hub.db", "out.jsonl"] == sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("hub.db-"))


def test_a_failed_export_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    """An export that cannot be written out (file-size limit hit) exits 2 and the old file keeps its bytes."""
    make_hub(tmp_path / "hub.db", customers=200)
    with SqliteHub(tmp_path / "hub.db"):
        pass  # -wal and -shm exist before the limited process starts
    (tmp_path / "out.jsonl").write_text('{"kept": true}\n', encoding="utf-8")
    proc = cli("hub", "export", "customers", "out.jsonl", "--hub", "hub.db", cwd=tmp_path,
               limit_file_bytes=40_000)
    assert (2, "Traceback" in proc.stderr) == (proc.returncode, False)
    assert "out.jsonl: H006 cannot write out.jsonl: File too large" in proc.stderr
    assert '{"kept": true}\n' == (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert [] == [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- --hub that is no hub --------------------------------------------------------------------


def test_a_text_file_as_hub_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """`--hub notes.txt` exits 2 naming the path; the file keeps its bytes and no -wal/-shm appears."""
    (tmp_path / "notes.txt").write_text("my notes, not a database\n", encoding="utf-8")
    proc = cli("status", "--hub", "notes.txt", cwd=tmp_path)
    assert (2, "notes.txt: H005 the hub path notes.txt is not a hub: the file exists and is not a SQLite "
               "database; it was left untouched\n") == (proc.returncode, proc.stderr)
    assert ("my notes, not a database\n", ["notes.txt"]) == (
        (tmp_path / "notes.txt").read_text(encoding="utf-8"), [p.name for p in tmp_path.iterdir()])


def test_a_folder_as_hub_is_refused_by_name(tmp_path: Path) -> None:
    """A settings `hub:` naming a folder exits 2 with the folder's path, no traceback."""
    (tmp_path / "data").mkdir()
    (tmp_path / "klaviyo-sync.yaml").write_text("hub: data\n", encoding="utf-8")
    proc = cli("errors", "--config", "klaviyo-sync.yaml", cwd=tmp_path)
    folder = tmp_path / "data"
    assert (2, f"{folder}: H005 the hub path {folder} is a folder, not a hub file; give a file path "
               "(--hub, KLAVIYO_SYNC_HUB or the settings' hub key)\n") == (proc.returncode, proc.stderr)
    assert [] == list(folder.iterdir())


def test_a_folder_given_to_hub_is_a_usage_error(tmp_path: Path) -> None:
    """`--hub FOLDER` exits 2 with click's message naming the folder."""
    (tmp_path / "data").mkdir()
    proc = cli("status", "--hub", "data", cwd=tmp_path)
    assert (2, "Error: Invalid value for '--hub': File 'data' is a directory.") == (
        proc.returncode, proc.stderr.splitlines()[-1])


# -- demo --dir ------------------------------------------------------------------------------


def test_demo_refuses_a_real_subscription_folder_and_touches_nothing(tmp_path: Path) -> None:
    """A folder with a user's klaviyo-sync.yaml and hub is refused (exit 2); both keep their bytes."""
    settings = "api_key: ${KLAVIYO_API_KEY}\nhub: klaviyo-sync.db\n"
    (tmp_path / "klaviyo-sync.yaml").write_text(settings, encoding="utf-8")
    make_hub(tmp_path / "klaviyo-sync.db")
    before = digest(tmp_path / "klaviyo-sync.db")
    proc = cli("demo", "--dir", str(tmp_path), cwd=tmp_path)
    assert (2, f"{tmp_path}: D001 refusing to run the demo in {tmp_path}: its klaviyo-sync.yaml was not "
               "written by the demo (a real subscription's hub or settings?); give --dir an empty or new "
               "folder\n") == (proc.returncode, proc.stderr)
    assert (settings, before) == ((tmp_path / "klaviyo-sync.yaml").read_text(encoding="utf-8"),
                                  digest(tmp_path / "klaviyo-sync.db"))


def test_demo_refuses_a_folder_with_any_other_file(tmp_path: Path) -> None:
    """A folder holding a file the demo never writes is refused and the file stays."""
    (tmp_path / "notes.md").write_text("mine\n", encoding="utf-8")
    proc = cli("demo", "--dir", str(tmp_path), cwd=tmp_path)
    assert (2, f"{tmp_path}: D001 refusing to run the demo in {tmp_path}: it holds files the demo did not "
               "write (notes.md); the demo replaces its folder's hub and settings, so give --dir an empty "
               "or new folder\n") == (proc.returncode, proc.stderr)
    assert ["notes.md"] == [p.name for p in tmp_path.iterdir()]


def test_demo_refuses_a_hub_without_the_demos_settings(tmp_path: Path) -> None:
    """A lone klaviyo-sync.db (a hub the demo did not make) is refused: the settings file is missing."""
    make_hub(tmp_path / "klaviyo-sync.db")
    before = digest(tmp_path / "klaviyo-sync.db")
    proc = cli("demo", "--dir", str(tmp_path), cwd=tmp_path)
    assert (2, True) == (proc.returncode, "its klaviyo-sync.yaml is missing" in proc.stderr)
    assert before == digest(tmp_path / "klaviyo-sync.db")


def test_demo_takes_a_missing_folder_and_reruns_in_its_own(tmp_path: Path) -> None:
    """A new folder is created; a second run in it (only the demo's own files) succeeds."""
    folder = tmp_path / "new" / "demo"
    first = cli("demo", "--dir", str(folder), "--customers", "3", "--transactions", "1", "--profiles", "0",
                cwd=tmp_path)
    second = cli("demo", "--dir", str(folder), "--customers", "3", "--transactions", "1", "--profiles", "0",
                 cwd=tmp_path)
    assert (0, 0, "") == (first.returncode, second.returncode, second.stderr)
    assert DEMO_MARKER == (folder / "klaviyo-sync.yaml").read_text(encoding="utf-8").splitlines()[0]
