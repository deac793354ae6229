"""The engine's vocabulary: the enum-like keys as ``Literal`` types, the hub's records as
TypedDicts, and the one table of Klaviyo destinations.

Nothing here runs.  A seam that takes one of these keys is annotated with its type, so a typo
is a type error (``mypy --strict``) rather than a branch that never matches, and a list that
two modules need is written once, here.

Collection keys
    The values ``schemas/collection.schema.json`` allows for a collection's ``direction``,
    ``hub_entity``, ``klaviyo_resource``, ``action`` and ``status``, and for a row's ``type``,
    ``importance``, ``on_missing`` and ``expect``.
Outcomes
    What became of one record: the runner's :data:`MapStatus` (ok / filtered / invalid /
    failed) and the flows' :data:`FlowOutcome` (created, updated, ..., as the summaries count
    them); :data:`Consent` is what a profile's ``SubscribeProfile`` asks of Klaviyo.
Hub records
    :class:`Customer` (with its addresses, :class:`CustomerAddress`) and :class:`Transaction`
    (with its lines, :class:`TransactionLine`), field for field as the hub's own checks know them
    (engine/hub/_records.py).  Every field may be missing or ``None`` ("no value").
Klaviyo destinations
    What an outbound collection may write, and what each destination means: the table in
    the last section, above :data:`ProfileAttribute`.
    The compiler's destination check (engine/collection/compile.py) and the payload builder
    (engine/payloads.py) both read it; nothing else lists these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, TypedDict, get_args

# -- collection keys (schemas/collection.schema.json) ------------------------------------------

#: The two systems a record comes from or goes to (a collection's ``direction`` says which is which).
System = Literal["klaviyo", "hub"]
Direction = Literal["to_hub", "to_klaviyo"]
HubEntity = Literal["Customer", "CustomerAddress", "Transaction", "TransactionLine"]
KlaviyoResource = Literal["profile", "event"]
Action = Literal["add", "update"]
CollectionStatus = Literal["enabled", "disabled"]
RowType = Literal["field", "static", "formula"]
Importance = Literal["required", "recommended", "optional"]
OnMissing = Literal["omit", "null", "error"]
ExpectedType = Literal["string", "integer", "number", "boolean", "object", "array"]

# -- outcomes ------------------------------------------------------------------------------------

#: One record through one collection (engine/runner.py): the payload is ready, the filter left the
#: record out, the record cannot be mapped, or mapping it failed unexpectedly.
MapStatus = Literal["ok", "filtered", "invalid", "failed"]
#: One record through a flow (engine/flows/summary.py counts these).
FlowOutcome = Literal["created", "updated", "unchanged", "linked", "skipped", "invalid", "failed"]
#: What a profile's consent becomes (engine/payloads.py).
Consent = Literal["subscribe", "unsubscribe"]

# -- hub records (engine/hub/_records.py) ----------------------------------------------------------


class CustomerAddress(TypedDict, total=False):
    """A Customer's address; ``CreatedAt`` / ``UpdatedAt`` are accepted from an export and ignored."""

    Id: int
    CustomerId: int
    Address1: str | None
    Address2: str | None
    City: str | None
    Region: str | None
    PostalCode: str | None
    Country: str | None
    IsPrimaryBilling: bool | None
    IsPrimaryShipping: bool | None
    CreatedAt: str | None
    UpdatedAt: str | None


class Customer(TypedDict, total=False):
    """A hub Customer; a new one needs ``EmailAddress`` (valid, unique) and ``CustomerNumber``."""

    Id: int
    EmailAddress: str | None
    CustomerNumber: str | None
    FirstName: str | None
    LastName: str | None
    Company: str | None
    Comment: str | None
    Phone: str | None
    CustomFields: dict[str, Any] | None
    Addresses: list[CustomerAddress] | None
    CreatedAt: str | None
    UpdatedAt: str | None


class TransactionLine(TypedDict, total=False):
    """One line of a Transaction."""

    Id: int
    TransactionId: int
    Sku: str | None
    Description: str | None
    Qty: float | None
    UnitPrice: float | None
    ExtendedPrice: float | None


class Transaction(TypedDict, total=False):
    """A hub Transaction; it needs a ``TransactionNumber`` (unique)."""

    Id: int
    TransactionNumber: str | None
    CustomerId: int | None
    EmailAddress: str | None
    Total: float | None
    TransactionDate: str | None
    Status: str | None
    CustomFields: dict[str, Any] | None
    Lines: list[TransactionLine] | None
    CreatedAt: str | None
    UpdatedAt: str | None


#: The record shape of each hub entity a collection can name.
HUB_RECORDS: Final[Mapping[HubEntity, type]] = MappingProxyType({
    "Customer": Customer, "CustomerAddress": CustomerAddress, "Transaction": Transaction,
    "TransactionLine": TransactionLine,
})

# -- Klaviyo destinations: the one table ---------------------------------------------------------
#
# destination (klaviyo_resource)     what the payload builder makes of it
# ---------------------------------  ---------------------------------------------------------------
# <ProfileAttribute>       (profile) the profile attribute of that name
# location.<LocationField> (profile) the profile's location field
# properties.<name>        (profile) a custom profile property
# SubscribeProfile         (profile) true subscribes; false, or no value at all, unsubscribes
# LIST_<list name>         (profile) true: subscribe the profile to that list (with consent)
# UCLIST_<list name>       (profile) true: add the profile to that list, consent unchanged
# <EventKey>               (event)   ProfileId, MetricName, UniqueId, NumericValue, Time: the event's
#                                    own values; EventProperties: the properties dict
# <any other name>         (event)   an event property of that name (e.g. ValueCurrency)

ProfileAttribute = Literal["email", "phone_number", "external_id", "anonymous_id", "first_name", "last_name",
                           "organization", "title", "image", "locale"]
LocationField = Literal["address1", "address2", "city", "country", "region", "zip", "timezone", "ip", "latitude",
                        "longitude"]
ListPrefix = Literal["LIST_", "UCLIST_"]
EventKey = Literal["ProfileId", "EventProperties", "MetricName", "UniqueId", "NumericValue", "Time"]

PROFILE_ATTRIBUTES: Final[frozenset[ProfileAttribute]] = frozenset(get_args(ProfileAttribute))
PROFILE_LOCATION: Final = "location"
LOCATION_FIELDS: Final[frozenset[LocationField]] = frozenset(get_args(LocationField))
PROFILE_PROPERTIES: Final = "properties"
SUBSCRIBE_FLAG: Final = "SubscribeProfile"
LIST_PREFIX: Final[ListPrefix] = "LIST_"
UCLIST_PREFIX: Final[ListPrefix] = "UCLIST_"
LIST_PREFIXES: Final[tuple[ListPrefix, ...]] = get_args(ListPrefix)
EVENT_KEYS: Final[frozenset[EventKey]] = frozenset(get_args(EventKey))
#: No event is sent unless each of these has a value (seed 003's "required mappings").
REQUIRED_EVENT_KEYS: Final[tuple[EventKey, ...]] = ("ProfileId", "EventProperties", "MetricName", "UniqueId")


def list_flag(destination: str) -> tuple[ListPrefix, str] | None:
    """``("LIST_", "VIP")`` for ``LIST_VIP``, ``("UCLIST_", name)`` for ``UCLIST_<name>``; None for
    any other destination.  The list name may be empty (``LIST_``): callers decide what that means."""
    for prefix in LIST_PREFIXES:
        if destination.startswith(prefix):
            return prefix, destination[len(prefix):]
    return None


__all__ = [
    "Action", "CollectionStatus", "Consent", "Customer", "CustomerAddress", "Direction", "EVENT_KEYS", "EventKey",
    "ExpectedType", "FlowOutcome", "HUB_RECORDS", "HubEntity", "Importance", "KlaviyoResource", "LIST_PREFIX",
    "LIST_PREFIXES", "LOCATION_FIELDS", "ListPrefix", "LocationField", "MapStatus", "OnMissing", "PROFILE_ATTRIBUTES",
    "PROFILE_LOCATION", "PROFILE_PROPERTIES", "ProfileAttribute", "REQUIRED_EVENT_KEYS", "RowType", "SUBSCRIBE_FLAG",
    "System", "Transaction", "TransactionLine", "UCLIST_PREFIX", "list_flag",
]
