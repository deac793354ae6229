"""The integration as a running service: ``klaviyo-sync serve``.

- :mod:`engine.service._runtime`   :class:`Service`: the scheduled poll, continuous dispatch,
  Manual Sync and retries, the clean stop
- :mod:`engine.service.app`        the aiohttp app (:func:`build_app`) and the process (:func:`serve`)
- :mod:`engine.service._api`       the hub API (JSON); :mod:`engine.service._openapi` its document
- :mod:`engine.service._pages`     the pages (jinja2 templates in ``templates/``)
- :mod:`engine.service._security`  the token, page sessions, CSRF
- :mod:`engine.service._metrics`   ``/metrics`` (prometheus_client)
- :mod:`engine.service._lock`      one ``serve`` per hub (an OS file lock beside the hub)
- :class:`engine.errors.ServiceError` (V0xx) is the base of the service's errors, one subclass a code

See docs/service.md.
"""

from __future__ import annotations

from engine.errors import ServiceError
from engine.service._lock import ServeLock, lock_path
from engine.service._runtime import Service
from engine.service.app import build_app, serve

__all__ = ["ServeLock", "Service", "ServiceError", "build_app", "lock_path", "serve"]
