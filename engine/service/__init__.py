"""The integration as a running service: ``klaviyo-sync serve``.

- :mod:`engine.service._runtime`   :class:`Service`: the scheduled poll, continuous dispatch,
  Manual Sync and retries, the clean stop
- :mod:`engine.service.app`        the aiohttp app (:func:`build_app`) and the process (:func:`serve`)
- :mod:`engine.service._api`       the hub API (JSON); :mod:`engine.service._openapi` its document
- :mod:`engine.service._pages`     the pages (jinja2 templates in ``templates/``)
- :mod:`engine.service._security`  the token, page sessions, CSRF
- :mod:`engine.service._metrics`   ``/metrics`` (prometheus_client)
- :mod:`engine.service._lock`      one ``serve`` per hub: an OS file lock beside a SQLite hub, a
  PostgreSQL advisory lock per subscription of a shared hub
- :mod:`engine.service._subscriptions`  every subscription of a shared hub: opened on demand, the
  least recently used closed first; read-only without its settings
- :class:`engine.errors.ServiceError` (V0xx) is the base of the service's errors, one subclass a code

See docs/service.md.
"""

from __future__ import annotations

from engine.errors import ServiceError
from engine.service._lock import PgServeLock, ServeLock, lock_path, serve_lock_key
from engine.service._runtime import Service
from engine.service._subscriptions import Subscriptions
from engine.service.app import build_app, serve

__all__ = ["PgServeLock", "ServeLock", "Service", "ServiceError", "Subscriptions", "build_app", "lock_path", "serve",
           "serve_lock_key"]
