"""The shapes of source records: which names a formula may read for each kind of record.

A collection's source is the Klaviyo resource (direction ``to_hub``) or the
hub entity (direction ``to_klaviyo``).  ``validate`` reports a formula that
reads a name not listed here (a typo such as ``EmailAdress`` would otherwise
be ``None`` at run time and silently drop a value).  Custom data lives under
``properties`` (Klaviyo) or ``CustomFields`` (hub), which formulas read with
``get()``.

The hub entities' fields are their records' (:data:`engine.vocab.HUB_RECORDS`), and a
profile's writable attributes are the destination table's (:data:`engine.vocab.PROFILE_ATTRIBUTES`):
neither is listed twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from engine.vocab import (
    HUB_RECORDS,
    PROFILE_ATTRIBUTES,
    PROFILE_LOCATION,
    PROFILE_PROPERTIES,
    HubEntity,
    KlaviyoResource,
)

KLAVIYO_FIELDS: Final[Mapping[KlaviyoResource, frozenset[str]]] = MappingProxyType({
    # A Klaviyo profile as the engine sees it: the JSON:API resource's attributes plus its id.
    "profile": frozenset(PROFILE_ATTRIBUTES) | {
        "id", "created", "updated", "last_event_date", PROFILE_LOCATION, PROFILE_PROPERTIES, "subscriptions",
        "predictive_analytics",
    },
    "event": frozenset({"id", "metric", "profile", "properties", "time", "value", "unique_id", "datetime", "uuid"}),
})

HUB_FIELDS: Final[Mapping[HubEntity, frozenset[str]]] = MappingProxyType(
    {entity: frozenset(record.__annotations__) for entity, record in HUB_RECORDS.items()})

#: Names every formula may read besides the source record's fields.
SCOPE_NAMES: Final = frozenset({"record", "parent", "parent_mapped", "existing", "settings"})
