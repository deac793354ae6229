"""The shapes of source records: which names a formula may read for each kind of record.

A collection's source is the Klaviyo resource (direction ``to_hub``) or the
hub entity (direction ``to_klaviyo``).  ``validate`` reports a formula that
reads a name not listed here (a typo such as ``EmailAdress`` would otherwise
be ``None`` at run time and silently drop a value).  Custom data lives under
``properties`` (Klaviyo) or ``CustomFields`` (hub), which formulas read with
``get()``.
"""

from __future__ import annotations

from typing import Final

KLAVIYO_FIELDS: Final[dict[str, frozenset[str]]] = {
    # A Klaviyo profile as the engine sees it: the JSON:API resource's attributes plus its id.
    "profile": frozenset(
        {
            "id", "email", "phone_number", "external_id", "anonymous_id", "first_name", "last_name",
            "organization", "title", "image", "locale", "created", "updated", "last_event_date",
            "location", "properties", "subscriptions", "predictive_analytics",
        }
    ),
    "event": frozenset({"id", "metric", "profile", "properties", "time", "value", "unique_id", "datetime", "uuid"}),
}

HUB_FIELDS: Final[dict[str, frozenset[str]]] = {
    "Customer": frozenset(
        {
            "Id", "EmailAddress", "CustomerNumber", "FirstName", "LastName", "Company", "Comment",
            "Phone", "CustomFields", "Addresses", "CreatedAt", "UpdatedAt",
        }
    ),
    "CustomerAddress": frozenset(
        {
            "Id", "CustomerId", "Address1", "Address2", "City", "Region", "PostalCode", "Country",
            "IsPrimaryBilling", "IsPrimaryShipping",
        }
    ),
    "Transaction": frozenset(
        {
            "Id", "TransactionNumber", "CustomerId", "EmailAddress", "Total", "TransactionDate",
            "Status", "Lines", "CustomFields", "CreatedAt", "UpdatedAt",
        }
    ),
    "TransactionLine": frozenset(
        {"Id", "TransactionId", "Sku", "Description", "Qty", "UnitPrice", "ExtendedPrice", "LineNumber"}
    ),
}

#: Names every formula may read besides the source record's fields.
SCOPE_NAMES: Final = frozenset({"record", "parent", "parent_mapped", "existing", "settings"})
