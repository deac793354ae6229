"""What each Klaviyo API revision offers, and how requests must look at it.

Klaviyo versions its API by a date sent in the ``revision`` header.  The engine
defaults to ``2023-10-15``; flows ask :func:`supports` before choosing an
endpoint, so the same collection can run the cheapest correct call on a newer
revision (for example ``profile-import`` instead of create + patch).

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
==========================  ===========  ==========================================
"""

from __future__ import annotations

import re

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
}

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
