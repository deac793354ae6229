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

import re
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Generic, Protocol, TypeVar

import phonenumbers
import pycountry

from engine.errors import NoResolverError, NumberLimitError, PathNotFoundError
from engine.formula.guards import Limits, shorten

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class ByteBoundedCache(Generic[_K, _V]):
    """A least-recently-used cache whose keys and values are bounded in (estimated) bytes.

    ``size(key, value)`` estimates one entry; an entry larger than ``max_entry_bytes`` is never
    stored, and the oldest entries go once the total passes ``max_bytes``.  Not thread-safe
    beyond what a dict gives (a lost update only costs a recomputation).
    """

    def __init__(self, max_bytes: int, max_entry_bytes: int, size: Callable[[_K, _V], int]) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self._size = size
        self._data: OrderedDict[_K, tuple[_V, int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: _K) -> _V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        return hit[0]

    def put(self, key: _K, value: _V) -> None:
        n = self._size(key, value)
        if n > self.max_entry_bytes or key in self._data:
            return
        self._data[key] = (value, n)
        self.bytes += n
        while self.bytes > self.max_bytes and self._data:
            _, (_, old) = self._data.popitem(last=False)
            self.bytes -= old

    def __len__(self) -> int:
        return len(self._data)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def _path_bytes(path: str, steps: tuple[str | int, ...]) -> int:
    return 2 * len(path) + 100 + sum(60 + (len(s) if isinstance(s, str) else 0) for s in steps)


#: Parsed paths: formulas call get() with the same few literal paths.  At most 1 MB in all,
#: and a path longer than 256 characters (usually built from data) is never kept.
PATH_CACHE: ByteBoundedCache[str, tuple[str | int, ...]] = ByteBoundedCache(1 << 20, 2048, _path_bytes)


def _parse_path(path: str) -> tuple[str | int, ...]:
    """Split a path into steps (cached, bounded in bytes)."""
    cached = PATH_CACHE.get(path)
    if cached is not None:
        return cached
    if not isinstance(path, str):
        raise TypeError(f"a path must be a string, not {type(path).__name__}")
    steps: list[str | int] = []
    pos = 0
    for m in _STEP.finditer(path):
        between = path[pos:m.start()]
        if between not in ("", "."):
            raise ValueError(f"malformed path {shorten(path)} at {shorten(between)}")
        steps.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not steps or path[pos:] not in ("",):
        raise ValueError(f"malformed path {shorten(path)}")
    out = tuple(steps)
    if len(path) <= 256:
        PATH_CACHE.put(path, out)
    return out


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
            raise PathNotFoundError(f"path {shorten(path)} not found: no {shorten(shown)} at step {i + 1}",
                                    path=path if len(path) <= 200 else shorten(path),
                                    step=str(shown) if len(str(shown)) <= 200 else shorten(shown))
        current = found
    return current


# ------------------------------------------------------------------ phone numbers
#: Longest phone text e164() parses; longer input is refused before parsing (with a warning).
MAX_PHONE_LENGTH = 64
#: The region of numbers without ``+`` when neither the record nor the settings name one.
DEFAULT_PHONE_REGION = "US"
_PHONE_CHARS = frozenset("0123456789+ \t().-/")
_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)
#: Country texts already resolved to a region (or to "" for unknown): bounded in bytes.
REGION_CACHE: ByteBoundedCache[str, str] = ByteBoundedCache(64 << 10, 512, lambda k, v: 2 * len(k) + 120)


def phone_region(country: Any) -> str | None:
    """The phonenumbers region of a country: an ISO code (``"GB"``, ``"gbr"``) or a name
    (``"United Kingdom"``); None when blank or not a country phonenumbers knows."""
    if not isinstance(country, str):
        return None
    text = country.strip()
    if not text or len(text) > 64:
        return None
    upper_text = text.upper()
    if upper_text in _REGIONS:
        return upper_text
    cached = REGION_CACHE.get(upper_text)
    if cached is None:
        try:
            cached = pycountry.countries.lookup(text).alpha_2
        except LookupError:
            cached = ""
        cached = cached if cached in _REGIONS else ""
        REGION_CACHE.put(upper_text, cached)
    return cached or None


def is_phone_region(region: Any) -> bool:
    """True when ``region`` is an ISO region code phonenumbers knows (``"US"``, ``"GB"``)."""
    return isinstance(region, str) and region in _REGIONS


#: Collects warnings raised by helpers while one record is mapped (set by the mapper).
WARNINGS: ContextVar[list[tuple[str, str]] | None] = ContextVar("formula_warnings", default=None)


def warn(code: str, message: str) -> None:
    """Record a warning for the record being mapped (no-op outside a mapping)."""
    sink = WARNINGS.get()
    if sink is not None and len(sink) < 20:
        sink.append((code, message))


def e164(phone: Any, country: Any = None, default: Any = None) -> str | None:
    """Normalise a phone number to E.164 (``"+442079460018"``), or None when it cannot be.

    A number written without ``+`` is read as a number of ``country`` (an ISO code or a country
    name, e.g. the primary billing address's ``Country``), else of ``default`` (the
    ``default_phone_region`` setting), else of the US.  Linear in the input: text longer than
    :data:`MAX_PHONE_LENGTH` characters is refused before parsing, with warning W010.
    """
    if phone is None or isinstance(phone, bool):
        return None
    if isinstance(phone, int):
        text = str(phone) if phone.bit_length() < 256 else ""
    elif isinstance(phone, str):
        if len(phone) > MAX_PHONE_LENGTH:
            # a helper's warning code is data: the mapper wraps it in a MappingWarning, not a class a code
            warn("W010", f"phone number refused: {len(phone)} characters is longer than "
                         f"{MAX_PHONE_LENGTH}; the value is left out")
            return None
        text = phone.strip()
    else:
        return None
    # Cheap refusal first: a phone number holds only digits, spaces, + ( ) - . / and at least
    # three digits (customer numbers such as "C-1001" or "N/A" never reach the parser).
    if not text or not _PHONE_CHARS.issuperset(text) or sum(map(str.isdigit, text)) < 3:
        return None
    region = phone_region(country) or phone_region(default) or DEFAULT_PHONE_REGION
    return _e164_of(text, region)


#: Phone texts already normalised, per region: parsing and validating costs ~30 us, a hit
#: well under one.  Keys are at most MAX_PHONE_LENGTH characters, so the cache stays a few MB.
PHONE_CACHE_SIZE = 16384


@lru_cache(maxsize=PHONE_CACHE_SIZE)
def _e164_of(text: str, region: str) -> str | None:
    """``text`` (stripped, pre-checked) as E.164 when it is a valid number read in ``region``."""
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


#: Most digits to_int() turns into an int (Limits.max_digits, Python's own str->int bound).
MAX_DIGITS = Limits().max_digits


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
    if abs(number.adjusted()) + len(number.as_tuple().digits) > MAX_DIGITS:
        raise NumberLimitError(f"number too large: {shorten(value)} has more than {MAX_DIGITS} digits")
    if number != number.to_integral_value():
        raise ValueError(f"{shorten(value)} is not a whole number")
    return int(number)


def to_float(value: Any) -> float | None:
    """A float from a number or numeric string; None for blank. Raises ValueError otherwise."""
    if is_blank(value):
        return None
    if isinstance(value, str):
        return float(value.strip())
    if not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{shorten(value)} is not a number")
    return float(value)


def to_decimal(value: Any) -> Decimal | None:
    """A Decimal from a number or numeric string (floats via their repr); None for blank."""
    if is_blank(value):
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        return Decimal(int(value))
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"{shorten(value)} is not a number")
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        result = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{shorten(value)} is not a number") from None
    if not result.is_finite():
        raise ValueError(f"{shorten(value)} is not a finite number")
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
    raise ValueError(f"{shorten(value)} is not a boolean")


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
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def iso_date(value: Any) -> str | None:
    """An ISO 8601 string from a datetime/date or an ISO-like string; None for blank.

    ``"2024-05-01T12:00:00Z"`` -> ``"2024-05-01T12:00:00+00:00"``; ``"2024-05-01"`` stays a
    date.  Raises ValueError for text that is not a date.
    """
    if is_blank(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"{shorten(value)} is not a date")
    text = value.strip()
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
    raise NoResolverError("no resolver available: this helper needs the hub or Klaviyo; "
                          "evaluate with functions=bind_helpers(resolver)")


def get_external_id(hub_id: Any, entity: str) -> str | None:
    """The external id linked to a hub record (the seeds' GetExternalIdAsync). Needs a resolver."""
    return _no_resolver()  # type: ignore[no-any-return]


def get_customer_id_by_email(email: str) -> str | None:
    """The Klaviyo profile id for this email (the seeds' GetCustomerIdByEmail). Needs a resolver."""
    return _no_resolver()  # type: ignore[no-any-return]


HELPERS: dict[str, Callable[..., Any]] = {
    "get": get, "e164": e164, "is_blank": is_blank, "present": present, "join_ids": join_ids, "coalesce": coalesce,
    "to_str": to_str,
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
