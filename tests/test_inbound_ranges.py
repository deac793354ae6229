"""The poll's parallel ranges of `updated` times, over the real sandbox and hub: each profile once,
each range resumed where it stopped, the watermark only past what every range handled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine import catalog
from engine.flows._inbound_cursor import PollCursor, PollRange, format_time

ADD = "Add Klaviyo Profile TO Hub"
UPDATE = "Update Klaviyo Profile TO Hub"
START = datetime(2024, 5, 1, tzinfo=UTC)


def _seed_spread(state, n: int, step: float = 60.0, prefix: str = "r", start: datetime = START) -> list[str]:
    """n profiles, the i-th updated at start + i * step seconds."""
    now = [start]
    state.clock = lambda: now[0]
    pids = []
    for i in range(n):
        now[0] = start + timedelta(seconds=i * step)
        pids.append(state.add_profile(email=f"{prefix}{i}@example.com", first_name=f"N{i}"))
    state.clock = lambda: datetime.now(UTC).replace(microsecond=0)
    return pids


def _assert_each_once(env, pids: list[str]) -> None:
    linked = [env.hub.get_klaviyo_id("Customer", c["Id"]) for c in env.customers()]
    assert sorted(pids) == sorted(linked)


async def test_profiles_spread_over_time_are_read_in_parallel_ranges_each_once(inbound):
    """Profiles a minute apart: the poll splits the timeline into ranges read at once, transfers
    every profile once and ends with no ranges and the watermark at the newest profile."""
    pids = _seed_spread(inbound.sandbox.state, 120)
    flow = await inbound.poll(page_size=5, parallel=4)
    assert None is flow.error
    assert {"created": 120} == flow.summary.to_dict()["flows"][ADD]
    assert flow.ranges_read > 1 and 4 == flow.most_at_once
    _assert_each_once(inbound, pids)
    cursor = PollCursor.load(inbound.hub)
    assert ([], START + timedelta(seconds=119 * 60)) == (cursor.ranges, cursor.watermark)
    again = await inbound.poll(page_size=5, parallel=4)
    assert {} == again.summary.to_dict()["flows"]


async def test_a_stopped_parallel_poll_saves_each_range_and_the_next_resumes_them(inbound):
    """Stopped midway, the cursor keeps each unfinished range at its own position and the
    watermark at the lowest; the next poll resumes the ranges and transfers only the rest."""
    pids = _seed_spread(inbound.sandbox.state, 100)
    flow = await inbound.poll_stopped_after(37, page_size=5, parallel=4)
    assert (True, 37) == (flow.stopped, len(inbound.customers()))
    cursor = PollCursor.load(inbound.hub)
    assert len(cursor.ranges) > 1
    positions = [r.at if r.at is not None else r.lo for r in cursor.ranges]
    assert cursor.watermark == min(p for p in positions if p is not None)
    # a range never holds a second of another: the saved ranges are disjoint
    bounds = sorted((r.lo or START - timedelta(days=1), r.hi or START + timedelta(days=1)) for r in cursor.ranges)
    assert all(hi - timedelta(seconds=1) <= lo2 for (_lo, hi), (lo2, _hi) in zip(bounds, bounds[1:], strict=False))
    rest = await inbound.poll(page_size=5, parallel=4)
    assert {"created": 63} == rest.summary.to_dict()["flows"][ADD]
    assert any("resuming the" in n for n in rest.summary.notes)
    _assert_each_once(inbound, pids)
    assert [] == PollCursor.load(inbound.hub).ranges


async def test_klaviyo_unavailable_during_a_parallel_poll_is_one_error_and_the_next_poll_resumes(inbound_factory):
    """An outage while several ranges are read ends the poll with one error logged; the next poll
    resumes every range and has every profile once."""
    env = inbound_factory()
    pids = _seed_spread(env.sandbox.state, 80)
    handled = [0]

    def outage(_result: object) -> None:
        handled[0] += 1
        if handled[0] == 12:
            env.sandbox.options.fault_5xx = 1.0

    flow = await env.poll(page_size=4, parallel=4, on_profile=outage, client_options={"max_attempts": 2})
    assert flow.error is not None and flow.error.message.startswith(catalog.ERROR_CALLING_KLAVIYO)
    assert 1 == len(env.errors())
    assert len(env.customers()) < 80
    env.sandbox.options.fault_5xx = 0.0
    await env.poll(page_size=4, parallel=4)
    _assert_each_once(env, pids)


async def test_a_profile_changed_during_a_parallel_poll_ends_with_its_newest_data(inbound):
    """A profile of an early range changed while the ranges are read: the hub ends with the change
    (this poll or the next), never with the older data."""
    inbound.remap("update-profile-to-hub.yaml", 'formula: get(existing, "FirstName", None)', "formula: first_name")
    state = inbound.sandbox.state
    pids = _seed_spread(state, 60)
    done = [0]

    def change_first(_result: object) -> None:
        done[0] += 1
        if done[0] == 3:
            state.update_profile(pids[1], {"first_name": "Changed"})

    await inbound.poll(page_size=3, parallel=3, on_profile=change_first)
    await inbound.poll(page_size=3, parallel=3)
    customer = inbound.hub.get_customer(inbound.hub.get_hub_id("Customer", pids[1]))
    assert "Changed" == customer["FirstName"]
    _assert_each_once(inbound, pids)


def test_a_split_leaves_disjoint_whole_second_ranges_that_cover_the_rest():
    """Splitting keeps what was fetched in the range and divides the rest into ranges whose
    filters (greater-than / less-than, the only operators Klaviyo allows on updated) share no second."""
    cursor = PollCursor()
    rng = PollRange(lo=START)
    cursor.ranges = [rng]
    rng.fetched = START + timedelta(seconds=10, milliseconds=500)
    now = START + timedelta(seconds=100)
    new = cursor.split(rng, 4, now)
    assert 3 == len(new) and cursor.ranges == [rng, *new]
    assert new[-1].hi is None  # the newest range stays open
    seconds = range(0, 200)
    owners = [[i for i, r in enumerate(cursor.ranges) if r.holds(START + timedelta(seconds=s))] for s in seconds]
    assert all(len(o) == 1 for o in owners[1:])  # every second after START in exactly one range
    assert [0] * 10 == [o[0] for o in owners[1:11]]  # what was fetched stays in the first
    assert f"greater-than(updated,{format_time(START)}),less-than(updated,{format_time(rng.hi)})" == rng.filter(2.0)
    assert f"greater-than(updated,{format_time(new[0].lo)}),less-than(updated,{format_time(new[0].hi)})" \
        == new[0].filter(2.0)
    rng.at = START + timedelta(seconds=30)
    assert rng.filter(2.0).startswith(f"greater-than(updated,{format_time(START + timedelta(seconds=28))})")
    assert [] == cursor.split(PollRange(lo=now - timedelta(seconds=1)), 4, now)  # nothing left to divide
