"""Behaviour of the formula helper functions (engine.formula.helpers)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from engine.errors import FormulaRuntimeError, PathNotFoundError
from engine.formula.helpers import (
    HELPERS,
    MISSING,
    bind_helpers,
    coalesce,
    e164,
    get,
    get_customer_id_by_email,
    get_external_id,
    is_blank,
    iso_date,
    lower,
    now_utc,
    to_bool,
    to_decimal,
    to_float,
    to_int,
    to_str,
    trim,
    upper,
)

DATA = {"location": {"address1": "1 Main"}, "lines": [{"sku": "A"}, {"sku": "B"}],
        "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}


@pytest.mark.parametrize("path,expected", [
    ("location.address1", "1 Main"),
    ("lines[1].sku", "B"),
    ("lines[-1].sku", "B"),
    ("subscriptions.email.marketing.consent", "SUBSCRIBED"),
])
def test_get_reads_dotted_and_indexed_paths(path: str, expected: Any) -> None:
    """get() follows dots and [index] steps through dicts and lists."""
    assert expected == get(DATA, path)


@pytest.mark.parametrize("path,step", [
    ("location.city", "city"), ("lines[5].sku", "[5]"), ("nothing.at.all", "nothing"),
])
def test_get_missing_path_raises_with_the_step(path: str, step: str) -> None:
    """An absent path raises PathNotFoundError (M010) naming the path and the missing step."""
    with pytest.raises(PathNotFoundError) as info:
        get(DATA, path)
    assert ("M010", path, step) == (info.value.code, info.value.path, info.value.step)


def test_get_returns_default_when_given() -> None:
    """With a default, an absent path (including a None on the way) gives the default."""
    assert "d" == get({"a": None}, "a.b", "d")
    assert None is get(DATA, "location.zip", None)
    assert MISSING is not None


@pytest.mark.parametrize("phone,region,expected", [
    ("(415) 555-2671", "US", "+14155552671"),
    ("+44 20 7946 0958", "US", "+442079460958"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("12", "US", None), ("not a phone", "US", None), ("", "US", None), (None, "US", None),
])
def test_e164_normalises_or_gives_none(phone: Any, region: str, expected: Any) -> None:
    """e164() returns the E.164 form, or None when the number cannot be normalised."""
    assert expected == e164(phone, region)


@pytest.mark.parametrize("fn,value,expected", [
    (is_blank, "  ", True), (is_blank, [], True), (is_blank, 0, False), (is_blank, None, True),
    (to_str, None, None), (to_str, True, "true"), (to_str, 12, "12"),
    (to_int, "12", 12), (to_int, "12.0", 12), (to_int, "", None), (to_int, 3.0, 3),
    (to_float, " 1.5 ", 1.5), (to_float, None, None),
    (to_decimal, "9.50", Decimal("9.50")), (to_decimal, 0.1, Decimal("0.1")),
    (to_bool, "TRUE", True), (to_bool, "false", False), (to_bool, 1, True), (to_bool, "0", False),
    (to_bool, None, None),
    (trim, "  a ", "a"), (upper, "a", "A"), (lower, "A", "a"), (lower, None, None),
    (iso_date, "2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
    (iso_date, "2024-05-01", "2024-05-01"), (iso_date, "", None),
])
def test_conversions(fn: Any, value: Any, expected: Any) -> None:
    """Each conversion helper maps its input to the documented native value."""
    result = fn(value)
    assert expected == result
    assert type(expected) is type(result)


@pytest.mark.parametrize("fn,value", [(to_int, "2.5"), (to_int, "abc"), (to_bool, "maybe"),
                                      (to_bool, 2), (to_decimal, "nan"), (iso_date, "May 1")])
def test_conversions_refuse_garbage(fn: Any, value: Any) -> None:
    """A value a conversion cannot represent raises ValueError instead of guessing."""
    with pytest.raises(ValueError):
        fn(value)


def test_coalesce_skips_blanks() -> None:
    """coalesce() returns the first non-blank value, or None."""
    assert 0 == coalesce(None, "", 0, 1)
    assert None is coalesce(None, " ")


def test_now_utc_is_iso_utc() -> None:
    """now_utc() is an ISO 8601 string in UTC."""
    assert now_utc().endswith("+00:00")


def test_unbound_context_helpers_need_a_resolver() -> None:
    """The default context helpers raise 'no resolver available' (F102)."""
    for fn, args in ((get_external_id, (1, "Customer")), (get_customer_id_by_email, ("a@b",))):
        with pytest.raises(FormulaRuntimeError) as info:
            fn(*args)
        assert "F102" == info.value.code


def test_bind_helpers_uses_the_resolver() -> None:
    """bind_helpers() returns the table with the context helpers calling the resolver."""

    class Resolver:
        def get_external_id(self, entity: str, hub_id: Any) -> str | None:
            return f"{entity}:{hub_id}"

        def get_customer_id_by_email(self, email: str) -> str | None:
            return "42" if email == "a@b.c" else None

    table = bind_helpers(Resolver())
    assert set(HELPERS) == set(table)
    assert "Customer:7" == table["get_external_id"](7, "Customer")
    assert None is table["get_external_id"](None, "Customer")
    assert "42" == table["get_customer_id_by_email"]("a@b.c")
    assert None is table["get_customer_id_by_email"]("")


def test_present_is_true_only_when_every_path_has_a_value() -> None:
    """present() checks every path for a non-blank value."""
    from engine.formula.helpers import present

    loc = {"address1": "1 Main St", "city": " ", "country": "US"}
    assert present(loc, "address1", "country") is True
    assert present(loc, "address1", "city") is False
    assert present(None, "address1") is False
    assert present({"a": {"b": [1]}}, "a.b[0]") is True


def test_join_ids_builds_an_identity_only_from_present_parts() -> None:
    """join_ids joins every part, and gives None when any part is blank."""
    from engine.formula.helpers import join_ids

    assert "55260-901" == join_ids(55260, 901)
    assert "a/b" == join_ids("a", "b", sep="/")
    assert join_ids(55260, None) is None
    assert join_ids("", 3) is None
