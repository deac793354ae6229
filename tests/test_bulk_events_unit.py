"""The bulk event batcher with httpx.MockTransport: how events are split into jobs and grouped by profile."""

from __future__ import annotations

import asyncio
import json

import httpx

from engine.flows._bulk_events import MAX_EVENTS, BulkEventClient
from engine.klaviyo import KlaviyoClient


def _jobs(n: int, *, profiles: int = 3, text: str = "", **kw: object) -> list[dict[str, object]]:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert "/api/event-bulk-create-jobs" == request.url.path
        sent.append(json.loads(request.content))
        return httpx.Response(202)

    async def main() -> list[str]:
        client = KlaviyoClient(base_url="https://a.klaviyo.com", api_key="pk_unit_bulk_0001", revision="2024-10-15",
                               transport=httpx.MockTransport(handler))
        async with client:
            bulk = BulkEventClient(client, **kw)  # type: ignore[arg-type]
            ids = await asyncio.gather(*(bulk.create_event("Placed Order", f"01P{i % profiles:023d}",
                                                           {"n": i, "text": text}, unique_id=f"u{i}")
                                         for i in range(n)))
            await bulk.flush()
            return list(ids)

    assert [f"u{i}" for i in range(n)] == asyncio.run(main())
    return sent


def _events(job: dict[str, object]) -> list[dict[str, object]]:
    entries = job["data"]["attributes"]["events-bulk-create"]["data"]  # type: ignore[index]
    return [ev for entry in entries for ev in entry["attributes"]["events"]["data"]]


def test_a_job_holds_at_most_1000_events_grouped_by_profile() -> None:
    jobs = _jobs(2500)
    assert [1000, 1000, 500] == [len(_events(j)) for j in jobs]
    first = jobs[0]["data"]["attributes"]["events-bulk-create"]["data"]  # type: ignore[index]
    assert 3 == len(first)  # one entry per profile, its events together
    assert {"type": "profile", "id": "01P" + "0" * 23, "attributes": {}} == first[0]["attributes"]["profile"]["data"]
    assert MAX_EVENTS == 1000


def test_a_job_stays_under_5_mb() -> None:
    jobs = _jobs(60, text="x" * 100_000)  # 60 events of 100 KB: 6 MB
    sizes = [len(json.dumps(j).encode()) for j in jobs]
    assert 2 == len(jobs) and all(s < 5 * 1024 * 1024 for s in sizes), sizes
    assert 60 == sum(len(_events(j)) for j in jobs)
