"""Opening the two seams from the settings: the hub store and the Klaviyo client.

Every command that talks to the hub or Klaviyo builds them here, so the
settings are applied the same way everywhere:

- :func:`open_hub`: the SQLite hub at ``--hub`` or the settings' ``hub``, with the
  enabled outbound triggers and the secrets it must never store.
- :func:`open_client`: a :class:`~engine.klaviyo.KlaviyoClient` on the settings'
  API URL, revision, throttling and request limits (``request_timeout``,
  ``request_deadline``, ``max_response_bytes``), authenticated by the OAuth connection when
  one is stored in the hub (:data:`TOKEN_SOURCES` lets the OAuth module plug in)
  or else by the private API key.  With the ``rate_budget`` setting (a Redis URL) the client
  draws from the account's :class:`~engine.klaviyo.SharedRateBudget`, shared by every process
  sending for it (:func:`shared_budget`); otherwise from its own in-process budget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import NoCredentialsError
from engine.hub import PostgresHub, SqliteHub
from engine.klaviyo import KlaviyoClient, SharedRateBudget, account_digest
from engine.oauth import token_source_for
from engine.settings import Settings, is_hub_url

#: Factories tried in order by :func:`open_client`; each takes (settings, hub) and returns a
#: token source or None: the OAuth connection stored in the hub; the API key is the fallback.
TOKEN_SOURCES: list[Callable[[Settings, Any], Any]] = [token_source_for]


def open_hub(settings: Settings, path: str | Path | None = None) -> SqliteHub:
    """The hub store for these settings (``path`` overrides the settings' ``hub``: a SQLite file
    or a PostgreSQL URL).  On PostgreSQL the store is the settings' ``subscription``."""
    target = str(path) if path else (settings.hub_url or str(settings.hub_path))
    if is_hub_url(target):
        return PostgresHub(target, subscription=settings.subscription,
                           outbound_triggers=settings.outbound_triggers.entities(), secrets=settings.secrets(),
                           default_region=settings.default_phone_region)
    return SqliteHub(
        Path(path) if path else settings.hub_path,
        outbound_triggers=settings.outbound_triggers.entities(),
        secrets=settings.secrets(),
    )


def tier_overrides(settings: Settings) -> dict[str, dict[str, int]]:
    """The settings' throttling tiers in the client's shape."""
    return {t: {"burst": v.burst, "steady": v.steady} for t, v in settings.throttling.tiers.items()}


def budget_account(settings: Settings, credential: str | None) -> str:
    """The name the shared budget counts this account under: the ``account`` setting, else
    :func:`~engine.klaviyo.account_digest` of the credential (API key or OAuth client id)."""
    if settings.account:
        return settings.account
    if not credential:
        raise NoCredentialsError(
            "the shared rate budget needs an account: set account in the settings file, or an API key "
            "or OAuth client id to derive it from")
    return account_digest(credential)


def shared_budget(settings: Settings, credential: str | None) -> SharedRateBudget | None:
    """The account's budget in Redis when ``rate_budget`` is set; None keeps the in-process budget."""
    if not settings.rate_budget:
        return None
    return SharedRateBudget(settings.rate_budget, budget_account(settings, credential), tier_overrides(settings),
                            revision=settings.api_revision)


def open_client(settings: Settings, hub: Any = None, **overrides: Any) -> KlaviyoClient:
    """A Klaviyo client for these settings. Use it as ``async with open_client(...) as client``.

    Args:
        settings: the subscription settings.
        hub: the hub store, where an OAuth connection's tokens live (optional).
        overrides: keyword arguments passed to :class:`KlaviyoClient` over the settings'
            values (tests use ``timeout``, ``max_attempts``...).
    """
    token_source = None
    for factory in TOKEN_SOURCES:
        token_source = factory(settings, hub)
        if token_source is not None:
            break
    kwargs: dict[str, Any] = {
        "base_url": settings.api_url,
        "revision": settings.api_revision,
        "tier_overrides": tier_overrides(settings),
        "max_concurrency": settings.throttling.max_concurrency,
        "timeout": settings.request_timeout,
        "deadline": settings.request_deadline,
        "max_response_bytes": settings.max_response_bytes,
    }
    if token_source is not None:
        kwargs["token_source"] = token_source
    elif settings.api_key is not None and settings.api_key.reveal():
        kwargs["api_key"] = settings.api_key.reveal()
    kwargs.update(overrides)
    if "api_key" not in kwargs and "token_source" not in kwargs:
        raise NoCredentialsError(
            "no Klaviyo credentials: set api_key in the settings file (or the KLAVIYO_API_KEY "
            "environment variable), or connect with `klaviyo-sync auth login`")
    if "budget" not in kwargs and settings.rate_budget:
        credential = settings.oauth.client_id if "token_source" in kwargs else kwargs.get("api_key")
        kwargs["budget"] = shared_budget(settings, credential)
    return KlaviyoClient(**kwargs)


__all__ = ["TOKEN_SOURCES", "budget_account", "open_client", "open_hub", "shared_budget", "tier_overrides"]
