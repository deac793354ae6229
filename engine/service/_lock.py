"""One ``serve`` per hub: an OS file lock beside a SQLite hub, a PostgreSQL advisory lock per subscription.

**SQLite** (:class:`ServeLock`): ``<hub>.serve.lock`` is locked with ``fcntl.flock`` for the
life of the process and holds its pid.  The kernel drops the lock when the process ends in any
way (SIGKILL included), so a crashed service never blocks the next one.

**PostgreSQL** (:class:`PgServeLock`): a *session* advisory lock, one key per subscription
(:func:`serve_lock_key`), held on a connection of its own for the life of the process.  The
connection's ``application_name`` names the pid and host, so a refused serve can say who holds
it.  The server drops the lock when the session ends, and a killed process's socket is closed by
its kernel, so SIGKILL frees it at once; so does a lost network (after the server notices).

Either way a second ``serve`` of the same hub or subscription finds the lock taken and refuses
to start (V001), naming the pid that holds it.  One-shot commands (``dispatch``, ``poll``,
``hub import``) and ``serve --no-sync`` do not take the lock: they run no schedule of their own,
and cooperate with a running service through the hub's leased queue and transactions.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

import psycopg

from engine.errors import HubDatabaseError, Location, ServeLockHeldError
from engine.settings import mask_url


def lock_path(hub_path: Path) -> Path:
    """The lock file of a hub: ``<hub>.serve.lock`` beside it."""
    return hub_path.with_name(hub_path.name + ".serve.lock")


class ServeLock:
    """Hold the hub's serve lock (``with ServeLock(path):``).

    Raises:
        ServeLockHeldError: another process holds it.
    """

    def __init__(self, hub_path: Path) -> None:
        self.path = lock_path(Path(hub_path))
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ServeLockHeldError(
                f"another klaviyo-sync serve (pid {holder}) is already running on this hub; stop it first "
                f"(lock file {self.path})", location=Location(file=str(self.path))) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def held(self) -> bool:
        """Whether the lock is still ours (a file lock cannot be lost while the process lives)."""
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ServeLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def serve_lock_key(subscription: str) -> tuple[int, int]:
    """The two 31-bit keys of a subscription's serve lock (``pg_try_advisory_lock(k1, k2)``).

    Two non-negative int4 keys rather than one bigint, so ``pg_locks`` shows them as they were
    given (``classid``, ``objid``, ``objsubid = 2``).  A worker that must not run beside a syncing
    serve can test the same key.
    """
    digest = hashlib.sha256(f"klaviyo-sync:serve:{subscription}".encode()).digest()
    return (int.from_bytes(digest[:4], "big") & 0x7FFFFFFF, int.from_bytes(digest[4:8], "big") & 0x7FFFFFFF)


_HOLDER = ("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
           "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = %s::oid "
           "AND l.objid = %s::oid AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
_PREFIX = "klaviyo-sync serve "


class PgServeLock:
    """Hold a subscription's serve lock in a shared PostgreSQL hub (``with PgServeLock(url, name):``).

    Raises:
        ServeLockHeldError: another session holds it.
        HubDatabaseError: the database cannot be reached.
    """

    def __init__(self, url: str, subscription: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.subscription = subscription
        self.keys = serve_lock_key(subscription)
        self.timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._mutex = threading.Lock()  # held() runs on a worker thread, release() on the main one

    def _connect(self) -> psycopg.Connection[Any]:
        name = f"{_PREFIX}pid={os.getpid()} host={socket.gethostname()}"[:63]
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.timeout)),
                                   application_name=name)
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise HubDatabaseError(f"cannot connect to the hub database {mask_url(self.url)} for the serve lock: "
                                   f"{reason}", location=Location(file=mask_url(self.url))) from None

    def _try(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self.keys).fetchone()
        return bool(row and row[0])

    def _holder(self, conn: psycopg.Connection[Any]) -> str:
        row = conn.execute(_HOLDER, self.keys).fetchone()
        text = str(row[0]) if row and row[0] else ""
        if not text.startswith(_PREFIX):
            return "pid unknown"
        parts = dict(p.split("=", 1) for p in text[len(_PREFIX):].split() if "=" in p)
        return f"pid {parts.get('pid', 'unknown')}" + (f" on {parts['host']}" if parts.get("host") else "")

    def acquire(self) -> None:
        conn = self._connect()
        try:
            if not self._try(conn):
                holder = self._holder(conn)
                raise ServeLockHeldError(
                    f"another klaviyo-sync serve ({holder}) is already running on the hub subscription "
                    f"{self.subscription}; stop it first (PostgreSQL advisory lock in {mask_url(self.url)})",
                    location=Location(file=mask_url(self.url)))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def held(self) -> bool:
        """Whether the lock is still ours; after a lost connection, take it again if it is free.

        Returns False when the session was lost and another serve has taken the lock since (or
        the database cannot be reached to take it again).
        """
        with self._mutex:
            return self._held()

    def _held(self) -> bool:
        conn = self._conn
        if conn is not None and not conn.broken and not conn.closed:
            try:
                conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                pass
        self._release()
        try:
            fresh = self._connect()
        except HubDatabaseError:
            return False
        try:
            if self._try(fresh):
                self._conn = fresh
                return True
        except psycopg.Error:
            pass
        fresh.close()
        return False

    def release(self) -> None:
        with self._mutex:
            self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.broken and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", self.keys)
        except psycopg.Error:
            pass  # the session ends below, which frees the lock anyway
        finally:
            conn.close()

    def __enter__(self) -> PgServeLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["PgServeLock", "ServeLock", "lock_path", "serve_lock_key"]
