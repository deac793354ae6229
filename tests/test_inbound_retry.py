"""The poll's retry list over the real sandbox and hub file: a profile whose write failed is fetched
and stored by a later poll, and leaves the list only once stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from _hub_fixtures import OtherWriter
from _inbound_fixtures import InboundEnv

from engine.collection import DEFAULT_COLLECTIONS_DIR
from engine.errors import HubLockedError
from engine.flows._inbound_cursor import PollCursor, fingerprint

UPDATE = "Update Klaviyo Profile TO Hub"
REMAP_FIRST_NAME = ('formula: get(existing, "FirstName", None)', "formula: first_name")


@pytest.fixture
def env(sandbox_factory, hub_factory, tmp_path: Path) -> InboundEnv:
    """A sandbox, a hub whose writes wait at most 0.3 s for a lock, and collections that copy FirstName."""
    store = hub_factory(outbound_triggers={"Customer", "Transaction"}, busy_timeout=0.3)
    made = InboundEnv(sandbox_factory(), store, DEFAULT_COLLECTIONS_DIR, tmp_path)
    made.remap("update-profile-to-hub.yaml", *REMAP_FIRST_NAME)
    return made


def _names(env: InboundEnv) -> dict[str, str]:
    return {env.hub.get_klaviyo_id("Customer", c["Id"]): c["FirstName"] for c in env.customers()}


def _seed(env: InboundEnv, n: int) -> list[str]:
    return [env.sandbox.state.add_profile(email=f"r{i}@example.com", first_name=f"N{i}") for i in range(n)]


def test_a_failed_change_never_joins_the_seen_set() -> None:
    """A failed transfer goes on the retry list and out of the seen set; a stored one the other way round."""
    cursor = PollCursor()
    mark = ("2024-05-01T10:00:00+00:00", "abc")
    cursor.handled("p1", mark)
    cursor.handled("p1", ("2024-05-01T10:00:05+00:00", "def"), failed=True)
    assert ({}, ["p1"]) == (cursor.seen, cursor.retry)
    assert cursor.already_handled("p1", ("2024-05-01T10:00:05+00:00", "def")) is False
    cursor.handled("p1", ("2024-05-01T10:00:05+00:00", "def"), advance=False)
    assert ({"p1": ["2024-05-01T10:00:05+00:00", "def"]}, []) == (cursor.seen, cursor.retry)


async def test_a_write_the_hub_refused_is_stored_by_the_next_poll(env: InboundEnv) -> None:
    """A profile whose hub write failed goes on the retry list; the next poll stores it and empties the list."""
    pids = _seed(env, 3)
    await env.poll()
    env.sandbox.state.update_profile(pids[1], {"first_name": "Second"})
    other = OtherWriter(env.hub)  # the hub refuses this one write (as a full disk would)
    other.refuse("customers", "NEW.first_name = 'Second'", "disk I/O error")
    failed = await env.poll()
    assert ["failed"] == list(failed.summary.to_dict()["flows"][UPDATE])
    assert [pids[1]] == PollCursor.load(env.hub).retry
    assert "N1" == _names(env)[pids[1]]
    other.allow()
    other.close()
    again = await env.poll()
    assert None is again.error
    assert {pids[0]: "N0", pids[1]: "Second", pids[2]: "N2"} == _names(env)
    assert [] == PollCursor.load(env.hub).retry


async def test_a_retried_profile_is_stored_even_if_its_change_was_recorded_as_seen(env: InboundEnv) -> None:
    """A cursor that lists a failed change both as seen and for retry (as older releases left it) still stores it."""
    pids = _seed(env, 2)
    await env.poll()
    env.sandbox.state.update_profile(pids[0], {"first_name": "Later"})
    async with env.client() as kl:
        resource = await kl.get_profile(pids[0], additional_fields=["subscriptions"])
    cursor = PollCursor.load(env.hub)
    cursor.seen[pids[0]] = list(fingerprint(resource))
    cursor.retry.append(pids[0])
    cursor.save(env.hub)
    await env.poll()
    assert "Later" == _names(env)[pids[0]]
    assert [] == PollCursor.load(env.hub).retry


async def test_hub_locked_during_a_poll_stops_it_and_the_next_poll_stores_the_change(env: InboundEnv) -> None:
    """With the hub locked by another connection mid-poll the poll stops with H007; once free, every change arrives."""
    pids = _seed(env, 4)
    await env.poll()
    for n, pid in enumerate(pids):
        env.sandbox.state.update_profile(pid, {"first_name": f"New{n}"})
    other = OtherWriter(env.hub)
    handled: list[object] = []

    def lock_after_first_page(result: object) -> None:  # told once the page of 2 is committed
        handled.append(result)
        if len(handled) == 1:
            other.lock()

    locked = await env.poll(page_size=2, on_profile=lock_after_first_page)
    assert isinstance(locked.error, HubLockedError)
    assert env.hub.locked_error().message == locked.error.message
    assert 2 == len(handled)  # the first page; nothing of the second
    assert {pids[0]: "New0", pids[1]: "New1", pids[2]: "N2", pids[3]: "N3"} == _names(env)
    other.unlock()
    other.close()
    again = await env.poll(page_size=2)
    assert None is again.error
    assert {pid: f"New{n}" for n, pid in enumerate(pids)} == _names(env)
    assert [] == PollCursor.load(env.hub).retry


async def test_hub_locked_when_a_poll_starts_ends_it_cleanly_with_the_retry_list_kept(env: InboundEnv) -> None:
    """A hub locked before the poll begins: H007, nothing written, the retry list kept; later it is worked off."""
    pids = _seed(env, 2)
    await env.poll()
    env.sandbox.state.update_profile(pids[1], {"first_name": "Queued"})
    cursor = PollCursor.load(env.hub)
    cursor.retry.append(pids[1])
    cursor.save(env.hub)
    other = OtherWriter(env.hub)
    other.lock()
    locked = await env.poll()
    assert ("H007", 1) == (locked.error.code if locked.error else None, locked.summary.errors)
    assert [pids[1]] == PollCursor.load(env.hub).retry
    other.unlock()
    other.close()
    await env.poll()
    assert "Queued" == _names(env)[pids[1]]
    assert [] == PollCursor.load(env.hub).retry


async def test_a_page_the_hub_cannot_commit_is_stored_whole_by_the_next_poll(env: InboundEnv) -> None:
    """A page's profiles and the cursor's advance commit together: when the hub refuses the cursor's
    save (as a full disk would), nothing of that page is stored, the poll stops with the error, the
    cursor stays where it was saved, and the next poll stores each profile once."""
    pids = _seed(env, 6)
    await env.poll(page_size=3)
    before = PollCursor.load(env.hub).to_dict()
    for n, pid in enumerate(pids):
        env.sandbox.state.update_profile(pid, {"first_name": f"New{n}"})
    other = OtherWriter(env.hub)
    other.refuse("sync_state", "NEW.key LIKE '%profiles%' AND NEW.value != OLD.value", "database or disk is full")
    told: list[object] = []
    stopped = await env.poll(page_size=3, on_profile=told.append)
    assert stopped.error is not None and "H000" == stopped.error.code
    assert (f"the hub could not store a page of 3 profiles: {other.error_name}: database or disk is full"
            == stopped.error.message)
    assert ([], 1) == (told, stopped.summary.errors)  # nobody is told of a profile that was not stored
    assert {} == stopped.summary.to_dict()["flows"]
    assert [f"N{n}" for n in range(6)] == [_names(env)[pid] for pid in pids]  # nothing of the page
    assert before == PollCursor.load(env.hub).to_dict()
    other.allow()
    other.close()
    again = await env.poll(page_size=3)
    assert None is again.error
    assert {"updated": 6} == again.summary.to_dict()["flows"][UPDATE]
    assert [f"New{n}" for n in range(6)] == [_names(env)[pid] for pid in pids]
    assert 6 == len(env.customers())


async def test_a_cursor_the_hub_cannot_save_stops_the_poll_with_an_error(env: InboundEnv) -> None:
    """The hub refusing every save of the cursor: the poll stops with H000 and the reason, no traceback."""
    pids = _seed(env, 2)
    await env.poll()
    other = OtherWriter(env.hub)
    other.refuse("sync_state", "NEW.key LIKE '%profiles%'", "disk I/O error")
    env.sandbox.state.update_profile(pids[0], {"first_name": "Later"})
    stopped = await env.poll()
    assert stopped.error is not None and "H000" == stopped.error.code
    assert f"the hub could not save the poll's cursor: {other.error_name}: disk I/O error" == stopped.error.message
    assert "N0" == _names(env)[pids[0]]
    other.allow()
    other.close()
    assert "Later" == (await env.poll(), _names(env))[1][pids[0]]
