"""The hub's record shapes and their checks.

Records are plain dicts with the seeds' PascalCase field names.  This module
knows, for each entity, which fields exist, their JSON types, and which are
required; :func:`check_record` refuses a malformed record with a message that
names the field, and never mutates its input.  Read-only fields a record may
carry back in from an export (``CreatedAt``, ``UpdatedAt``, ``CustomerId`` on a
nested address, ``TransactionId`` on a nested line) are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from engine import catalog
from engine.errors import HubRecordError

_NUMBER = (int, float)
_STR = (str,)

CUSTOMER_FIELDS: Final[dict[str, tuple[type, ...]]] = {
    "Id": (int,),
    "EmailAddress": _STR,
    "CustomerNumber": _STR,
    "FirstName": _STR,
    "LastName": _STR,
    "Company": _STR,
    "Comment": _STR,
    "Phone": _STR,
    "CustomFields": (dict,),
    "Addresses": (list,),
    "CreatedAt": _STR,
    "UpdatedAt": _STR,
}

ADDRESS_FIELDS: Final[dict[str, tuple[type, ...]]] = {
    "Id": (int,),
    "CustomerId": (int,),
    "Address1": _STR,
    "Address2": _STR,
    "City": _STR,
    "Region": _STR,
    "PostalCode": _STR,
    "Country": _STR,
    "IsPrimaryBilling": (bool,),
    "IsPrimaryShipping": (bool,),
    "CreatedAt": _STR,
    "UpdatedAt": _STR,
}

# The fields that make two addresses "the same address" for the inbound
# exact-match duplicate check (the flags are not part of an address's identity).
ADDRESS_IDENTITY: Final = ("Address1", "Address2", "City", "Region", "PostalCode", "Country")

TRANSACTION_FIELDS: Final[dict[str, tuple[type, ...]]] = {
    "Id": (int,),
    "TransactionNumber": _STR,
    "CustomerId": (int,),
    "EmailAddress": _STR,
    "Total": _NUMBER,
    "TransactionDate": _STR,
    "Status": _STR,
    "CustomFields": (dict,),
    "Lines": (list,),
    "CreatedAt": _STR,
    "UpdatedAt": _STR,
}

LINE_FIELDS: Final[dict[str, tuple[type, ...]]] = {
    "Id": (int,),
    "TransactionId": (int,),
    "Sku": _STR,
    "Description": _STR,
    "Qty": _NUMBER,
    "UnitPrice": _NUMBER,
    "ExtendedPrice": _NUMBER,
}

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               dict: "an object", list: "a list"}


def _type_name(types: tuple[type, ...]) -> str:
    if types == _NUMBER:
        return "a number"
    return " or ".join(_TYPE_NAMES[t] for t in types)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_fields(
    entity: str, record: Mapping[str, Any], fields: Mapping[str, tuple[type, ...]], where: str = ""
) -> None:
    """Raise :class:`HubRecordError` for an unknown field or a value of the wrong type.

    ``None`` is accepted for every field (it means "no value"); ``bool`` is not
    accepted where a number is expected, although Python counts it as an int.
    """
    if not isinstance(record, Mapping):
        raise HubRecordError(f"{entity}{where} must be a JSON object, got {_json_type(record)}")
    for key, value in record.items():
        types = fields.get(key)
        if types is None:
            valid = ", ".join(fields)
            raise HubRecordError(f"{entity}{where}: unknown field '{key}' (valid: {valid})")
        if value is None:
            continue
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            raise HubRecordError(
                f"{entity}{where}.{key} must be {_type_name(types)}, got {_json_type(value)}"
            )


def check_customer(record: Mapping[str, Any], *, partial: bool = False) -> None:
    """Check a Customer (with nested Addresses); ``partial`` skips the required-field rule."""
    check_fields("Customer", record, CUSTOMER_FIELDS)
    if not partial or "EmailAddress" in record:
        if not (record.get("EmailAddress") or "").strip():
            raise HubRecordError(catalog.EMAIL_REQUIRED)
    if not partial or "CustomerNumber" in record:
        if not (record.get("CustomerNumber") or "").strip():
            raise HubRecordError(catalog.CUSTOMER_NUMBER_REQUIRED)
    for i, address in enumerate(record.get("Addresses") or []):
        check_fields("Address", address, ADDRESS_FIELDS, f" Addresses[{i}]")


def check_address(address: Mapping[str, Any]) -> None:
    """Check one CustomerAddress."""
    check_fields("Address", address, ADDRESS_FIELDS)


def check_transaction(record: Mapping[str, Any]) -> None:
    """Check a Transaction (with nested Lines); a transaction number is required."""
    check_fields("Transaction", record, TRANSACTION_FIELDS)
    if not (record.get("TransactionNumber") or "").strip():
        raise HubRecordError("A transaction number is required")
    for i, line in enumerate(record.get("Lines") or []):
        check_fields("TransactionLine", line, LINE_FIELDS, f" Lines[{i}]")


def address_key(address: Mapping[str, Any]) -> tuple[str, ...]:
    """The identity of an address for duplicate checks (missing and empty compare equal)."""
    return tuple((address.get(f) or "") for f in ADDRESS_IDENTITY)
