"""The jobs database: procrastinate's schema, applied once however many workers start at once.

procrastinate keeps its jobs, locks, worker heartbeats and periodic defers in tables of its own
(``procrastinate_*``, in the database's default schema).  :func:`ensure_schema` creates them
when they are missing, under a PostgreSQL advisory lock, so several workers starting together
neither race nor fail: the first applies the schema in one transaction, the others wait for it
and then find the tables.  :func:`retry_stalled_jobs` puts the jobs of dead workers (no
heartbeat for ``stalled_after`` seconds) back in the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import psycopg
from procrastinate import App, PsycopgConnector, exceptions
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager

from engine.errors import JobsDatabaseError
from engine.settings import mask_url

log = logging.getLogger("engine.worker")

#: The advisory lock key workers take while they look for (and apply) procrastinate's schema.
SCHEMA_LOCK_KEY = 0x4B53_574B  # "KSWK"


def _reason(exc: BaseException, secrets: Iterable[str]) -> str:
    """The first line of a database error, with every secret masked."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _password(url: str) -> str:
    try:
        return str(psycopg.conninfo.conninfo_to_dict(url).get("password") or "")
    except psycopg.ProgrammingError:
        return ""


async def ensure_schema(url: str) -> bool:
    """Create procrastinate's tables in the jobs database unless they exist; True if created.

    Raises:
        JobsDatabaseError: the database cannot be reached, or the schema cannot be applied
            (the message shows the URL with its password masked).
    """
    shown = mask_url(url)
    try:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10) as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
            try:
                cur = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
                row = await cur.fetchone()
                if row is not None and row[0]:
                    return False
                async with conn.transaction():
                    await conn.execute(SchemaManager.get_schema())
                log.info("applied procrastinate's schema to the jobs database %s", shown)
                return True
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
    except psycopg.Error as exc:
        raise JobsDatabaseError(f"cannot use the jobs database {shown}: {_reason(exc, [_password(url)])}") from None


def make_app(url: str, *, pool_size: int) -> App:
    """A procrastinate App on the jobs database (its tasks are added by :mod:`engine.worker._tasks`)."""
    connector = PsycopgConnector(conninfo=url, min_size=1, max_size=max(2, pool_size))
    return App(connector=connector)


async def retry_stalled_jobs(app: App, stalled_after: float) -> int:
    """Put back in the queue every job of a worker silent for ``stalled_after`` s; return how many.

    A stalled job whose twin already waits (the same ``queueing_lock``: the scheduler deferred a
    new one meanwhile) is finished as failed instead: the twin does the same work, and the job's
    ``lock`` (one poll at a time per subscription) is freed either way.
    """
    moved = 0
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
        assert job.id is not None
        try:
            await app.job_manager.retry_job(job)
            log.warning("job %s (%s) of a stalled worker put back in the queue", job.id, job.call_string)
            moved += 1
        except exceptions.UniqueViolation:
            try:
                await app.job_manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
                log.warning("job %s (%s) of a stalled worker dropped: the same job already waits", job.id,
                            job.call_string)
                moved += 1
            except exceptions.ConnectorException:  # another scheduler got there first
                pass
        except exceptions.ConnectorException:  # another scheduler got there first
            pass
    return moved


__all__ = ["SCHEMA_LOCK_KEY", "ensure_schema", "make_app", "retry_stalled_jobs"]
