"""Klaviyo revisions: the sandbox refuses one Klaviyo does not publish; status and the dashboard warn
about one past its support window; RateLimit headers and tiers follow the revision."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from engine.klaviyo import revision as rev
from engine.sandbox import SandboxOptions, SandboxServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "pk_revisions_0000"


@pytest.fixture
def served():
    handle = SandboxServer(SandboxOptions(seed=5)).start_in_thread()
    yield handle
    handle.stop()


def _get(url: str, revision: str, path: str = "/api/profiles/") -> httpx.Response:
    return httpx.get(url + path, headers={"Authorization": f"Klaviyo-API-Key {KEY}", "revision": revision})


@pytest.mark.parametrize("revision", ["2099-01-15", "2021-01-01", "2024-03-15", "2026-07-15.beta"])
def test_a_revision_klaviyo_does_not_publish_is_refused(served, revision: str) -> None:
    answer = _get(served.url, revision)
    [error] = answer.json()["errors"]
    assert (400, "invalid", "revision") == (answer.status_code, error["code"], error["source"]["parameter"])
    assert error["detail"].startswith(f"Invalid revision '{revision}'. The revision must be a valid revision")


@pytest.mark.parametrize("revision", ["2023-10-15", "2024-10-15", "2026-07-15", "2026-10-15", "2026-07-15.pre"])
def test_every_published_revision_is_served_retired_ones_too(served, revision: str) -> None:
    path = "/api/profiles/" if rev.trailing_slash(revision) else "/api/profiles"
    assert 200 == _get(served.url, revision, path).status_code


def test_rate_headers_follow_the_revisions_tier_and_come_on_4xx_too(served) -> None:
    old = _get(served.url, "2023-10-15")
    new = _get(served.url, "2026-07-15", "/api/profiles")
    assert ("700", "750") == (old.headers["RateLimit-Limit"], new.headers["RateLimit-Limit"])
    missing = _get(served.url, "2026-07-15", "/api/profiles/01NOSUCHPROFILE00000000000")
    assert 404 == missing.status_code
    assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(missing.headers)
    bad_filter = httpx.get(served.url + "/api/profiles", params={"filter": "equals(nope,1)"},
                           headers={"Authorization": f"Klaviyo-API-Key {KEY}", "revision": "2026-07-15"})
    assert (400, "750") == (bad_filter.status_code, bad_filter.headers.get("RateLimit-Limit"))


def test_a_throttled_answer_has_no_rate_headers() -> None:
    handle = SandboxServer(SandboxOptions(seed=5, tiers={"L": {"burst": 1, "steady": 1}})).start_in_thread()
    try:
        assert 200 == _get(handle.url, "2023-10-15").status_code
        throttled = _get(handle.url, "2023-10-15")
    finally:
        handle.stop()
    assert 429 == throttled.status_code
    assert "Retry-After" in throttled.headers and "RateLimit-Limit" not in throttled.headers


def test_support_windows_from_the_table() -> None:
    day = datetime.date(2026, 12, 3)
    assert ("retired", "2025-10-15") == (rev.support("2023-10-15", day).state, str(rev.support("2023-10-15", day).retired))
    assert "deprecated" == rev.support("2025-07-15", day).state
    assert "stable" == rev.support("2026-07-15", day).state
    assert rev.support("2026-07-15", day).warning() is None
    assert "support for this one ended on 2025-10-15" in (rev.support("2023-10-15", day).warning() or "")


def _status(tmp_path: Path, revision: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "klaviyo-sync.yaml").write_text(f"api_key: {KEY}\napi_revision: '{revision}'\nhub: hub.db\n")
    env = {k: v for k, v in os.environ.items() if k not in ("KLAVIYO_SYNC_CONFIG", "KLAVIYO_SYNC_HUB")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "engine", "status", *extra], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)


def test_status_warns_when_the_revision_is_past_support(tmp_path: Path) -> None:
    text = _status(tmp_path, "2023-10-15")
    assert 0 == text.returncode, text.stderr
    assert "Revision:   2023-10-15 (retired since 2025-10-15)" in text.stdout
    assert "Warning: Klaviyo API revision 2023-10-15 is past its support window" in text.stderr
    data = json.loads(_status(tmp_path, "2023-10-15", "--json").stdout)
    assert ("2023-10-15", "retired") == (data["api_revision"], data["revision_support"]["state"])
    assert KEY not in text.stdout + text.stderr


def test_status_is_quiet_about_a_supported_revision(tmp_path: Path) -> None:
    text = _status(tmp_path, "2026-07-15")
    assert 0 == text.returncode, text.stderr
    assert "Revision:   2026-07-15 (stable, supported until 2028-07-15)" in text.stdout
    assert "Warning" not in text.stderr


def _validate(tmp_path: Path, revision: str, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "klaviyo-sync.yaml").write_text(f"api_key: {KEY}\nname: Shop\napi_revision: '{revision}'\nhub: hub.db\n")
    env = {k: v for k, v in os.environ.items() if k not in ("KLAVIYO_SYNC_CONFIG", "KLAVIYO_SYNC_HUB")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "engine", "validate", "--config", "klaviyo-sync.yaml", *extra],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_validate_warns_at_the_api_revision_line(tmp_path: Path) -> None:
    old = _validate(tmp_path, "2023-10-15", "--json")
    assert 0 == old.returncode, old.stderr
    [w021] = [w for w in json.loads(old.stdout)["warnings"] if w["code"] == "W021"]
    assert ("klaviyo-sync.yaml", 3, 1) == (Path(w021["file"]).name, w021["line"], w021["column"])
    assert "past its support window" in w021["message"]
    assert 1 == _validate(tmp_path, "2023-10-15", "--strict").returncode
    new = _validate(tmp_path, "2026-07-15", "--json")
    assert [] == [w for w in json.loads(new.stdout)["warnings"] if w["code"] == "W021"]
