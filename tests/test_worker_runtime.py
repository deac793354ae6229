"""A worker process's subscriptions: opened for a job, at most ``max_open`` kept, read by the scheduler
in one query; against a real sandbox and real hubs (SQLite files and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
from _hub_fixtures import POSTGRES_URL, subscription_name

from engine.hub import PostgresHub
from engine.hub._postgres import drop_subscription, queues_and_state
from engine.sandbox import SandboxHandle
from engine.worker import WorkerOptions, load_subscriptions
from engine.worker._runtime import WorkerRuntime

KEY = "pk_worker_runtime_0000001"


def _folder(tmp_path: Path, url: str, names: list[str]) -> Path:
    folder = tmp_path / "subs"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.yaml").write_text(
            f"api_url: {url}\napi_key: {KEY}\nhub: {tmp_path / (name + '.db')}\nsubscription: {name}\n"
            "outbound_triggers: {customer: true}\n", encoding="utf-8")
    return folder


async def test_a_worker_keeps_at_most_max_open_subscriptions_and_never_closes_one_in_use(
        tmp_path: Path, sandbox_factory: Callable[..., SandboxHandle]) -> None:
    """With max_open 1, opening a second subscription closes the first once idle; one in use stays open."""
    sandbox = sandbox_factory()
    subs = load_subscriptions(_folder(tmp_path, sandbox.url, ["a", "b", "c"]))
    runtime = WorkerRuntime(subs, WorkerOptions(max_open=1))
    try:
        async with runtime.using("a") as a:
            assert a is not None
            async with runtime.using("b") as b:
                assert b is not None and {"a", "b"} == set(runtime.opened)  # both in use: none closed
            assert {"a"} == set(runtime.opened)  # b idle and least recently used: closed
        async with runtime.using("c"):
            pass
        assert {"c"} == set(runtime.opened)
        assert runtime.loaded and 1 == len(runtime.loaded)  # the shipped collections, loaded once for all three
    finally:
        await runtime.close()


def test_the_scheduler_reads_every_subscriptions_queue_and_last_poll_in_one_query() -> None:
    """queues_and_state gives each subscription's queue length and state value; one not made yet gives (0, None)."""
    made, missing = subscription_name("made"), subscription_name("missing")
    try:
        with PostgresHub(POSTGRES_URL, subscription=made, outbound_triggers={"Customer"}) as hub:
            hub.add_customer({"EmailAddress": "a@example.com", "CustomerNumber": "1"})
            hub.set_state("worker:poll", {"started": 12.5})
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            found = queues_and_state(conn, [made, missing], "worker:poll")
        assert {made: (1, {"started": 12.5}), missing: (0, None)} == found
    finally:
        drop_subscription(POSTGRES_URL, made)
