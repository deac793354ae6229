"""One worker process: procrastinate's App with our three tasks, run until SIGTERM / SIGINT.

:func:`build_app` registers the tasks on a procrastinate App bound to a
:class:`~engine.worker._runtime.WorkerRuntime`:

- ``klaviyo_sync.schedule`` (periodic, every ``tick`` seconds; procrastinate defers it once
  per tick across all workers, and its ``queueing_lock`` keeps at most one waiting);
- ``klaviyo_sync.poll(subscription)`` (``lock`` and ``queueing_lock`` per subscription: one
  poll running and one waiting at most);
- ``klaviyo_sync.dispatch(subscription)`` (``queueing_lock`` per subscription; several may
  run at once on different workers, the hub's claims keep them apart).

:func:`run_worker` applies procrastinate's schema if missing, runs the worker, and on SIGTERM /
SIGINT stops cleanly: polls stop after the profile in hand and save their cursor, dispatches
claim no more, jobs get ``shutdown_timeout`` seconds to finish and are then cancelled (their
claims released), and the worker unregisters itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from procrastinate import App
from procrastinate.worker import Worker

from engine.worker._jobs import ensure_schema, make_app
from engine.worker._runtime import DISPATCH_TASK, POLL_TASK, SCHEDULE_TASK, WorkerOptions, WorkerRuntime
from engine.worker._subscriptions import Subscription

log = logging.getLogger("engine.worker")


def build_app(url: str, runtime: WorkerRuntime) -> App:
    """A procrastinate App on the jobs database ``url`` whose tasks run on ``runtime``."""
    options = runtime.options
    # a job holds a jobs-database connection only to fetch and to finish: a few serve any concurrency
    # (each connection counts against the server's max_connections, 100 by default)
    app = make_app(url, pool_size=min(options.concurrency, 4) + 2)

    @app.task(name=POLL_TASK)
    async def poll(subscription: str) -> None:
        await runtime.poll(subscription)

    @app.task(name=DISPATCH_TASK)
    async def dispatch(subscription: str) -> None:
        await runtime.dispatch(subscription)

    @app.periodic(cron=f"* * * * * */{options.tick}", periodic_id="scheduler")
    @app.task(name=SCHEDULE_TASK, queueing_lock=SCHEDULE_TASK)
    async def schedule(timestamp: int) -> None:
        await runtime.schedule()

    runtime.app = app
    return app


async def run_worker(subscriptions: dict[str, Subscription], url: str, options: WorkerOptions, *,
                     name: str | None = None, announce: Callable[[str], None] = print,
                     on_started: Callable[[], None] | None = None) -> int:
    """Run one worker until SIGTERM / SIGINT; return the exit status (0 after a clean stop).

    Raises:
        JobsDatabaseError: the jobs database cannot be reached or its schema applied.
    """
    await ensure_schema(url)
    runtime = WorkerRuntime(subscriptions, options)
    app = build_app(url, runtime)
    loop = asyncio.get_running_loop()
    async with app.open_async():
        worker = Worker(app, name=name, concurrency=options.concurrency, install_signal_handlers=False,
                        update_heartbeat_interval=options.heartbeat, stalled_worker_timeout=options.stalled_after,
                        shutdown_graceful_timeout=options.shutdown_timeout, delete_jobs="successful",
                        fetch_job_polling_interval=max(0.5, options.tick / 2),
                        abort_job_polling_interval=max(0.5, options.tick / 2))

        def stop() -> None:
            if not runtime.stopping.is_set():
                announce("klaviyo-sync worker: stopping (no new jobs; the jobs in hand finish or release "
                         "their claims)")
            runtime.stop()
            worker.stop()  # type: ignore[no-untyped-call]

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        try:
            task = asyncio.create_task(worker.run(), name="procrastinate worker")  # type: ignore[no-untyped-call]
            announce(f"klaviyo-sync worker: running {len(subscriptions)} subscription(s) "
                     f"({', '.join(subscriptions)}); {options.concurrency} job(s) at once")
            if on_started is not None:
                on_started()
            await task
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await runtime.close()
    announce("klaviyo-sync worker: stopped cleanly")
    return 0


__all__ = ["build_app", "run_worker"]
