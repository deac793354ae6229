"""Mapped outbound payloads -> the pieces of Klaviyo requests.  Pure functions, no I/O.

An outbound collection maps a hub record into a flat *payload* whose keys are
Klaviyo names plus a few flags (see ``collections/*-from-hub.yaml``).  This
module splits such a payload into what the flows send:

Profiles (:func:`profile_request`)
    * Klaviyo profile attributes (``email``, ``phone_number``, ``first_name``,
      ``location: {...}``, ``properties: {...}``...).  ``None`` values are dropped
      at every level, so a missing source value is never sent as null (a PATCH
      with null would *clear* the Klaviyo field: limitation 6 forbids that).
    * ``LIST_<list name>: true`` -> subscribe the profile to that list (consent job
      with the list relationship).
    * ``UCLIST_<list name>: true`` -> add the profile to that list without changing
      consent (list relationships).
    * ``SubscribeProfile``: true subscribes; false -- *or no value at all* --
      unsubscribes, exactly as the seeds warn ("A SubscribeProfile value of false
      (or no mapping) fully unsubscribes a profile").  A value that is not a
      boolean is a problem: consent is then left unchanged rather than guessed.

Events (:func:`event_request`)
    ``ProfileId``, ``MetricName``, ``UniqueId``, ``NumericValue``, ``Time`` have a
    meaning; ``EventProperties`` (a dict) is the event body; every other key
    (``"Example event field"``, ``ValueCurrency``...) is merged into the event
    properties under its own name.  The result's :meth:`EventRequest.client_kwargs`
    are the arguments of :meth:`engine.klaviyo.KlaviyoClient.create_event`.

The names with a meaning are the table of Klaviyo destinations in :mod:`engine.vocab`, which
the collection compiler checks destinations against too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from engine.errors import PayloadError
from engine.formula.helpers import to_bool, to_float
from engine.vocab import EVENT_KEYS, REQUIRED_EVENT_KEYS, SUBSCRIBE_FLAG, UCLIST_PREFIX, Consent, EventKey, list_flag

SUBSCRIBE: Final[Consent] = "subscribe"
UNSUBSCRIBE: Final[Consent] = "unsubscribe"

#: The event values a request cannot do without: the required ones, but for EventProperties (none is an
#: empty body; the order flow has already refused an event whose properties are all empty).
_REQUEST_NEEDS: Final[tuple[EventKey, ...]] = tuple(k for k in REQUIRED_EVENT_KEYS if k != "EventProperties")


def strip_nulls(value: Any) -> Any:
    """A copy of ``value`` without ``None`` entries in any dict (lists keep their items).

    Dicts left empty by the stripping are dropped too (``location: {}`` would say nothing).
    """
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if v is None:
                continue
            v = strip_nulls(v)
            if isinstance(v, dict) and not v:
                continue
            out[k] = v
        return out
    if isinstance(value, (list, tuple)):
        return [strip_nulls(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    return value


@dataclass(frozen=True)
class ProfileRequest:
    """What one mapped Customer asks of Klaviyo.

    Attributes:
        attributes: profile attributes to write (no nulls, no flags).
        subscribe_lists: list names from ``LIST_<name>: true`` (consent given on each).
        add_lists: list names from ``UCLIST_<name>: true`` (membership only).
        consent: ``"subscribe"``, ``"unsubscribe"`` or ``None`` (leave consent alone:
            only when ``SubscribeProfile`` held something that is not a boolean).
        problems: texts describing flag values that could not be read.
    """

    attributes: dict[str, Any]
    subscribe_lists: tuple[str, ...] = ()
    add_lists: tuple[str, ...] = ()
    consent: Consent | None = UNSUBSCRIBE
    problems: tuple[str, ...] = field(default=())

    @property
    def email(self) -> str | None:
        value = self.attributes.get("email")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def phone_number(self) -> str | None:
        value = self.attributes.get("phone_number")
        return value if isinstance(value, str) and value.strip() else None

    def identifiers(self) -> dict[str, str]:
        """``{"email"?, "phone_number"?}``: what consent jobs identify the profile by."""
        return {k: v for k, v in (("email", self.email), ("phone_number", self.phone_number)) if v}


def _flag(value: Any) -> bool | None:
    try:
        return to_bool(value)
    except ValueError:
        return None


def profile_request(payload: Mapping[str, Any]) -> ProfileRequest:
    """Split a mapped profile payload into attributes, list flags and consent (see module doc)."""
    attributes: dict[str, Any] = {}
    subscribe_lists: list[str] = []
    add_lists: list[str] = []
    problems: list[str] = []
    consent: Consent | None = UNSUBSCRIBE  # unmapped SubscribeProfile unsubscribes (seed 000)
    for key, value in payload.items():
        if key == SUBSCRIBE_FLAG:
            if value is None:
                continue
            flag = _flag(value)
            if flag is None:
                consent = None
                problems.append(f"{SUBSCRIBE_FLAG} must be true or false, got {value!r}: consent left unchanged")
            else:
                consent = SUBSCRIBE if flag else UNSUBSCRIBE
        elif (list_key := list_flag(key)) is not None:
            prefix, name = list_key
            flag = _flag(value) if value is not None else False
            if flag is None:
                problems.append(f"{key} must be true or false, got {value!r}: list {name!r} skipped")
            elif flag and name:
                (add_lists if prefix == UCLIST_PREFIX else subscribe_lists).append(name)
        elif value is not None:
            attributes[key] = value
    return ProfileRequest(strip_nulls(attributes), tuple(subscribe_lists), tuple(add_lists), consent,
                          tuple(problems))


@dataclass(frozen=True)
class EventRequest:
    """One event to record: the arguments of ``KlaviyoClient.create_event``."""

    metric_name: str
    profile_id: str
    properties: dict[str, Any]
    unique_id: str
    value: float | None = None
    time: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`engine.klaviyo.KlaviyoClient.create_event`."""
        return {"metric_name": self.metric_name, "profile": self.profile_id, "properties": self.properties,
                "value": self.value, "unique_id": self.unique_id, "time": self.time}


def event_request(payload: Mapping[str, Any]) -> EventRequest:
    """Turn a mapped event payload into an :class:`EventRequest`.

    Raises:
        PayloadError: ProfileId, MetricName or UniqueId is blank, EventProperties is not a
            dict, or NumericValue is not a number.  (The collections mark these rows
            required, so the mapper normally reports them first.)
    """
    missing = [k for k in _REQUEST_NEEDS if payload.get(k) in (None, "")]
    if missing:
        raise PayloadError(f"no value for {', '.join(missing)}")
    props = payload.get("EventProperties")
    if props is None:
        props = {}
    if not isinstance(props, Mapping):
        raise PayloadError(f"EventProperties must be a dictionary, got {type(props).__name__}")
    properties = dict(props)
    for key, value in payload.items():
        if key not in EVENT_KEYS and value is not None:
            properties[key] = value
    value = payload.get("NumericValue")
    try:
        number = to_float(value)
    except (TypeError, ValueError):
        raise PayloadError(f"NumericValue must be a number, got {value!r}") from None
    time: Any = payload.get("Time")
    return EventRequest(
        metric_name=str(payload["MetricName"]), profile_id=str(payload["ProfileId"]),
        properties=strip_nulls(properties), unique_id=str(payload["UniqueId"]), value=number,
        time=None if time in (None, "") else (time.isoformat() if hasattr(time, "isoformat") else str(time)),
    )


__all__ = [
    "EventRequest", "ProfileRequest", "SUBSCRIBE", "UNSUBSCRIBE", "event_request",
    "profile_request", "strip_nulls",
]
