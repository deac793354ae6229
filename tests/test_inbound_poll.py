"""The poll's cursor over the real sandbox and hub: resumes, overlaps, de-duplicates, retries, survives faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine import catalog
from engine.flows._inbound_cursor import PollCursor

ADD = "Add Klaviyo Profile TO Hub"
UPDATE = "Update Klaviyo Profile TO Hub"
REMAP_FIRST_NAME = ('formula: get(existing, "FirstName", None)', "formula: first_name")


def _seed(state, n: int, prefix: str = "p") -> list[str]:
    return [state.add_profile(email=f"{prefix}{i}@example.com", first_name=f"N{i}") for i in range(n)]


def _assert_each_once(env, pids: list[str]) -> None:
    customers = env.customers()
    assert len(pids) == len(customers)
    assert sorted(pids) == sorted(env.hub.get_klaviyo_id("Customer", c["Id"]) for c in customers)


async def test_second_poll_without_changes_transfers_nothing(inbound):
    """A poll after a poll finds no changed profile: nothing is transferred twice for the same change."""
    _seed(inbound.sandbox.state, 5)
    first = await inbound.poll()
    second = await inbound.poll()
    assert {"created": 5} == first.summary.to_dict()["flows"][ADD]
    assert {} == second.summary.to_dict()["flows"]
    assert 5 == len(inbound.customers())


async def test_change_in_the_same_second_as_the_watermark_is_picked_up(inbound):
    """With every profile in one second, a later change in that same second still reaches the hub."""
    inbound.remap("update-profile-to-hub.yaml", *REMAP_FIRST_NAME)
    state = inbound.sandbox.state
    frozen = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    state.clock = lambda: frozen
    pids = _seed(state, 3)
    await inbound.poll()
    state.update_profile(pids[1], {"first_name": "Changed"})  # same `updated` second as before
    second = await inbound.poll()
    assert {"updated": 1} == second.summary.to_dict()["flows"][UPDATE]
    names = {inbound.hub.get_klaviyo_id("Customer", c["Id"]): c["FirstName"] for c in inbound.customers()}
    assert {pids[0]: "N0", pids[1]: "Changed", pids[2]: "N2"} == names


async def test_profile_changed_during_a_poll_is_picked_up_by_the_next(inbound):
    """A profile changed after its page was read is transferred by the next poll."""
    inbound.remap("update-profile-to-hub.yaml", *REMAP_FIRST_NAME)
    state = inbound.sandbox.state
    pids = _seed(state, 25)
    seen: list[object] = []

    def change_first_profile(result: object) -> None:
        seen.append(result)
        if len(seen) == 25:  # the last page is already read: the change can only reach the next poll
            state.update_profile(pids[0], {"first_name": "DuringPoll"})

    await inbound.poll(page_size=10, on_profile=change_first_profile)
    second = await inbound.poll(page_size=10)
    assert {"updated": 1} == second.summary.to_dict()["flows"][UPDATE]
    customer = inbound.hub.get_customer(inbound.hub.get_hub_id("Customer", pids[0]))
    assert "DuringPoll" == customer["FirstName"]


async def test_cursor_is_saved_after_each_page(inbound):
    """Each page and the cursor's advance commit together: a profile is reported once it is
    stored, and the saved watermark then already covers its page (and no later page)."""
    state = inbound.sandbox.state
    _seed(state, 12)

    def look(result: object) -> None:
        assert inbound.hub.get_hub_id("Customer", result.profile_id) is not None  # stored when reported
        saved.append(PollCursor.load(inbound.hub).to_dict())

    saved: list[dict[str, object]] = []
    await inbound.poll(page_size=5, on_profile=look)
    assert 12 == len(saved)
    assert None is not saved[0]["watermark"]  # the first page's commit saved the cursor with it
    assert [saved[0]] * 5 == saved[:5]  # one save per page, not per profile
    assert saved[4] != saved[5] != saved[10]  # each page moves it on
    assert saved[5:10] == [saved[5]] * 5


async def test_stop_request_finishes_profile_saves_cursor_and_next_poll_resumes(inbound):
    """A stop after some profiles saves the cursor there; the next poll transfers only the rest."""
    pids = _seed(inbound.sandbox.state, 30)
    flow = await inbound.poll_stopped_after(7, page_size=10)
    assert (True, 7) == (flow.stopped, len(inbound.customers()))
    rest = await inbound.poll(page_size=10)
    assert {"created": 23} == rest.summary.to_dict()["flows"][ADD]
    _assert_each_once(inbound, pids)


async def test_429s_and_5xx_are_survived(inbound_factory):
    """A poll through rate limiting and 503s transfers every profile once.

    The profiles are spread over the last minutes, so the poll reads four ranges at once and
    certainly sends more than the sandbox's burst of two (one chain alone might not)."""
    from tests.test_inbound_ranges import _seed_spread

    env = inbound_factory(rate_limits=True, rate_window_scale=0.02, tiers={"L": {"burst": 2, "steady": 20}},
                          fault_5xx=0.2, seed=3)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=610)
    pids = _seed_spread(env.sandbox.state, 60, step=10, start=start)
    flow = await env.poll(page_size=5, parallel=4,
                          client_options={"tier_overrides": {"L": {"burst": 50, "steady": 1000}}, "max_attempts": 12})
    assert None is flow.error
    _assert_each_once(env, pids)
    counters = env.sandbox.options.counters
    assert counters.get("429", 0) > 0 and counters.get("5xx", 0) > 0, counters


async def test_klaviyo_unavailable_ends_poll_and_next_poll_resumes(inbound_factory):
    """A page Klaviyo will not give ends the poll with the error logged; the next poll gets the rest."""
    env = inbound_factory()
    pids = _seed(env.sandbox.state, 30)  # 6 pages: the outage hits a page not yet prefetched
    handled = [0]

    def outage_after_first_page(_result: object) -> None:
        handled[0] += 1
        if handled[0] == 5:
            env.sandbox.options.fault_5xx = 1.0

    flow = await env.poll(page_size=5, on_profile=outage_after_first_page, client_options={"max_attempts": 2})
    assert flow.error is not None and flow.error.message.startswith(catalog.ERROR_CALLING_KLAVIYO)
    [entry] = env.errors()
    assert ("Poll Klaviyo Profiles TO Hub", "K001") == (entry["Flow"], entry["Code"])
    before = len(env.customers())
    env.sandbox.options.fault_5xx = 0.0
    await env.poll(page_size=5)
    assert before < 30
    _assert_each_once(env, pids)


async def test_failed_manual_sync_is_retried_by_the_next_poll(inbound_factory):
    """A Manual Sync that fails because Klaviyo is unavailable is logged and retried by the next poll."""
    env = inbound_factory()
    pid = env.sandbox.state.add_profile(email="later@example.com")
    env.sandbox.options.fault_5xx = 1.0
    _, result = await env.sync(pid, client_options={"max_attempts": 2})
    assert ("failed", True) == (result.outcome, result.retry)
    assert [ADD] == [e["Flow"] for e in env.errors()]
    assert [pid] == PollCursor.load(env.hub).retry
    env.sandbox.options.fault_5xx = 0.0
    await env.poll(since=datetime(2100, 1, 1, tzinfo=UTC))  # nothing new: only the retry list
    _assert_each_once(env, [pid])
    assert [] == PollCursor.load(env.hub).retry


def _settings_file(tmp_path: Path, url: str, hub: Path) -> Path:
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {url}\napi_key: pk_test_0123456789abcdef\nhub: {hub}\n", encoding="utf-8")
    return path


def _count_customers(hub_path: Path) -> int:
    import sqlite3

    if not hub_path.exists():
        return 0
    conn = sqlite3.connect(str(hub_path), timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM customers").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.parametrize("spread", [False, True], ids=["one-second", "parallel-ranges"])
async def test_poll_killed_midway_and_rerun_has_every_profile_once(inbound_factory, tmp_path, spread):
    """`klaviyo-sync poll` killed (SIGKILL) in the middle, then run again: every profile exactly once.

    With the profiles' `updated` ten seconds apart up to now, the poll reads parallel ranges
    after its first page, so the kill leaves several ranges half read; the rerun resumes each
    where its last page was saved."""
    env = inbound_factory(latency_ms=40)
    if spread:
        from tests.test_inbound_ranges import _seed_spread

        start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=4510)
        pids = _seed_spread(env.sandbox.state, 450, step=10, start=start)
    else:
        pids = _seed(env.sandbox.state, 450)
    hub_path = tmp_path / "killed.db"
    config = _settings_file(tmp_path, env.sandbox.url, hub_path)
    cmd = [sys.executable, "-m", "engine", "poll", "--config", str(config), "--json"]
    # this checkout's engine, whatever the environment has installed
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(tmp_path),
                          env=env) as proc:
        deadline = time.monotonic() + 60
        while _count_customers(hub_path) < 150 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    killed_at = _count_customers(hub_path)
    assert 0 < killed_at < 450
    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=str(tmp_path), timeout=120, env=env)
    assert 0 == rerun.returncode, rerun.stderr
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["flows"][ADD]["created"] == 450 - killed_at
    if spread:
        assert any(n.startswith("resuming the") for n in summary["notes"]), summary["notes"]
    from engine.hub import SqliteHub

    with SqliteHub(hub_path) as hub:
        customers = list(hub.iter_customers())
        assert sorted(pids) == sorted(hub.get_klaviyo_id("Customer", c["Id"]) for c in customers)
    assert os.path.exists(hub_path)
