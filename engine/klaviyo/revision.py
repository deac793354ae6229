"""What each Klaviyo API revision offers, and how requests must look at it.

Klaviyo versions its API by a date sent in the ``revision`` header.  The engine
defaults to ``2023-10-15``; flows ask :func:`supports` before choosing an
endpoint, so the same collection can run the cheapest correct call on a newer
revision (for example ``profile-import`` instead of create + patch).

:data:`REVISIONS` is the one table of Klaviyo's real revisions; :func:`is_known` says
whether Klaviyo publishes a revision (settings refuse any other, the sandbox answers it
as Klaviyo does) and :func:`support` where it stands in Klaviyo's support window: a
revision is stable for one year, deprecated the second, and retired two years after
its release (Klaviyo's changelog prints the date as "Revision supported until").

Facts (``shared/klaviyo/API-NOTES.md`` §9):

==========================  ===========  ==========================================
capability                  from         meaning
==========================  ===========  ==========================================
``bulk_profile_import``     2023-12-15   ``POST /api/profile-bulk-import-jobs``
``optional_subscribe_list`` 2023-12-15   subscribe jobs may omit ``relationships.list``
``profile_import``          2024-02-15   ``POST /api/profile-import`` (upsert)
``event_profile_meta_in_attributes`` 2024-02-15  event profile ``meta`` lives in ``attributes``
``bulk_events``             2024-05-15   ``POST /api/event-bulk-create-jobs``
``jsonapi_content_type``    2024-10-15   ``application/vnd.api+json``, paths without ``/``
``subscriptions_required``  2025-01-15   subscribe/unsubscribe need ``attributes.subscriptions``
``l_tier_750``              2026-01-15   the L rate tier allows 750 requests a minute (was 700)
==========================  ===========  ==========================================
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

DEFAULT_REVISION = "2023-10-15"
LATEST_REVISION = "2026-07-15"

CAPABILITIES: dict[str, str] = {
    "bulk_profile_import": "2023-12-15",
    "optional_subscribe_list": "2023-12-15",
    "profile_import": "2024-02-15",
    "event_profile_meta_in_attributes": "2024-02-15",
    "bulk_events": "2024-05-15",
    "jsonapi_content_type": "2024-10-15",
    "no_trailing_slash": "2024-10-15",
    "subscriptions_required": "2025-01-15",
    "l_tier_750": "2026-01-15",
}

SUPPORT_YEARS = 2  # Klaviyo: "Each revision is supported for 2 years after its release"


@dataclass(frozen=True)
class Revision:
    """One of Klaviyo's published API revisions.

    ``retired``: the day support ends (Klaviyo's "Revision supported until" date, two years after
    release); ``deprecated``: one year after release, when Klaviyo stops calling it stable.
    """

    name: str
    released: datetime.date

    @property
    def deprecated(self) -> datetime.date:
        return _years_after(self.released, 1)

    @property
    def retired(self) -> datetime.date:
        return _years_after(self.released, SUPPORT_YEARS)


def _years_after(day: datetime.date, years: int) -> datetime.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


# Klaviyo's GA revisions (changelog and versioning policy; each revision's docs are at
# developers.klaviyo.com/en/v<revision>).  A beta revision is one of these with ``.pre``.
REVISIONS: tuple[Revision, ...] = tuple(Revision(d, datetime.date.fromisoformat(d)) for d in (
    "2022-10-17", "2023-02-22", "2023-06-15", "2023-07-15", "2023-08-15", "2023-09-15",
    "2023-10-15", "2023-12-15",
    "2024-02-15", "2024-05-15", "2024-06-15", "2024-07-15", "2024-10-15",
    "2025-01-15", "2025-04-15", "2025-07-15", "2025-10-15",
    "2026-01-15", "2026-04-15", "2026-07-15", "2026-10-15",
))
_BY_NAME = {r.name: r for r in REVISIONS}


def known(revision: str | None) -> Revision | None:
    """The table entry of ``revision`` (``.pre`` beta suffix allowed), or None."""
    text = (revision or "").strip()
    date, _, suffix = text.partition(".")
    if suffix not in ("", "pre"):
        return None
    return _BY_NAME.get(date)


def is_known(revision: str | None) -> bool:
    """Whether Klaviyo publishes ``revision`` (``YYYY-MM-DD`` or ``YYYY-MM-DD.pre``)."""
    return known(revision) is not None


def known_names() -> list[str]:
    return [r.name for r in REVISIONS]


@dataclass(frozen=True)
class SupportStatus:
    """Where a revision stands on ``today``: ``state`` is stable / deprecated / retired / unknown."""

    revision: str
    state: str
    deprecated: datetime.date | None
    retired: datetime.date | None

    def to_dict(self) -> dict[str, str | None]:
        """``{"state", "retired", "warning"}`` for JSON reports and the dashboard."""
        return {"state": self.state, "retired": str(self.retired) if self.retired else None,
                "warning": self.warning()}

    def warning(self) -> str | None:
        """One line for status / validate / the dashboard when the revision is past support, else None."""
        if self.state == "retired":
            return (f"Klaviyo API revision {self.revision} is past its support window: Klaviyo supports a "
                    f"revision for {SUPPORT_YEARS} years, and support for this one ended on {self.retired}. "
                    f"Klaviyo may refuse it or serve a newer revision; test api_revision {LATEST_REVISION}.")
        if self.state == "unknown":
            return f"Klaviyo publishes no API revision {self.revision}"
        return None


def support(revision: str | None, today: datetime.date | None = None) -> SupportStatus:
    """The support window of ``revision`` on ``today`` (default: today, UTC)."""
    rev = (revision or "").strip() or DEFAULT_REVISION
    entry = known(rev)
    if entry is None:
        return SupportStatus(rev, "unknown", None, None)
    day = today or datetime.datetime.now(datetime.UTC).date()
    state = "retired" if day >= entry.retired else "deprecated" if day >= entry.deprecated else "stable"
    return SupportStatus(rev, state, entry.deprecated, entry.retired)


_REVISION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(\.[a-z0-9]+)?$")

JSON = "application/json"
JSONAPI = "application/vnd.api+json"


def normalize(revision: str | None) -> str:
    """Return the revision to send: blank or ``None`` becomes :data:`DEFAULT_REVISION`.

    Raises:
        ValueError: the text is not ``YYYY-MM-DD[.suffix]``.
    """
    rev = (revision or "").strip() or DEFAULT_REVISION
    if not _REVISION_RE.match(rev):
        raise ValueError(f"Klaviyo revision must look like YYYY-MM-DD[.suffix], got {rev!r}")
    return rev


def date_of(revision: str | None) -> str:
    """The ``YYYY-MM-DD`` part of a revision (suffixes like ``.pre`` dropped)."""
    return normalize(revision).split(".", 1)[0]


def supports(revision: str | None, capability: str) -> bool:
    """Whether ``revision`` has ``capability`` (a key of :data:`CAPABILITIES`).

    Raises:
        KeyError: unknown capability; the message lists the known ones.
    """
    try:
        since = CAPABILITIES[capability]
    except KeyError:
        known = ", ".join(sorted(CAPABILITIES))
        raise KeyError(f"unknown Klaviyo capability {capability!r}; known: {known}") from None
    return date_of(revision) >= since


def content_type(revision: str | None) -> str:
    """The media type to send and accept at ``revision``."""
    return JSONAPI if supports(revision, "jsonapi_content_type") else JSON


def trailing_slash(revision: str | None) -> bool:
    """Whether paths end in ``/`` at ``revision`` (the spec's own form)."""
    return not supports(revision, "no_trailing_slash")


def api_path(revision: str | None, *segments: str) -> str:
    """Build ``/api/<segments...>`` in the path style of ``revision``.

    >>> api_path("2023-10-15", "profiles", "abc")
    '/api/profiles/abc/'
    >>> api_path("2026-07-15", "profiles")
    '/api/profiles'
    """
    path = "/api/" + "/".join(s.strip("/") for s in segments)
    return path + "/" if trailing_slash(revision) else path


__all__ = [
    "REVISIONS",
    "Revision",
    "SupportStatus",
    "known",
    "is_known",
    "known_names",
    "support",
    "CAPABILITIES",
    "DEFAULT_REVISION",
    "LATEST_REVISION",
    "JSON",
    "JSONAPI",
    "normalize",
    "date_of",
    "supports",
    "content_type",
    "trailing_slash",
    "api_path",
]
