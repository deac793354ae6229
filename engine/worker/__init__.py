"""``klaviyo-sync worker``: many subscriptions polled and dispatched by any number of processes.

Workers are procrastinate (https://procrastinate.readthedocs.io) workers on a PostgreSQL jobs
database.  Every worker reads the same subscriptions folder (one settings file per
subscription, :mod:`engine.worker._subscriptions`); a periodic scheduler job (one per tick
across all workers) defers a ``poll`` job for each subscription whose ``poll_interval`` has
passed since its last poll and a ``dispatch`` job for each whose hub queue is not empty
(:mod:`engine.worker._runtime`); any worker runs them (:mod:`engine.worker._process`).

Crash guarantees: a worker killed mid-job loses and duplicates nothing.  Its heartbeat stops,
and after ``stalled_after`` seconds the scheduler puts its jobs back in the queue; its claimed
hub changes come back when their lease runs out; a poll resumes from the cursor its last page
committed; Klaviyo deduplicates events by ``unique_id`` and a profile re-sent is linked, not
created twice.  docs/worker.md has the whole story.
"""

from __future__ import annotations

from engine.worker._jobs import ensure_schema, retry_stalled_jobs
from engine.worker._process import build_app, run_worker
from engine.worker._runtime import POLL_STATE, WorkerOptions, WorkerRuntime
from engine.worker._subscriptions import ENV_SUBSCRIPTIONS, Subscription, default_jobs_url, load_subscriptions

__all__ = [
    "ENV_SUBSCRIPTIONS",
    "POLL_STATE",
    "Subscription",
    "WorkerOptions",
    "WorkerRuntime",
    "build_app",
    "default_jobs_url",
    "ensure_schema",
    "load_subscriptions",
    "retry_stalled_jobs",
    "run_worker",
]
