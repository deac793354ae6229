"""Sandbox keyset pagination: every record once, in order, both directions, while records change."""

from __future__ import annotations

import httpx

KEY = "pk_paging_test"


def _walk(url: str, sort: str, size: int, between=None) -> list[str]:
    ids: list[str] = []
    next_url: str | None = f"{url}/api/profiles/?sort={sort}&page[size]={size}"
    headers = {"Authorization": f"Klaviyo-API-Key {KEY}", "revision": "2023-10-15", "accept": "application/json"}
    with httpx.Client(headers=headers) as http:
        while next_url:
            body = http.get(next_url).json()
            ids += [p["id"] for p in body["data"]]
            next_url = body["links"].get("next")
            if between:
                between(len(ids))
    return ids


def test_pages_cover_every_profile_once_in_both_directions(sandbox) -> None:
    """Ascending and descending pages list every profile exactly once, in opposite orders."""
    made = [sandbox.state.add_profile(email=f"p{i}@example.com") for i in range(237)]
    up = _walk(sandbox.url, "id", 50)
    down = _walk(sandbox.url, "-id", 50)
    assert sorted(made) == up
    assert list(reversed(up)) == down


def test_a_change_between_pages_neither_skips_nor_repeats_unchanged_profiles(sandbox) -> None:
    """A profile created while a client pages invalidates the sorted cache; keyset paging still
    returns every profile that existed before, once."""
    made = [sandbox.state.add_profile(email=f"q{i}@example.com") for i in range(120)]
    late: list[str] = []

    def add_one(seen: int) -> None:
        if seen == 40 and not late:
            late.append(sandbox.state.add_profile(email="late@example.com"))

    ids = _walk(sandbox.url, "id", 40, between=add_one)
    assert len(ids) == len(set(ids))
    assert set(made) <= set(ids)
    assert set(ids) <= set(made) | set(late)
