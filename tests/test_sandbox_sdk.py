"""Klaviyo's official Python SDK against the sandbox, at the release matching each supported revision.

``scripts/setup`` installs ``klaviyo-api`` 6.0.1 (revision 2023-10-15) and 24.0.0 (2026-07-15)
into ``.cache/sdk/<revision>`` (pins: ``sdk-*`` in pyproject.toml).  Each test runs
``tests/_sdk_driver.py`` in a subprocess with only that directory on its path, pointed at a
real sandbox on loopback (the SDK's ``test_host``), through the operations the engine uses,
and asserts that the SDK built every request and parsed every answer (24.x parses into its
pydantic models, so a field the SDK's model requires and the sandbox leaves out fails here).
A missing SDK directory fails the test: run ``scripts/setup``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SDK_DIR = ROOT / ".cache" / "sdk"
DRIVER = ROOT / "tests" / "_sdk_driver.py"
KEY = "pk_test_0123456789abcdef"

COMMON = ["create_profile", "get_profile", "get_profiles", "update_profile", "create_list", "get_lists"]
STEPS = {
    "2023-10-15": ["sdk", *COMMON, "create_list_relationships", "get_list_profiles", "get_list_relationships_profiles",
                   "subscribe_profiles", "unsubscribe_profiles", "create_event", "get_events", "get_metrics"],
    "2026-07-15": ["sdk", *COMMON, "add_profiles_to_list", "get_profiles_for_list", "get_profile_ids_for_list",
                   "bulk_subscribe_profiles", "bulk_unsubscribe_profiles", "create_event", "get_events", "get_metrics",
                   "create_or_update_profile", "bulk_create_events", "bulk_import_profiles",
                   "get_bulk_import_profiles_job"],
}
SDK_VERSIONS = {"2023-10-15": "6.0.1", "2026-07-15": "24.0.0"}


def _run_sdk(revision: str, url: str) -> tuple[int, list[dict[str, Any]], str]:
    target = SDK_DIR / revision
    assert (target / "klaviyo_api").is_dir(), f"Klaviyo's SDK for {revision} is not installed in {target}: run scripts/setup"
    env = {"PYTHONPATH": str(target), "PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    done = subprocess.run([sys.executable, "-S", str(DRIVER), url, KEY], env=env, capture_output=True,
                          text=True, timeout=600, cwd=str(ROOT))
    steps = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, steps, done.stderr


def _api(url: str, path: str, revision: str) -> Any:
    resp = httpx.get(url + path, headers={"revision": revision, "Authorization": f"Klaviyo-API-Key {KEY}"})
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize("revision", sorted(STEPS))
def test_the_official_sdk_builds_and_parses_everything(sandbox, revision: str) -> None:
    """Every operation the engine uses, through Klaviyo's SDK for this revision: no request refused, no answer unparsed."""
    code, steps, stderr = _run_sdk(revision, sandbox.url)
    failed = [(s["step"], s.get("error"), s.get("trace")) for s in steps if not s["ok"]]
    assert not failed, f"the SDK for {revision} failed: {failed}"
    assert (0, STEPS[revision]) == (code, [s["step"] for s in steps]), stderr[-3000:]
    got = {s["step"]: s.get("detail") for s in steps}
    assert revision == got["sdk"]["revision"]
    installed = (SDK_DIR / revision / "PINS").read_text(encoding="utf-8")
    assert f"klaviyo-api=={SDK_VERSIONS[revision]}" in installed.splitlines()
    # the SDK's calls reached the sandbox and did what they say
    pid = got["create_profile"]
    assert ["sdk@example.com", "Kit"] == [got["get_profile"], got["update_profile"]]
    assert [pid] == got["get_profiles"]
    joined = got["get_list_profiles" if revision == "2023-10-15" else "get_profiles_for_list"]
    assert 1 == len(joined) and joined[0][:4].isdigit()  # joined_group_at, parsed
    ids = got["get_list_relationships_profiles" if revision == "2023-10-15" else "get_profile_ids_for_list"]
    assert [pid] == ids
    assert [{"OrderId": "sdk-1", "$value": 9.5, "$event_id": "sdk-1"}] == got["get_events"]
    assert "Placed Order" in got["get_metrics"]
    slash = "/" if revision == "2023-10-15" else ""
    profile = _api(sandbox.url, f"/api/profiles/{pid}{slash}", revision)["data"]
    assert ("Sdk", "Kit", "Boston") == (profile["attributes"]["first_name"], profile["attributes"]["last_name"],
                                        profile["attributes"]["location"]["city"])
    if revision == "2026-07-15":
        assert "Dr" == got["create_or_update_profile"]
        assert got["bulk_import_profiles"] in ("queued", "processing", "complete")
        assert got["get_bulk_import_profiles_job"] in ("queued", "processing", "complete")
        names = {m["attributes"]["name"] for m in _api(sandbox.url, "/api/metrics", revision)["data"]}
        assert {"Placed Order", "Bulk"} <= names


def test_the_sdk_reports_a_sandbox_error_as_klaviyo_would(sandbox) -> None:
    """The driver's failure path works: a profile that already exists is the SDK's own 409 ApiException."""
    sandbox.state.add_profile(email="sdk@example.com")
    code, steps, _ = _run_sdk("2026-07-15", sandbox.url)
    first = next(s for s in steps if s["step"] == "create_profile")
    assert (1, False) == (code, first["ok"])
    assert first["error"].startswith("ApiException: (409)") and "duplicate_profile" in first["error"]


def test_setup_installs_the_sdks_once_and_then_needs_no_network() -> None:
    """scripts/_install_sdks.py (run by scripts/setup) leaves installed pins alone: with pip cut off it still succeeds."""
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_INDEX_URL": "http://127.0.0.1:9/simple"}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "_install_sdks.py")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert (0, "") == (done.returncode, done.stdout), done.stderr
    for revision, version in SDK_VERSIONS.items():
        assert f"klaviyo-api=={version}" in (SDK_DIR / revision / "PINS").read_text(encoding="utf-8").splitlines()
