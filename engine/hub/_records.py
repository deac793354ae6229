"""The hub's record shapes and their checks.

Records are plain dicts with the seeds' PascalCase field names.  This module
knows, for each entity, which fields exist, their JSON types, and which are
required; :func:`check_fields` refuses a malformed record with a message that
names the field, and never mutates its input.  Values must also be storable:
integers within SQLite's 64-bit range (ids from 1), finite numbers, text without
lone surrogates (``"\ud800"`` cannot be encoded as UTF-8), and ``CustomFields``
nested at most :data:`MAX_DEPTH` levels.  Read-only fields a record may
carry back in from an export (``CreatedAt``, ``UpdatedAt``, ``CustomerId`` on a
nested address, ``TransactionId`` on a nested line) are accepted and ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from engine import catalog
from engine.errors import HubRecordError

SQLITE_MIN: Final = -(2**63)
SQLITE_MAX: Final = 2**63 - 1  # the largest integer SQLite stores, and so the largest hub Id
MAX_DEPTH: Final = 64  # nesting of lists/objects inside a value (CustomFields)
ID_FIELDS: Final = frozenset({"Id", "CustomerId", "TransactionId"})
_SURROGATE = re.compile("[\ud800-\udfff]")
_isfinite = math.isfinite

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


# Not settings.py _json_type: that one words a settings value for a person ("empty", "a mapping"),
# this one names the JSON type a hub record carries ("null", "object").
def json_type(value: Any) -> str:
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


def _shown_int(value: int) -> str:
    return str(value) if abs(value) < 10**40 else f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"


def _shown_key(key: Any) -> str:
    """A field name as it can be printed: escaped if it holds surrogates, cut when long."""
    text = str(key)
    if _SURROGATE.search(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 60 else text[:57] + "..."


def _surrogate_error(where: str, text: str) -> HubRecordError:
    found = _SURROGATE.search(text)
    code = ord(found.group()) if found else 0
    return HubRecordError(f"{where} contains a lone surrogate (\\u{code:04x}), which is not valid text")


def check_value(where: str, value: Any, *, is_id: bool = False) -> None:
    """Raise :class:`HubRecordError` unless ``value`` can be stored as it is.

    Integers must fit SQLite (ids: 1 to 2**63-1), floats must be finite, strings
    (and object keys) must be valid text; lists and objects are walked without
    recursion and may nest at most :data:`MAX_DEPTH` levels.
    """
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if len(path) > 120:
            path = path[:117] + "..."
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int):
            low = 1 if is_id and path == where else SQLITE_MIN
            if not low <= item <= SQLITE_MAX:
                raise HubRecordError(f"{path} must be between {low} and {SQLITE_MAX}, got {_shown_int(item)}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise HubRecordError(f"{path} must be a finite number, got {item}")
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                raise _surrogate_error(path, item)
        elif isinstance(item, (list, dict)):
            if depth >= MAX_DEPTH:
                raise HubRecordError(f"{path} is nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and _SURROGATE.search(key):
                        raise _surrogate_error(f"{path} key", key)
                    stack.append((f"{path}.{_shown_key(key)}", child, depth + 1))
            else:
                stack.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(item))


def check_fields(
    entity: str, record: Mapping[str, Any], fields: Mapping[str, tuple[type, ...]], where: str = ""
) -> None:
    """Raise :class:`HubRecordError` for an unknown field or a value of the wrong type.

    ``None`` is accepted for every field (it means "no value"); ``bool`` is not
    accepted where a number is expected, although Python counts it as an int.
    """
    if type(record) is not dict and not isinstance(record, Mapping):
        raise HubRecordError(f"{entity}{where} must be a JSON object, got {json_type(record)}")
    for key, value in record.items():
        types = fields.get(key)
        if types is None:
            valid = ", ".join(fields)
            raise HubRecordError(f"{entity}{where}: unknown field '{_shown_key(key)}' (valid: {valid})")
        cls = type(value)  # the common cases first, decided here
        if cls is str:
            if str in types and (value.isascii() or not _SURROGATE.search(value)):
                continue
        elif cls is float:
            if float in types and _isfinite(value):
                continue
        elif cls is int:
            if int in types and (1 if key in ID_FIELDS else SQLITE_MIN) <= value <= SQLITE_MAX:
                continue
        elif cls is list:
            if list in types:  # nested Addresses / Lines are checked field by field
                continue
        elif value is None or _plainly_storable(value, types, key):
            continue
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            raise HubRecordError(
                f"{entity}{where}.{key} must be {_type_name(types)}, got {json_type(value)}"
            )
        if not isinstance(value, list):  # nested Addresses / Lines are checked field by field
            check_value(f"{entity}{where}.{key}", value, is_id=key in ID_FIELDS)


def _plainly_storable(value: Any, types: tuple[type, ...], key: str) -> bool:
    """True when ``value`` is a plain scalar, or an object of plain scalars under text keys, that
    ``check_fields`` would accept for a field of ``types`` without walking it (the common case,
    decided in a few steps); False sends it through the full check, which decides and words any
    refusal."""
    cls = type(value)
    if cls not in types:
        return False
    if cls is int:
        number: int = value
        return (1 if key in ID_FIELDS else SQLITE_MIN) <= number <= SQLITE_MAX
    if cls is dict:
        return all(type(k) is str and _plain_scalar(k) and _plain_scalar(v) for k, v in value.items())
    return _plain_scalar(value)


def _plain_scalar(value: Any) -> bool:
    """True for None, a bool, a string without lone surrogates, an integer SQLite holds, or a finite float."""
    cls = type(value)
    if cls is str:
        return value.isascii() or not _SURROGATE.search(value)
    if cls is int:
        number: int = value
        return SQLITE_MIN <= number <= SQLITE_MAX
    if cls is float:
        return math.isfinite(value)
    return value is None or cls is bool


def check_customer(record: Mapping[str, Any], *, partial: bool = False) -> None:
    """Check a Customer (with nested Addresses); ``partial`` skips the required-field rule."""
    check_fields("Customer", record, CUSTOMER_FIELDS)
    if not partial or "EmailAddress" in record:
        if not (record.get("EmailAddress") or "").strip():
            raise HubRecordError(catalog.EMAIL_REQUIRED)
        check_email("Customer.EmailAddress", record["EmailAddress"])
    if not partial or "CustomerNumber" in record:
        if not (record.get("CustomerNumber") or "").strip():
            raise HubRecordError(catalog.CUSTOMER_NUMBER_REQUIRED)
    for i, address in enumerate(record.get("Addresses") or []):
        check_fields("Address", address, ADDRESS_FIELDS, f" Addresses[{i}]")


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_EMAIL = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _plain_email(text: str) -> bool:
    """True for the common ASCII address that ``email-validator`` certainly accepts: a dot-atom
    local part of at most 64 characters, an ASCII domain with an alphabetic top label, no
    special-use domain.  Anything else goes to the library (about 20x slower)."""
    if len(text) > 254 or not _PLAIN_EMAIL.fullmatch(text):
        return False
    local, _, domain = text.rpartition("@")
    if len(local) > 64:
        return False
    suffix = domain.lower()
    while suffix not in _SPECIAL_USE:  # the domain and each of its parents ("a.b.test", "b.test", "test")
        dot = suffix.find(".")
        if dot < 0:
            return True
        suffix = suffix[dot + 1:]
    return False


def check_email(path: str, value: str) -> None:
    """Refuse an email address that is not valid (syntax only: no DNS lookup).

    The specification requires an email "present, valid, and unique within the company"
    (seed 001); its message for an unusable email is :data:`catalog.EMAIL_REQUIRED`, and
    the detail says what is wrong, e.g. ``Customer.EmailAddress 'bad-email' is not a valid
    email address: An email address must have an @-sign.``
    """
    text = value.strip()
    if _plain_email(text):
        return
    try:
        validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise HubRecordError(catalog.EMAIL_REQUIRED,
                             detail=f"{path} {shown!r} is not a valid email address: {exc}") from None


def check_address(address: Mapping[str, Any]) -> None:
    """Check one CustomerAddress."""
    check_fields("Address", address, ADDRESS_FIELDS)


def check_transaction(record: Mapping[str, Any]) -> None:
    """Check a Transaction (with nested Lines); a transaction number is required."""
    check_fields("Transaction", record, TRANSACTION_FIELDS)
    if not (record.get("TransactionNumber") or "").strip():
        raise HubRecordError("A transaction number is required")
    if (record.get("EmailAddress") or "").strip():
        check_email("Transaction.EmailAddress", record["EmailAddress"])
    for i, line in enumerate(record.get("Lines") or []):
        check_fields("TransactionLine", line, LINE_FIELDS, f" Lines[{i}]")


def address_key(address: Mapping[str, Any]) -> tuple[str, ...]:
    """The identity of an address for duplicate checks (missing and empty compare equal)."""
    return tuple((address.get(f) or "") for f in ADDRESS_IDENTITY)
