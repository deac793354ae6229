"""The helper functions formulas may call, named as formulas spell them.

:data:`HELPERS` is the default table of :class:`engine.formula.FormulaEngine`.  Every helper is
a plain function of plain values.  Two helpers reach the hub or Klaviyo and therefore need a
:class:`Resolver`: ``get_external_id`` (the seeds' ``GetExternalIdAsync``) and
``get_customer_id_by_email`` (``GetCustomerIdByEmail``).  In :data:`HELPERS` they raise
"no resolver available"; :func:`bind_helpers` returns the table with them bound to a resolver.
Pass that table per evaluation (``compiled.evaluate(scope, functions=bind_helpers(r))``), so
formulas are compiled once and each run brings its own resolver.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Protocol

import phonenumbers

from engine.errors import FormulaRuntimeError, PathNotFoundError


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


@functools.lru_cache(maxsize=4096)
def _parse_path(path: str) -> tuple[str | int, ...]:
    """Split a path into steps once; formulas call get() with the same few literal paths."""
    steps: list[str | int] = []
    pos = 0
    for m in _STEP.finditer(path):
        between = path[pos:m.start()]
        if between not in ("", "."):
            raise ValueError(f"malformed path {path!r} at {between!r}")
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not steps or path[pos:] not in ("",):
        raise ValueError(f"malformed path {path!r}")
    return tuple(steps)


def get(obj: Any, path: str, default: Any = MISSING) -> Any:
    """Read a dotted/indexed path: ``get(record, "location.address1")``, ``get(x, "lines[0].sku")``.

    Returns ``default`` when a step is absent (a missing key, an index out of range, or a
    ``None`` on the way).  Without a default, raises :class:`PathNotFoundError` (code M010)
    naming the path and the missing step.
    """
    current = obj
    for i, step in enumerate(_parse_path(path)):
        found = MISSING
        if isinstance(step, int):
            if isinstance(current, (list, tuple)) and -len(current) <= step < len(current):
                found = current[step]
        elif isinstance(current, dict) and step in current:
            found = current[step]
        if found is MISSING:
            if default is not MISSING:
                return default
            shown = f"[{step}]" if isinstance(step, int) else step
            raise PathNotFoundError(f"path {path!r} not found: no {shown!r} at step {i + 1}",
                                    path=path, step=str(shown))
        current = found
    return current


_PHONE_SHAPE = re.compile(r"^\+?[\d\s().\-/]*\d{3}[\d\s().\-/]*$")


def e164(phone: Any, region: str = "US") -> str | None:
    """Normalise a phone number to E.164 (``"+15551234567"``), or None when it cannot be.

    ``region`` is the default country for numbers written without a ``+`` prefix.
    """
    if phone is None or isinstance(phone, bool):
        return None
    text = str(phone).strip()
    # Cheap refusal first: a phone number holds only digits, spaces, + ( ) - . / (customer
    # numbers such as "C-1001" or "N/A" never reach the parser).
    if not text or not _PHONE_SHAPE.match(text):
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_blank(value: Any) -> bool:
    """True for None, an empty or whitespace-only string, and an empty list/dict/tuple/set."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, dict, tuple, set)):
        return not value
    return False


def present(obj: Any, *paths: str) -> bool:
    """True when every path has a value that is not blank: ``present(location, "address1",
    "city", "country")``. One call instead of a chain of ``not is_blank(get(...))``."""
    for path in paths:
        if is_blank(get(obj, path, None)):
            return False
    return True


def join_ids(*parts: Any, sep: str = "-") -> str | None:
    """A deterministic identity from its parts: ``join_ids(55260, 901)`` is ``"55260-901"``;
    None when any part is blank, so an identity is never built from a missing id."""
    for part in parts:
        if is_blank(part):
            return None
    return sep.join(str(p) for p in parts)


def coalesce(*values: Any) -> Any:
    """The first value that is not blank (see :func:`is_blank`), else None."""
    for value in values:
        if not is_blank(value):
            return value
    return None


def to_str(value: Any) -> str | None:
    """``str(value)``, but None stays None and ``2.0`` stays ``"2.0"``; booleans give "true"/"false"."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_int(value: Any) -> int | None:
    """An int from an int, an integral float/Decimal or a numeric string; None for blank.

    Raises ValueError for anything else (``"abc"``, ``2.5``).
    """
    if is_blank(value):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    number = to_decimal(value)
    assert number is not None
    if number != number.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def to_float(value: Any) -> float | None:
    """A float from a number or numeric string; None for blank. Raises ValueError otherwise."""
    if is_blank(value):
        return None
    if isinstance(value, str):
        return float(value.strip())
    return float(value)


def to_decimal(value: Any) -> Decimal | None:
    """A Decimal from a number or numeric string (floats via their repr); None for blank."""
    if is_blank(value):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        return Decimal(int(value))
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        result = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return result


_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off", ""})


def to_bool(value: Any) -> bool | None:
    """A bool from ``"TRUE"``/``"false"``/``"yes"``/``"no"``/``1``/``0``...; None stays None.

    Raises ValueError for anything it does not recognise (``"maybe"``, ``2``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{value!r} is not a boolean")


def trim(value: Any) -> Any:
    """Strip surrounding whitespace from a string; None and other values pass through."""
    return value.strip() if isinstance(value, str) else value


def upper(value: Any) -> Any:
    """Upper-case a string; None and other values pass through."""
    return value.upper() if isinstance(value, str) else value


def lower(value: Any) -> Any:
    """Lower-case a string; None and other values pass through."""
    return value.lower() if isinstance(value, str) else value


def now_utc() -> str:
    """The current UTC time as ISO 8601 with seconds: ``"2024-05-01T12:00:00+00:00"``."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def iso_date(value: Any) -> str | None:
    """An ISO 8601 string from a datetime/date or an ISO-like string; None for blank.

    ``"2024-05-01T12:00:00Z"`` -> ``"2024-05-01T12:00:00+00:00"``; ``"2024-05-01"`` stays a
    date.  Raises ValueError for text that is not a date.
    """
    if is_blank(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    text = str(value).strip()
    if len(text) == 10:
        return date.fromisoformat(text).isoformat()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()


class Resolver(Protocol):
    """How the context helpers reach the hub and Klaviyo. Later issues implement it.

    Contract: both methods are synchronous, return None when nothing is found, and raise a
    :class:`~engine.errors.KlaviyoSyncError` subclass when the lookup itself fails.
    """

    def get_external_id(self, entity: str, hub_id: Any) -> str | None:
        """The external (Klaviyo) id linked to hub record ``hub_id`` of ``entity``."""
        ...

    def get_customer_id_by_email(self, email: str) -> str | None:
        """The Klaviyo profile id of the customer whose email is ``email`` (the seeds'
        GetCustomerIdByEmail, the ProfileId formula's fallback when no link exists)."""
        ...


def _no_resolver(*_args: Any, **_kwargs: Any) -> Any:
    raise FormulaRuntimeError("no resolver available: this helper needs the hub or Klaviyo; "
                              "evaluate with functions=bind_helpers(resolver)", code="F102")


def get_external_id(hub_id: Any, entity: str) -> str | None:
    """The external id linked to a hub record (the seeds' GetExternalIdAsync). Needs a resolver."""
    return _no_resolver()  # type: ignore[no-any-return]


def get_customer_id_by_email(email: str) -> str | None:
    """The Klaviyo profile id for this email (the seeds' GetCustomerIdByEmail). Needs a resolver."""
    return _no_resolver()  # type: ignore[no-any-return]


HELPERS: dict[str, Callable[..., Any]] = {
    "get": get, "e164": e164, "is_blank": is_blank, "present": present, "join_ids": join_ids, "coalesce": coalesce, "to_str": to_str,
    "to_int": to_int, "to_float": to_float, "to_decimal": to_decimal, "to_bool": to_bool,
    "trim": trim, "upper": upper, "lower": lower, "now_utc": now_utc, "iso_date": iso_date,
    "get_external_id": get_external_id, "get_customer_id_by_email": get_customer_id_by_email,
}


def bind_helpers(resolver: Resolver) -> dict[str, Callable[..., Any]]:
    """:data:`HELPERS` with ``get_external_id``/``get_customer_id_by_email`` bound to ``resolver``."""

    def bound_get_external_id(hub_id: Any, entity: str) -> str | None:
        """The external id linked to a hub record (the seeds' GetExternalIdAsync)."""
        if hub_id is None:
            return None
        return resolver.get_external_id(entity, hub_id)

    def bound_get_customer_id_by_email(email: str) -> str | None:
        """The Klaviyo profile id for this email (the seeds' GetCustomerIdByEmail)."""
        if is_blank(email):
            return None
        return resolver.get_customer_id_by_email(email)

    return {**HELPERS, "get_external_id": bound_get_external_id,
            "get_customer_id_by_email": bound_get_customer_id_by_email}
