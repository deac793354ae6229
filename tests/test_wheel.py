"""The wheel built from the checkout works installed, outside the checkout: `validate`, `map`,
`docs`, `demo` and `sandbox serve` run from a fresh virtual environment in a temporary folder.

The source is copied to a temporary folder first (so the build writes nothing into the checkout),
built with `pip wheel --no-deps`, installed with pip into a new venv (the dependencies resolve
from pip's configured index, as a user's install does), and every command runs with the tmp folder
as the current directory and no PYTHONPATH, so nothing can come from the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PIP_S = 900  # ceilings for pip so a broken index fails the test instead of hanging it
RUN_S = 300
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
                                ".pytest_cache", "demo-hub", "out", "*.db", "*.sqlite")

pytestmark = pytest.mark.slow


def _clean_env(home: Path) -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "KLAVIYO_SYNC_HUB", "KLAVIYO_SYNC_CONFIG", "KLAVIYO_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["HOME"] = str(home)
    env["XDG_CACHE_HOME"] = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))  # keep pip's cache
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = RUN_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the venv's bin folder, a work folder outside the checkout, the environment) with the wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    home = base / "home"
    home.mkdir()
    env = _clean_env(home)
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    dist = base / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(dist), "-q"], base, env,
                 timeout=PIP_S)
    assert 0 == built.returncode, built.stdout + built.stderr
    (wheel,) = dist.glob("klaviyo_sync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {p.name for p in (ROOT / "collections").glob("*.yaml")}
    assert shipped == {Path(n).name for n in names if n.startswith("engine/_data/collections/")}
    assert {"engine/_data/schemas/collection.schema.json", "engine/_data/schemas/settings.schema.json",
            "engine/_data/schemas/klaviyo/openapi-2023-10-15.json",
            "engine/_data/schemas/klaviyo/openapi-stable-latest.json"} <= set(names)
    templates = {p.name for p in (ROOT / "engine" / "docgen" / "templates").glob("*.j2")}
    assert templates == {Path(n).name for n in names if n.startswith("engine/docgen/templates/")}

    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], base, env)
    assert 0 == made.returncode, made.stderr
    bin_dir = venv / "bin"
    pip = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], base, env, timeout=PIP_S)
    assert 0 == pip.returncode, pip.stdout + pip.stderr
    work = base / "work"
    work.mkdir()
    return bin_dir, work, env


def test_the_engine_comes_from_the_venv_not_the_checkout(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """`import engine` in the venv is the installed copy, and it finds its shipped files inside it."""
    bin_dir, work, env = installed
    code = ("import engine, engine._shipped as s; print(engine.__file__); print(s.shipped('collections')); "
            "print(s.shipped('schemas', 'klaviyo'))")
    out = _run([str(bin_dir / "python"), "-c", code], work, env)
    assert 0 == out.returncode, out.stderr
    module, collections, specs = (Path(line) for line in out.stdout.splitlines())
    site = bin_dir.parent / "lib"
    assert site in module.parents and ROOT not in module.parents
    assert collections == module.parent / "_data" / "collections" and collections.is_dir()
    assert specs == module.parent / "_data" / "schemas" / "klaviyo" and specs.is_dir()


def test_validate_checks_the_shipped_collections(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    out = _run([str(bin_dir / "klaviyo-sync"), "validate", "--json"], work, env)
    assert 0 == out.returncode, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert 8 == len(report["collections"]) and [] == report["errors"]


def test_map_runs_a_record_through_a_shipped_collection(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    record = work / "profile.json"
    record.write_text(json.dumps({"type": "profile", "id": "01HWHEEL0000000000000000", "attributes": {
        "email": "wheel@example.com", "first_name": "Wheel", "last_name": "Test", "phone_number": "+14155550100"}}))
    out = _run([str(bin_dir / "klaviyo-sync"), "map", "add-profile-to-hub", str(record)], work, env)
    assert 0 == out.returncode, out.stdout + out.stderr
    outcome = json.loads(out.stdout)
    assert "ok" == outcome["status"], outcome
    assert {"EmailAddress": "wheel@example.com", "FirstName": "Wheel", "LastName": "Test"}.items() <= (
        outcome["payload"].items())


def test_docs_writes_the_pages_of_the_shipped_collections(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """`docs --out` from the installed wheel writes what docs/collections/ holds, in both formats."""
    bin_dir, work, env = installed
    out = _run([str(bin_dir / "klaviyo-sync"), "docs", "--out", "pages"], work, env)
    assert 0 == out.returncode, out.stdout + out.stderr
    committed = ROOT / "docs" / "collections"
    assert {p.name: p.read_text(encoding="utf-8") for p in committed.iterdir()} == {
        p.name: p.read_text(encoding="utf-8") for p in (work / "pages").iterdir()}
    html = _run([str(bin_dir / "klaviyo-sync"), "docs", "--format", "html"], work, env)
    assert 0 == html.returncode, html.stderr
    assert html.stdout.startswith("<!doctype html>") and "Add Klaviyo Ordered Product Event FROM Hub" in html.stdout


def test_demo_runs_every_flow(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    out = _run([str(bin_dir / "klaviyo-sync"), "demo", "--dir", "demo", "--json"], work, env)
    assert 0 == out.returncode, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert 4 == len(data["phases"]) and data["klaviyo"]["events"] > 0
    assert (work / "demo" / "klaviyo-sync.db").is_file() and (work / "demo" / "sandbox-state.json").is_file()


def test_sandbox_serve_answers_and_saves_its_state(installed: tuple[Path, Path, dict[str, str]]) -> None:
    bin_dir, work, env = installed
    state = work / "state.json"
    proc = subprocess.Popen([str(bin_dir / "klaviyo-sync"), "sandbox", "serve", "--port", "0", "--state", str(state)],
                            cwd=work, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "Klaviyo sandbox listening on http://127.0.0.1:" in first, first
        url = first.split("listening on ")[1].split()[0]
        headers = {"revision": "2023-10-15", "Authorization": "Klaviyo-API-Key pk_wheel",
                   "content-type": "application/vnd.api+json", "accept": "application/vnd.api+json"}
        body = {"data": {"type": "profile", "attributes": {"email": "wheel@example.com"}}}
        made = httpx.post(f"{url}/api/profiles/", json=body, headers=headers, timeout=30)
        assert 201 == made.status_code, made.text  # the request was checked against the shipped OpenAPI spec
        listed = httpx.get(f"{url}/api/profiles/", headers=headers, timeout=30)
        assert ["wheel@example.com"] == [p["attributes"]["email"] for p in listed.json()["data"]]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=RUN_S)
        assert 0 == proc.returncode, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=RUN_S)
    assert "wheel@example.com" in state.read_text(encoding="utf-8")
