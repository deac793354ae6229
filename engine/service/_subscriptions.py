"""Every subscription of a shared hub, as one ``serve`` shows them.

A ``serve`` runs one subscription (its settings' ``subscription``): its :class:`Service`.  On a
PostgreSQL hub it also shows every other subscription the database's registry
(``klaviyo_sync.subscriptions``) lists, through :class:`Subscriptions`:

- **read-only** (:class:`ReadOnlyView`) when the serve has no settings for it: its counts,
  records, error log and queue can be viewed; every action (a write, resolve, retry, push,
  Manual Sync) is refused with 403 (V403), since acting needs the subscription's own settings
  (its API key, collections and outbound triggers);
- **with actions** when ``serve --subscriptions DIR`` holds its settings (every ``*.yaml`` there
  is one subscription's settings, named by its ``subscription`` key): a :class:`Service` of its
  own, never started (no loops: workers, or that subscription's own serve, poll and dispatch).

Each is opened on first use and kept for the next request; at most ``keep_open`` are kept (the
serve's own one aside), and the least recently used one that no request is using is closed
first.  A :class:`ReadOnlyView` runs its queries on one worker thread of its own, as
:meth:`Service.db` does, so no two threads ever share a hub connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from engine.errors import ForbiddenError, KlaviyoSyncError, Location, ResourceNotFoundError, SettingsValueError
from engine.hub import PostgresHub, SqliteHub
from engine.hub._postgres import subscriptions as registry_names
from engine.service._runtime import Service
from engine.settings import Settings, load_settings, mask_url

log = logging.getLogger("engine.service")
T = TypeVar("T")
DEFAULT_KEEP_OPEN = 8
NAMES_MAX_AGE = 2.0


class ReadOnlyView:
    """One subscription's hub, viewed without its settings: queries only, on a thread of its own."""

    settings: Settings | None = None
    syncing = False
    dispatching = False

    def __init__(self, url: str, subscription: str, secrets: tuple[str, ...] | list[str]) -> None:
        self.subscription = subscription
        self.hub_api: SqliteHub = PostgresHub(url, subscription=subscription, secrets=secrets, create=False)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hub-{subscription}")

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on this view's thread (the only user of ``hub_api``)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def stop(self) -> None:
        """Close the hub connection (on its own thread) and the thread."""
        await self.db(self.hub_api.close)
        self._executor.shutdown(wait=True)


Target = Service | ReadOnlyView


def acting(target: Target, what: str = "this action") -> Service:
    """The service that may carry out a state-changing request for ``target``.

    Raises:
        ForbiddenError: ``target`` is a subscription this serve has no settings for.
    """
    if isinstance(target, Service):
        return target
    raise ForbiddenError(
        f"subscription {target.subscription} is read-only in this serve: {what} needs its settings (its API key, "
        "collections and outbound triggers); start serve with --subscriptions DIR holding its settings file, "
        "or use that subscription's own serve")


def _database(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return (parts.hostname or "localhost", parts.port or 5432, parts.path.lstrip("/"))


def load_subscription_settings(folder: Path, url: str, own: str) -> dict[str, Settings]:
    """The settings in ``folder`` (every ``*.yaml``), by subscription name; the serve's own name is skipped.

    Raises:
        SettingsValueError: not a folder, two files name one subscription, or a file's hub is
            another database.
        SettingsError: a file that does not load (as every command reports it).
    """
    if not folder.is_dir():
        raise SettingsValueError(f"--subscriptions {folder} is not a folder of settings files (*.yaml)",
                                 location=Location(file=str(folder)))
    found: dict[str, Settings] = {}
    files: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yaml")):
        settings = load_settings(path)
        name = settings.subscription
        if name in files:
            raise SettingsValueError(f"{path.name} and {files[name].name} both hold the settings of subscription "
                                     f"{name}; keep one", location=Location(file=str(path)))
        if settings.hub_url is not None and _database(settings.hub_url) != _database(url):
            raise SettingsValueError(f"the hub of subscription {name} is {mask_url(settings.hub_url)}, not this "
                                     f"serve's database {mask_url(url)}", location=Location(file=str(path)))
        files[name] = path
        if name != own:
            found[name] = settings
    return found


class Subscriptions:
    """The subscriptions a serve shows: its own :class:`Service` and, on PostgreSQL, every other one.

    Args:
        own: the serve's service (always open, never closed here).
        settings: other subscriptions' settings by name (``--subscriptions DIR``).
        keep_open: other subscriptions' hubs kept open at most (least recently used closed first).
        lease_seconds: for the services made from ``settings``.
    """

    def __init__(self, own: Service, settings: dict[str, Settings] | None = None, *,
                 keep_open: int = DEFAULT_KEEP_OPEN, lease_seconds: float | None = None) -> None:
        self.own = own
        self.settings = dict(settings or {})
        self.keep_open = max(1, keep_open)
        self.lease_seconds = own.lease_seconds if lease_seconds is None else lease_seconds
        self._open: OrderedDict[str, Target] = OrderedDict()
        self._users: dict[str, int] = {}
        self._opening: dict[str, asyncio.Future[Target]] = {}
        self._names: tuple[float, list[str]] = (-1e9, [])

    @property
    def url(self) -> str | None:
        """The shared database (None on a SQLite hub: the serve's own subscription only)."""
        return str(self.own.location) if self.own.shared else None

    def open_names(self) -> list[str]:
        """Other subscriptions whose hub is open now, least recently used first."""
        return list(self._open)

    async def names(self, *, max_age: float = NAMES_MAX_AGE) -> list[str]:
        """Every subscription, by name: the registry's (read at most every ``max_age`` s), or the own one."""
        url = self.url
        if url is None:
            return [self.own.subscription]
        at, names = self._names
        if time.monotonic() - at > max_age:
            names = await self.own.db(registry_names, url)
            if self.own.subscription not in names:
                names = sorted([*names, self.own.subscription])
            self._names = (time.monotonic(), names)
        return list(names)

    def has_settings(self, name: str) -> bool:
        return name == self.own.subscription or name in self.settings

    @asynccontextmanager
    async def use(self, name: str | None) -> AsyncIterator[Target]:
        """The subscription ``name`` (None: the serve's own) for one request.

        Raises:
            ResourceNotFoundError: no such subscription in the database.
        """
        if name is None or name == self.own.subscription:
            yield self.own
            return
        target = await self._get(name)
        self._users[name] = self._users.get(name, 0) + 1
        try:
            yield target
        finally:
            if name in self._users:
                self._users[name] -= 1
            await self._evict()

    async def _get(self, name: str) -> Target:
        found = self._open.get(name)
        if found is not None:
            self._open.move_to_end(name)
            return found
        pending = self._opening.get(name)
        if pending is not None:
            return await asyncio.shield(pending)
        known = await self.names(max_age=0.0 if name not in self._names[1] else NAMES_MAX_AGE)
        if name not in known:
            raise ResourceNotFoundError(f"no subscription {name[:60]!r} in the hub database (there are: "
                                        f"{', '.join(known) or 'none'}); GET /api/subscriptions lists them")
        future: asyncio.Future[Target] = asyncio.get_running_loop().create_future()
        self._opening[name] = future
        try:
            target = await asyncio.to_thread(self._make, name)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a waiter re-raises it, nobody else must log it
            raise
        finally:
            self._opening.pop(name, None)
        future.set_result(target)
        self._open[name] = target
        self._users.setdefault(name, 0)
        return target

    def _make(self, name: str) -> Target:
        url = self.url
        assert url is not None, "only a shared hub has other subscriptions"
        settings = self.settings.get(name)
        if settings is None:
            return ReadOnlyView(url, name, self.own.settings.secrets())
        log.info("opening subscription %s with its settings (actions allowed)", name)
        return Service(settings, settings.hub_url or url, lease_seconds=self.lease_seconds)

    async def _evict(self) -> None:
        while len(self._open) > self.keep_open:
            idle = next((n for n in self._open if not self._users.get(n)), None)
            if idle is None:
                return  # every open one is in use: the cap is exceeded until a request ends
            target = self._open.pop(idle)
            self._users.pop(idle, None)
            await self._close(idle, target)

    @staticmethod
    async def _close(name: str, target: Target) -> None:
        try:
            await target.stop()
        except Exception:  # noqa: BLE001 - closing is best effort; the log has the detail
            log.exception("closing subscription %s", name)

    async def close(self) -> None:
        """Close every other subscription's hub (the serve's own service is stopped by serve)."""
        while self._open:
            name, target = self._open.popitem(last=False)
            await self._close(name, target)
        self._users.clear()

    async def summary(self, name: str) -> dict[str, Any]:
        """One subscription's row of ``GET /api/subscriptions``: counts, last poll, what this serve may do.

        A subscription that cannot be opened (a newer schema, the database refusing) gets an
        ``error`` instead of counts; the other rows are unaffected.
        """
        row: dict[str, Any] = {"name": name, "own": name == self.own.subscription,
                               "settings": self.has_settings(name), "actions": self.has_settings(name),
                               "syncing": False}
        try:
            async with self.use(name) as target:
                status = await target.db(_counts, target.hub_api)
                row["syncing"] = target.syncing
        except KlaviyoSyncError as err:
            row["error"] = {"code": err.code, "message": err.message}
            return row
        return {**row, **status}

    async def summaries(self) -> list[dict[str, Any]]:
        """Every subscription's row, by name."""
        return [await self.summary(n) for n in await self.names(max_age=0.0)]


def _counts(hub: SqliteHub) -> dict[str, Any]:
    """What the subscriptions list shows of one hub: counts and when a poll last saved its cursor."""
    c = hub.counts()
    cursors = hub.cursors()
    return {"counts": {"customers": c["customers"], "transactions": c["transactions"], "links": c["links"],
                       "queue_length": c["queued_changes"], "unresolved_errors": c["unresolved_errors"],
                       "unresolved_warnings": c["unresolved_warnings"]},
            "last_poll": max((cur["updated_at"] for cur in cursors.values()), default=None)}


__all__ = ["DEFAULT_KEEP_OPEN", "ReadOnlyView", "Subscriptions", "Target", "acting", "load_subscription_settings"]
