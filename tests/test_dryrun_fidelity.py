"""A dry run predicts the dispatch that follows it: the real sandbox over loopback, a real hub file,
at the default revision (create + patch) and at 2026-07-15 (profile-import, paths without slash)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_outbound_orders import _transaction
from test_outbound_profiles import _customer

from engine.flows._outbound_dryrun import PLACEHOLDER_PREFIX

GONE = "01JZZZZZZZZZZZZZZZZZZZZZZZ"  # a linked profile that no longer exists in Klaviyo
PROFILE_WRITES = ("create_profile", "create_or_update_profile", "update_profile")
READ_PATHS = re.compile(r"^/api/(profiles|lists)(/[^/]+)?(/relationships/profiles|/profiles)?/?$")


def _scenario(env: Any) -> dict[str, str]:
    """Customers covering every match decision; returns the names of the profiles set up in Klaviyo."""
    state = env.sandbox.state
    known = {
        "by_email": state.add_profile(email="person2@example.com", first_name="Old"),
        "by_phone": state.add_profile(phone_number="+12125550103"),
        "linked": state.add_profile(email="person4@example.com"),
        "split_email": state.add_profile(email="person6@example.com"),
        "split_phone": state.add_profile(phone_number="+12125550106", first_name="Other"),
        "new_phone": state.add_profile(email="person7@example.com", phone_number="+12125550199"),
    }
    for n in range(1, 8):
        _customer(env.hub, n)
    env.hub.set_link("Customer", 4, known["linked"])
    env.hub.set_link("Customer", 5, GONE)
    _transaction(env.hub, 1, email="person1@example.com", lines=1, number="SO-1")
    _transaction(env.hub, 6, email="person6@example.com", lines=1, number="SO-6")
    return known


def _outcomes(report: Any) -> dict[tuple[str, int], tuple[str, str | None]]:
    """Per record: outcome and the Klaviyo id (a profile the run creates is just "new")."""
    out = {}
    for r in report.results:
        kid = r.klaviyo_id
        if r.entity == "Customer" and r.outcome == "created":
            kid = "new"
        out[(r.entity, r.hub_id)] = (r.outcome, kid)
    return out


def _writes(report: Any) -> dict[str, int]:
    calls = report.summary.to_dict()["calls"]
    return {op: calls[op] for op in PROFILE_WRITES if calls.get(op)}


@pytest.mark.parametrize("revision", ["2023-10-15", "2026-07-15"])
def test_dry_run_predicts_the_dispatch_record_by_record(outbound_factory, revision) -> None:
    """Dry run, then the real dispatch: the same outcome and profile per record, the same profile
    writes, the same warnings; the dry run's reads are profile and list lookups only."""
    env = outbound_factory(revision=revision)
    known = _scenario(env)
    dry = env.dispatch(dry_run=True)
    assert [] == env.hub.errors.list() and 9 == env.hub.queue_length()
    assert sorted(known.values()) == sorted(p["id"] for p in env.all_profiles())

    real = env.dispatch()
    assert _outcomes(dry) == _outcomes(real)
    assert _writes(dry) == _writes(real)
    expected = {("Customer", 1): "created", ("Customer", 2): "linked", ("Customer", 3): "linked",
                ("Customer", 4): "updated", ("Customer", 5): "created", ("Customer", 6): "linked",
                ("Customer", 7): "linked", ("Transaction", 1): "created", ("Transaction", 2): "created"}
    assert expected == {k: v[0] for k, v in _outcomes(real).items()}
    assert known["by_email"] == env.hub.get_klaviyo_id("Customer", 2)
    assert known["by_phone"] == env.hub.get_klaviyo_id("Customer", 3)
    assert known["split_email"] == env.hub.get_klaviyo_id("Customer", 6)
    assert known["new_phone"] == env.hub.get_klaviyo_id("Customer", 7)

    dry_logs = sorted((e.hub_id, e.level, e.code, e.klaviyo_id) for r in dry.results for e in r.logs)
    real_logs = sorted((e.hub_id, e.level, e.code, e.klaviyo_id) for r in real.results for e in r.logs)
    assert dry_logs == real_logs == [(6, "warning", "O006", known["split_email"])]

    reads = [q for r in dry.results for q in r.requests if q.read_only]
    assert reads and all(READ_PATHS.match(q.path) for q in reads), [q.path for q in reads]
    assert all(q.path.endswith("/") == (revision == "2023-10-15") for q in reads)
    writes = [q for r in dry.results for q in r.requests if not q.read_only]
    assert not any("profile-import" in q.path for q in writes) or revision != "2023-10-15"
    assert all(q.method != "GET" for q in writes)
    created = [r for r in dry.results if r.entity == "Customer" and r.outcome == "created"]
    assert all(r.klaviyo_id.startswith(PLACEHOLDER_PREFIX) for r in created)


@pytest.mark.parametrize("revision", ["2023-10-15", "2026-07-15"])
def test_dry_run_sees_what_earlier_records_of_the_run_would_create(outbound_factory, revision) -> None:
    """A profile created earlier in the dry run is found by a later Customer with its phone number,
    exactly as the dispatch then links it instead of creating a duplicate."""
    env = outbound_factory(revision=revision)
    _customer(env.hub, 1)
    _customer(env.hub, 2, Phone="(212) 555-0101")
    dry = env.dispatch(dry_run=True)
    real = env.dispatch(concurrency=1)
    assert {("Customer", 1): ("created", "new"), ("Customer", 2): ("linked", dry.results[0].klaviyo_id)} == \
        _outcomes(dry)
    assert {("Customer", 1): ("created", "new"), ("Customer", 2): ("linked", real.results[0].klaviyo_id)} == \
        _outcomes(real)
    assert 1 == len(env.all_profiles())
