"""The sandbox's identifier indexes: lookups and clashes stay right through every kind of write."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SandboxApiError
from engine.sandbox import SandboxState
from engine.sandbox._filters import Condition


def _ids(state: SandboxState, *conds: Condition) -> list[str]:
    return sorted(p["id"] for p in state.query_profiles(list(conds)))


def test_changed_email_frees_the_old_one_and_finds_the_new() -> None:
    state = SandboxState(seed=1)
    pid = state.add_profile(email="old@example.com")
    state.update_profile(pid, {"email": "New@Example.com"})
    assert [] == _ids(state, Condition("equals", "email", "old@example.com"))
    assert [pid] == _ids(state, Condition("equals", "email", "new@example.com"))
    other = state.create_profile({"email": "old@example.com"})["id"]  # free again: no 409
    assert [other] == _ids(state, Condition("equals", "email", "old@example.com"))


def test_cleared_phone_is_no_longer_a_clash() -> None:
    state = SandboxState(seed=1)
    pid = state.add_profile(email="a@example.com", phone_number="+15005550001")
    with pytest.raises(SandboxApiError) as err:
        state.create_profile({"email": "b@example.com", "phone_number": "+15005550001"})
    assert (409, pid) == (err.value.status, err.value.meta["duplicate_profile_id"])
    state.update_profile(pid, {"phone_number": None})
    assert state.create_profile({"email": "b@example.com", "phone_number": "+15005550001"})["id"] != pid


def test_any_filter_and_id_filter_use_the_index() -> None:
    state = SandboxState(seed=1)
    a = state.add_profile(email="a@example.com")
    b = state.add_profile(email="b@example.com", external_id="X-2")
    state.add_profile(email="c@example.com")
    assert sorted([a, b]) == _ids(state, Condition("any", "email", ["a@example.com", "b@example.com", "zz@example.com"]))
    assert [b] == _ids(state, Condition("equals", "external_id", "X-2"), Condition("any", "email", ["a@example.com", "b@example.com"]))
    assert [a] == _ids(state, Condition("any", "id", [a, "missing"]))


def test_two_holders_of_one_email_are_both_found_and_the_second_takes_over() -> None:
    state = SandboxState(seed=1)
    first = state.add_profile(email="twin@example.com")
    second = state.add_profile(phone_number="+15005550002")
    state.profiles[second]["attributes"]["email"] = "twin@example.com"  # Klaviyo can hold this
    state.reindex()
    assert sorted([first, second]) == _ids(state, Condition("equals", "email", "twin@example.com"))
    assert first == state._index("email", "TWIN@example.com")
    state.update_profile(first, {"email": "solo@example.com"})
    assert second == state._index("email", "twin@example.com")


def test_chosen_numeric_id_is_indexed_under_that_id() -> None:
    state = SandboxState(seed=1)
    state.add_profile("44552", email="n@example.com")
    assert ["44552"] == _ids(state, Condition("equals", "email", "n@example.com"))
    with pytest.raises(SandboxApiError) as err:
        state.create_profile({"email": "n@example.com"})
    assert "44552" == err.value.meta["duplicate_profile_id"]


def test_saved_and_loaded_state_keeps_its_indexes(tmp_path: Path) -> None:
    state = SandboxState(seed=1)
    pid = state.add_profile(email="keep@example.com", anonymous_id="anon-1")
    state.record_event(state.profiles[pid], "Placed Order", {}, None, 1, "T-1")
    state.save(tmp_path / "s.json")
    back = SandboxState(seed=2)
    back.load(tmp_path / "s.json")
    assert pid == back._index("email", "keep@example.com") == back._index("anonymous_id", "anon-1")
    assert back.metric_for("Placed Order")["id"] == state.metric_for("Placed Order")["id"]
    assert 1 == len(back.metrics)


def test_profile_import_clash_names_the_emails_profile_whatever_the_ids() -> None:
    """Email on one profile, phone on another: the 409 names the email's profile."""
    state = SandboxState(seed=1)
    phone_holder = state.add_profile("00000000000000000000000001", phone_number="+15005550003")
    email_holder = state.add_profile("ZZZZZZZZZZZZZZZZZZZZZZZZZZ", email="e@example.com")
    with pytest.raises(SandboxApiError) as err:
        state.import_profile({"email": "e@example.com", "phone_number": "+15005550003"})
    assert (409, email_holder) == (err.value.status, err.value.meta["duplicate_profile_id"])
    assert phone_holder != email_holder
