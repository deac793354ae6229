"""Sandbox keyset pagination: every record once, in order, both directions, while records change."""

from __future__ import annotations

from datetime import UTC

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


def test_updated_ranges_page_like_a_filter_over_every_profile(sandbox) -> None:
    """greater-than/less-than on `updated`, sorted by `updated` either way: exactly the profiles strictly
    inside the range, in order, each once (answered from the one sorted index the poll's ranges share)."""
    from datetime import datetime, timedelta

    start = datetime(2024, 5, 1, tzinfo=UTC)
    times = [start + timedelta(seconds=i // 3) for i in range(90)]  # three profiles a second
    now = [start]
    sandbox.state.clock = lambda: now[0]
    made = []
    for i, t in enumerate(times):
        now[0] = t
        made.append(sandbox.state.add_profile(email=f"u{i}@example.com"))
    when = dict(zip(made, times, strict=True))
    lo, hi = "2024-05-01T00:00:05Z", "2024-05-01T00:00:20Z"
    flt = f"greater-than(updated,{lo}),less-than(updated,{hi})"
    inside = sorted((p for p in made if start + timedelta(seconds=5) < when[p] < start + timedelta(seconds=20)),
                    key=lambda p: (when[p], p))
    assert 14 * 3 == len(inside)
    up = _walk(sandbox.url, f"updated&filter={flt}", 10)
    down = _walk(sandbox.url, f"-updated&filter={flt}", 10)
    assert inside == up
    assert list(reversed(inside)) == down
    assert [] == _walk(sandbox.url, f"updated&filter=greater-than(updated,{hi}),less-than(updated,{lo})", 10)
    assert made[-3:] == _walk(sandbox.url, "updated&filter=greater-than(updated,2024-05-01T00:00:28Z)", 2)
