"""One ``serve`` per hub: an OS file lock beside the hub file.

``<hub>.serve.lock`` is locked with ``fcntl.flock`` for the life of the process and holds
its pid.  The kernel drops the lock when the process ends in any way (SIGKILL included),
so a crashed service never blocks the next one; a second ``serve`` on the same hub finds
the lock taken and refuses to start (V001), naming the pid that holds it.  One-shot
commands (``dispatch``, ``poll``, ``hub import``) do not take this lock: they cooperate
with a running service through the hub's leased queue and transactions.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from engine.errors import Location, ServeLockHeldError


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


__all__ = ["ServeLock", "lock_path"]
