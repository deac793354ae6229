"""The Klaviyo seam: :class:`KlaviyoApi`, the operations the flows may ask of Klaviyo.

Flows (``engine/flows/``) talk to Klaviyo only through this protocol, as they talk
to the hub only through :class:`~engine.hub.HubStore`; :class:`~engine.klaviyo.KlaviyoClient`
is the shipped implementation (tests may pass a fake that records calls).

Contract every implementation keeps:

- **Resources are JSON:API dicts** as Klaviyo returns them (``{"type", "id",
  "attributes", ...}``); attribute names are Klaviyo's snake_case ones.  Inputs are
  never mutated.
- **One coroutine, one operation**: each call is all of one Klaviyo operation
  (paging followed, batches split, transient failures retried inside it).  It raises
  :class:`~engine.errors.KlaviyoApiError` when Klaviyo refuses (``status``,
  ``klaviyo_code``; :class:`~engine.errors.KlaviyoAuthError` for refused credentials)
  and :class:`~engine.errors.KlaviyoConnectionError` when Klaviyo cannot be reached;
  neither ever holds a key or a token.
- **Idempotent where Klaviyo allows it**: ``create_event`` sends the ``unique_id`` it is
  given (one is made before the first attempt otherwise), so a retry never records an
  event twice; ``create_profile`` answers an existing profile's id with ``created=False``.
- **Revision-aware**: ``revision`` is the ``revision`` header sent; ``supports(capability)``
  says whether it has a capability of :mod:`engine.klaviyo.revision`, and an operation the
  revision lacks answers as documented on it (``create_or_update_profile`` returns None).
- ``stats`` counts the operations, HTTP attempts and retries made so far.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from engine.klaviyo._transport import ClientStats

Resource = dict[str, Any]


@runtime_checkable
class KlaviyoApi(Protocol):
    """What flows may ask of Klaviyo. See the module docstring for the contract."""

    revision: str
    stats: ClientStats

    def supports(self, capability: str) -> bool:
        """Whether the revision has ``capability`` (see :mod:`engine.klaviyo.revision`)."""
        ...

    def inflight_limit(self, tier: str) -> int:
        """Requests of rate tier ``tier`` worth having in flight at once now."""
        ...

    # Profiles
    def iter_profile_pages(
        self, *, filter: str | None = None, sort: str | None = None, page_size: int | None = None,
        additional_fields: Sequence[str] | None = None,
    ) -> AsyncGenerator[list[Resource], None]:
        """Pages of profile resources matching ``filter`` (Klaviyo's filter syntax), in ``sort`` order.
        The ``iter_*`` operations are async generators: ``aclose()`` one to stop reading early."""
        ...

    async def get_profile(self, profile_id: str, *,
                          additional_fields: Sequence[str] | None = None) -> Resource | None:
        """The profile resource, or None when Klaviyo has no profile with this id."""
        ...

    async def create_profile(self, attributes: Mapping[str, Any]) -> tuple[str, bool]:
        """``(id, created)``; an existing profile with these identifiers gives its id, ``created=False``."""
        ...

    async def update_profile(self, profile_id: str, attributes: Mapping[str, Any], *,
                             unset: Sequence[str] | None = None) -> Resource:
        """Partial update (``None`` clears a field, ``unset`` removes custom properties); the updated resource."""
        ...

    async def create_or_update_profile(self, attributes: Mapping[str, Any], *,
                                       profile_id: str | None = None) -> tuple[str, bool] | None:
        """Upsert by identifiers -> ``(id, created)``; None when the revision has no profile import."""
        ...

    async def find_profiles(self, *, email: str | None = None, phone_number: str | None = None,
                            external_id: str | None = None) -> list[Resource]:
        """The profiles whose one given identifier equals the value."""
        ...

    async def find_profile_ids_by_email(self, emails: Sequence[str]) -> dict[str, str]:
        """Lowercased email -> profile id, for the emails Klaviyo holds."""
        ...

    # Lists and consent
    async def find_list_by_name(self, name: str) -> Resource | None:
        """The first list named ``name``, or None."""
        ...

    async def add_profiles_to_list(self, list_id: str, profile_ids: Sequence[str]) -> None: ...

    def subscribe_limit(self) -> int:
        """Profiles one subscribe job may name at this revision."""
        ...

    async def subscribe_profiles(self, profiles: Sequence[Mapping[str, Any]], *, list_id: str | None = None,
                                 channels: Sequence[str] = ("email", "sms"), custom_source: str | None = None,
                                 batch: int = 100) -> None:
        """Give marketing consent to ``profiles`` (``{"email"|"phone_number", "id"?}``)."""
        ...

    async def unsubscribe_profiles(self, profiles: Sequence[Mapping[str, Any]], *, list_id: str | None = None,
                                   channels: Sequence[str] = ("email", "sms")) -> None:
        """Withdraw marketing consent."""
        ...

    # Events
    async def create_event(self, metric_name: str, profile: str | Mapping[str, Any],
                           properties: Mapping[str, Any] | None = None, *, value: float | None = None,
                           unique_id: str | None = None, time: datetime | str | None = None) -> str:
        """Record an event for a profile id or identifier attributes; returns the ``unique_id`` used."""
        ...

    async def bulk_create_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Up to 1,000 events (``create_event``'s arguments, ``unique_id`` required) in one job,
        from revision 2024-05-15; one event Klaviyo refuses fails the whole request."""
        ...

    # Bulk profile import jobs
    async def start_bulk_import(self, entries: Sequence[Mapping[str, Any]], *,
                                list_ids: Sequence[str] = ()) -> Resource:
        """Start a bulk profile import job of ready entries; the job resource."""
        ...

    async def get_bulk_import_job(self, job_id: str) -> Resource: ...

    def iter_bulk_import_jobs(self, *, sort: str = "-created_at") -> AsyncGenerator[list[Resource], None]: ...

    def iter_bulk_import_job_profiles(self, job_id: str) -> AsyncGenerator[list[Resource], None]: ...

    def iter_bulk_import_errors(self, job_id: str) -> AsyncGenerator[list[Resource], None]: ...


__all__ = ["KlaviyoApi", "Resource"]
