"""Klaviyo's REST API: the async client, rate tiers, revision capabilities and errors.

Table of contents:

* :class:`KlaviyoApi` — the seam: the operations flows may ask of Klaviyo, and its contract (``_protocol.py``)
* :class:`KlaviyoClient` — the implementation over HTTP (``client.py``)
* :class:`TokenSource` — where OAuth bearer tokens come from (``_transport.py``)
* :class:`ClientStats` — per-operation call/retry counters
* :mod:`engine.klaviyo._answers` — the status and body shape each operation expects
* :mod:`engine.klaviyo.revision` — ``supports(revision, capability)``, path style, content type
* :mod:`engine.klaviyo.ratelimit` — tiers XS..XL and the shared :class:`RateBudget`
* :class:`SharedRateBudget` — one budget per account in Redis, for every process (``_shared_budget.py``)
"""

from __future__ import annotations

from engine.errors import KlaviyoApiError, KlaviyoAuthError, KlaviyoConnectionError, KlaviyoError
from engine.klaviyo import revision
from engine.klaviyo._protocol import KlaviyoApi
from engine.klaviyo._shared_budget import SharedRateBudget, TierBudget, account_digest
from engine.klaviyo._transport import ClientStats, TokenSource
from engine.klaviyo.client import DEFAULT_BASE_URL, KlaviyoClient
from engine.klaviyo.ratelimit import TIERS, RateBudget, Tier, resolve_tiers

__all__ = [
    "KlaviyoApi",
    "KlaviyoClient",
    "TokenSource",
    "ClientStats",
    "RateBudget",
    "SharedRateBudget",
    "TierBudget",
    "account_digest",
    "Tier",
    "TIERS",
    "resolve_tiers",
    "revision",
    "DEFAULT_BASE_URL",
    "KlaviyoError",
    "KlaviyoApiError",
    "KlaviyoAuthError",
    "KlaviyoConnectionError",
]
