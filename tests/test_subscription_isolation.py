"""Many subscriptions in one PostgreSQL hub: no command of one subscription sees or changes another's data.

Two settings files name the same database and different subscriptions; every command runs
as a real ``klaviyo-sync`` process against a real sandbox over loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _hub_fixtures import POSTGRES_URL, store_legacy_email, subscription_name
from _sandbox_fixtures import SandboxHandle

from engine.hub import PostgresHub
from engine.hub._postgres import drop_subscription

KEY = "pk_0123456789abcdef0123456789abcdef01"


@pytest.fixture
def two(tmp_path: Path, sandbox_factory: Callable[..., SandboxHandle]) -> Iterator[dict[str, Any]]:
    """Settings files ``a.yaml`` and ``b.yaml``: one sandbox, one database, two subscriptions."""
    sandbox = sandbox_factory()
    for list_name in ("Sms Subscribers", "Preview List"):
        sandbox.state.add_list(list_name)
    names = {"a": subscription_name("a"), "b": subscription_name("b")}
    for side, name in names.items():
        (tmp_path / f"{side}.yaml").write_text(
            f"api_url: {sandbox.url}\napi_key: {KEY}\nhub: {POSTGRES_URL}\nsubscription: {name}\n"
            "outbound_triggers: {customer: true, transaction: true}\n", encoding="utf-8")
        (tmp_path / f"{side}.jsonl").write_text("".join(
            json.dumps({"EmailAddress": f"{side}{n}@example.com", "CustomerNumber": f"{side.upper()}{n}"}) + "\n"
            for n in range(1, 4)), encoding="utf-8")
    yield {"dir": tmp_path, "sandbox": sandbox, "names": names}
    for name in names.values():
        drop_subscription(POSTGRES_URL, name)


def cli(env: dict[str, Any], side: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``klaviyo-sync ARGS`` as a process with subscription ``side``'s settings file."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO")}
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, timeout=120,
                          env={**base, "KLAVIYO_SYNC_CONFIG": str(env["dir"] / f"{side}.yaml")})


def emails(env: dict[str, Any], side: str) -> list[str]:
    with PostgresHub(POSTGRES_URL, subscription=env["names"][side]) as hub:
        return [c["EmailAddress"] for c in hub.iter_customers()]


def test_no_command_of_one_subscription_sees_or_changes_another(two: dict[str, Any]) -> None:
    """import, show, status, export, errors, dispatch and poll of subscription a leave b as it was, and see only a."""
    env = two
    assert 0 == cli(env, "a", "hub", "import", "customers", str(env["dir"] / "a.jsonl")).returncode
    assert 0 == cli(env, "b", "hub", "import", "customers", str(env["dir"] / "b.jsonl")).returncode
    assert ["a1@example.com", "a2@example.com", "a3@example.com"] == emails(env, "a")
    assert ["b1@example.com", "b2@example.com", "b3@example.com"] == emails(env, "b")

    shown = json.loads(cli(env, "b", "hub", "show", "customer", "1", "--json").stdout)
    assert "b1@example.com" == shown["EmailAddress"]  # the same Id in a holds a1
    status = json.loads(cli(env, "a", "status", "--json").stdout)
    assert (3, 3) == (status["counts"]["customers"], status["counts"]["queued_changes"])
    assert env["names"]["a"] in status["hub"] and "postgresql://" in status["hub"]

    exported = cli(env, "a", "hub", "export", "customers").stdout
    assert {"a1@example.com", "a2@example.com", "a3@example.com"} == {
        json.loads(line)["EmailAddress"] for line in exported.splitlines()}

    # a Customer Klaviyo refuses: its error is logged in a's error log only
    with PostgresHub(POSTGRES_URL, subscription=env["names"]["a"]) as hub_a:
        store_legacy_email(hub_a, 3, "not-an-email")
    cli(env, "a", "dispatch", "--json")
    profiles = {p["attributes"]["email"] for p in env["sandbox"].state.profiles.values()}
    assert {"a1@example.com", "a2@example.com"} == profiles
    b_status = json.loads(cli(env, "b", "status", "--json").stdout)
    assert (3, 3, 0) == (b_status["counts"]["customers"], b_status["counts"]["queued_changes"],
                         b_status["counts"]["links"])
    a_status = json.loads(cli(env, "a", "status", "--json").stdout)
    assert (0, 2) == (a_status["counts"]["queued_changes"], a_status["counts"]["links"])
    assert [] == json.loads(cli(env, "b", "errors", "--json").stdout)
    assert [3] == [e["HubId"] for e in json.loads(cli(env, "a", "errors", "--json").stdout)]

    # a poll of b brings a's profiles (they are in the one Klaviyo account) into b only
    polled = cli(env, "b", "poll")
    assert 0 == polled.returncode, polled.stderr
    assert {"b1@example.com", "b2@example.com", "b3@example.com", "a1@example.com", "a2@example.com"} == set(
        emails(env, "b"))
    assert ["a1@example.com", "a2@example.com", "not-an-email"] == emails(env, "a")
