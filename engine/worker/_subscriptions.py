"""Where a worker's subscriptions come from: one settings file per subscription in a folder.

``klaviyo-sync worker --subscriptions DIR`` reads every ``*.yaml`` of ``DIR`` (not its
subfolders) with :func:`engine.settings.load_settings`; each file's ``subscription:`` key names
the subscription it configures.  Every worker process of a deployment reads the same folder
(the same files on every host, or the same mounted folder), so they all agree on the names:
the names are what the jobs carry.

The jobs database (procrastinate's tables) defaults to the subscriptions' hub when they all
share one PostgreSQL hub (:func:`default_jobs_url`); SQLite hubs need ``--jobs``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import DuplicateSubscriptionError, JobsDatabaseMissingError, Location, SubscriptionsDirError
from engine.settings import Settings, is_hub_url, load_settings

#: The environment variable that may stand for ``--subscriptions``.
ENV_SUBSCRIPTIONS = "KLAVIYO_SYNC_SUBSCRIPTIONS"


@dataclass(frozen=True)
class Subscription:
    """One subscription as the worker knows it: its name, the file it comes from, its settings."""

    name: str
    file: Path
    settings: Settings


def load_subscriptions(folder: str | os.PathLike[str], *,
                       env: Mapping[str, str] | None = None) -> dict[str, Subscription]:
    """Every subscription of ``folder``, by name, in file-name order.

    Raises:
        SubscriptionsDirError: ``folder`` is not a folder, or holds no ``*.yaml`` file.
        DuplicateSubscriptionError: two files name the same subscription (both files named).
        SettingsError: a settings file is invalid (as ``klaviyo-sync validate`` reports it).
    """
    path = Path(folder)
    if not path.is_dir():
        raise SubscriptionsDirError(f"the subscriptions folder {path} does not exist or is not a folder",
                                    location=Location(file=str(path)))
    files = sorted(p for p in path.glob("*.yaml") if p.is_file())
    if not files:
        raise SubscriptionsDirError(f"the subscriptions folder {path} holds no *.yaml settings file",
                                    location=Location(file=str(path)))
    found: dict[str, Subscription] = {}
    for file in files:
        settings = load_settings(file, env=env)
        name = settings.subscription
        if name in found:
            raise DuplicateSubscriptionError(
                f"subscription {name!r} is named by two settings files: {found[name].file} and {file}",
                location=Location(file=str(file)))
        found[name] = Subscription(name, file, settings)
    return found


def default_jobs_url(subscriptions: Mapping[str, Subscription]) -> str:
    """The jobs database when no ``--jobs`` is given: the PostgreSQL hub every subscription shares.

    Raises:
        JobsDatabaseMissingError: a subscription's hub is a SQLite file, or they name different
            PostgreSQL databases.
    """
    urls = {s.settings.hub_url for s in subscriptions.values()}
    if len(urls) == 1:
        (url,) = urls
        if url is not None and is_hub_url(url):
            return url
    sqlite = sorted(s.name for s in subscriptions.values() if s.settings.hub_url is None)
    why = (f"the hub of {', '.join(sqlite)} is a SQLite file" if sqlite
           else "the subscriptions' hubs are different PostgreSQL databases")
    raise JobsDatabaseMissingError(f"no jobs database: {why}; give --jobs postgresql://... "
                                   "(or $KLAVIYO_SYNC_JOBS) for procrastinate's tables")


__all__ = ["ENV_SUBSCRIPTIONS", "Subscription", "default_jobs_url", "load_subscriptions"]
