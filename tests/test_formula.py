"""Behaviour of the formula language: compile once, evaluate many times."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest

from engine.errors import FormulaRuntimeError, FormulaSyntaxError, PathNotFoundError
from engine.formula import CompiledFormula, FormulaEngine, Limits
from engine.formula.helpers import bind_helpers

CUSTOMER_BLOCK = """\
customer_id = get_external_id(CustomerId, "Customer")
if not customer_id:
    return get_customer_id_by_email(EmailAddress)
return customer_id"""

PROPS_BLOCK = """\
props = {"Email": EmailAddress, "Order": TransactionNumber}
if Total is not None:
    props["Total"] = to_decimal(Total)
return props"""

# (source, scope, expected): the evaluator must give exactly `expected`.
SHARED_TABLE: list[tuple[str, dict[str, Any], Any]] = [
    ('phone_number or "N/A"', {}, "N/A"),
    ('phone_number or "N/A"', {"phone_number": "+15551234567"}, "+15551234567"),
    ("first_name", {"first_name": None}, None),
    ("missing_name", {}, None),
    ("1 + 2 * 3 - 4 / 2", {}, 5.0),
    ("7 // 2, 7 % 2, -7, +7, ~7, 2 ** 10", {}, (3, 1, -7, 7, -8, 1024)),
    ("a if a > b else b", {"a": 3, "b": 5}, 5),
    ("1 < x <= 3", {"x": 3}, True),
    ("1 < x <= 3", {"x": 4}, False),
    ("x is None and y is not None", {"y": 1}, True),
    ('"b" in tags and "z" not in tags', {"tags": ["a", "b"]}, True),
    ("not x", {"x": ""}, True),
    ('x and y or "fallback"', {"x": 1, "y": 0}, "fallback"),
    ('record["email"].lower().strip()', {"record": {"email": " A@B.COM "}}, "a@b.com"),
    ('record.get("missing", "d")', {"record": {}}, "d"),
    ('", ".join(sorted(d.keys()))', {"d": {"b": 1, "a": 2}}, "a, b"),
    ('name.split(" ")[0]', {"name": "Ada Lovelace"}, "Ada"),
    ("s[1:3], s[::-1]", {"s": "abcd"}, ("bc", "dcba")),
    ('f"{first} {last}".strip()', {"first": "Ada", "last": None}, "Ada None"),
    ('f"{n:05d}|{x:.2f}|{s!r:>5}"', {"n": 42, "x": 3.14159, "s": "a"}, "00042|3.14|  'a'"),
    ('"%s-%03d" % (a, n)', {"a": "X", "n": 7}, "X-007"),
    ("[x * 2 for x in xs if x > 1]", {"xs": [1, 2, 3]}, [4, 6]),
    ("{k: v for k, v in d.items() if v}", {"d": {"a": 1, "b": 0}}, {"a": 1}),
    ("{x % 2 for x in range(5)}", {}, {0, 1}),
    ("[[i, j] for i in range(2) for j in range(2)]", {}, [[0, 0], [0, 1], [1, 0], [1, 1]]),
    ("{1, 2} | {3}", {}, {1, 2, 3}),
    ("len(items) + sum([1, 2]) + max(1, 5) + min([4, 2]) + abs(-1)", {"items": [1]}, 12),
    ("round(2.567, 2), int('12'), float('1.5'), bool(0), str(12)", {}, (2.57, 12, 1.5, False, "12")),
    ('Decimal("1.10") + Decimal("2.20")', {}, Decimal("3.30")),
    ("list(zip([1, 2], ['a', 'b'])), list(enumerate('ab'))", {},
     ([(1, "a"), (2, "b")], [(0, "a"), (1, "b")])),
    ("any([0, 1]), all([1, 0]), list(reversed([1, 2]))", {}, (True, False, [2, 1])),
    ('get(record, "location.address1")', {"record": {"location": {"address1": "1 Main"}}},
     "1 Main"),
    ('get(record, "lines[1].sku", None)', {"record": {"lines": [{"sku": "A"}]}}, None),
    ('e164(phone)', {"phone": "(415) 555-2671"}, "+14155552671"),
    ('e164(phone) or None', {"phone": "12"}, None),
    ('coalesce(a, b, "c")', {"a": " ", "b": None}, "c"),
    (PROPS_BLOCK, {"EmailAddress": "a@b.c", "TransactionNumber": "T1", "Total": "9.50"},
     {"Email": "a@b.c", "Order": "T1", "Total": Decimal("9.50")}),
    ("total = 0\nfor line in lines:\n    if not line:\n        continue\n    total += line\n"
     "    if total > 5:\n        break\nreturn total", {"lines": [1, 0, 2, 4, 8]}, 7),
    ("i = 0\nwhile i < 3:\n    i += 1\nelse:\n    i = i * 10\nreturn i", {}, 30),
    ("for x in xs:\n    if x == 2:\n        return 'found'\nreturn 'none'", {"xs": [1, 2]}, "found"),
    ("a, b = pair\nreturn [b, a]", {"pair": [1, 2]}, [2, 1]),
    ("if x:\n    return 'yes'\nelse:\n    return 'no'", {"x": 1}, "yes"),
    ("d = {}\nd['n'] = 1\nd['n'] += 2\nreturn d", {}, {"n": 3}),
    ("out = []\nfor x in xs:\n    out.append(x.upper())\nreturn out", {"xs": ["a"]}, ["A"]),
    ("x = [i for i in range(3)]\nreturn i", {"i": "outer"}, "outer"),
    ("pass\nreturn None", {}, None),
]


@pytest.fixture
def engine() -> FormulaEngine:
    """An engine with the default helpers and limits."""
    return FormulaEngine()


@pytest.mark.parametrize("source,scope,expected", SHARED_TABLE,
                         ids=[f"{i}:{s[:30]}" for i, (s, _, _) in enumerate(SHARED_TABLE)])
def test_shared_table_gives_the_same_native_result(engine: FormulaEngine, source: str,
                                                   scope: dict[str, Any], expected: Any) -> None:
    """Each formula of the shared table evaluates to the expected native value."""
    result = engine.compile(source).evaluate(scope)
    assert expected == result
    assert type(expected) is type(result)


def test_names_and_functions_are_reported() -> None:
    """compile() reports the free names read and the functions called, not locals or functions."""
    compiled = FormulaEngine().compile(CUSTOMER_BLOCK)
    assert frozenset({"CustomerId", "EmailAddress"}) == compiled.names
    assert frozenset({"get_external_id", "get_customer_id_by_email"}) == compiled.functions
    assert isinstance(compiled, CompiledFormula)


def test_comprehension_variables_are_not_free_names() -> None:
    """Loop and comprehension variables are locals, not names the formula reads from scope."""
    compiled = FormulaEngine().compile("[x for x in xs]")
    assert frozenset({"xs"}) == compiled.names


def test_syntax_error_points_at_line_and_column() -> None:
    """A syntax error carries code F001 and the 1-based line and column of the problem."""
    with pytest.raises(FormulaSyntaxError) as info:
        FormulaEngine().compile("x = 1\nreturn (x +")
    assert "F001" == info.value.code
    assert info.value.message.startswith("syntax error:")
    assert 2 == info.value.formula_line


def test_block_must_end_in_return() -> None:
    """A statement block without a final return is refused with F010."""
    with pytest.raises(FormulaSyntaxError) as info:
        FormulaEngine().compile("x = 1\nif x:\n    return 1")
    assert "F010" == info.value.code
    assert 2 == info.value.formula_line


def test_unknown_function_lists_the_valid_ones() -> None:
    """Calling a function outside the table is refused and the message lists the table."""
    with pytest.raises(FormulaSyntaxError) as info:
        FormulaEngine(functions={"only_this": len}).compile("x + only_that(1)")
    assert "F006" == info.value.code
    assert "unknown function 'only_that'" in info.value.message
    assert "only_this" in info.value.message
    assert (1, 5) == (info.value.formula_line, info.value.formula_column)


def test_runtime_error_names_exception_and_location(engine: FormulaEngine) -> None:
    """An exception inside a formula becomes F100 naming the exception, the code and where."""
    compiled = engine.compile("x = 1\nreturn x + record['missing']")
    with pytest.raises(FormulaRuntimeError) as info:
        compiled.evaluate({"record": {}})
    err = info.value
    assert "F100" == err.code
    assert "KeyError" in err.message and "'missing'" in err.message
    assert "record['missing']" in err.message
    assert (2, 12) == (err.formula_line, err.formula_column)


def test_get_without_default_raises_path_not_found(engine: FormulaEngine) -> None:
    """get() on an absent path raises PathNotFoundError (M010) naming the path and step."""
    compiled = engine.compile('get(record, "subscriptions.email.marketing.consent")')
    with pytest.raises(PathNotFoundError) as info:
        compiled.evaluate({"record": {"subscriptions": {"email": {}}}})
    assert "M010" == info.value.code
    assert "subscriptions.email.marketing.consent" == info.value.path
    assert "marketing" == info.value.step


def test_unbound_resolver_helpers_say_so(engine: FormulaEngine) -> None:
    """Without a resolver, get_external_id raises a clear 'no resolver available' error."""
    compiled = engine.compile(CUSTOMER_BLOCK)
    with pytest.raises(FormulaRuntimeError, match="no resolver available"):
        compiled.evaluate({"CustomerId": 5, "EmailAddress": "a@b.c"})


class _Resolver:
    def __init__(self) -> None:
        self.external = {("Customer", 5): "01HPROFILE"}
        self.by_email = {"a@b.c": "77"}

    def get_external_id(self, entity: str, hub_id: Any) -> str | None:
        return self.external.get((entity, hub_id))

    def get_customer_id_by_email(self, email: str) -> str | None:
        return self.by_email.get(email)


@pytest.mark.parametrize("scope,expected", [
    ({"CustomerId": 5, "EmailAddress": "a@b.c"}, "01HPROFILE"),
    ({"CustomerId": 6, "EmailAddress": "a@b.c"}, "77"),
    ({"CustomerId": 6, "EmailAddress": "x@y.z"}, None),
])
def test_bound_helpers_are_supplied_per_evaluation(engine: FormulaEngine, scope: dict[str, Any],
                                                   expected: Any) -> None:
    """A formula compiled once uses the resolver passed with evaluate(functions=...)."""
    compiled = engine.compile(CUSTOMER_BLOCK)
    assert expected == compiled.evaluate(scope, functions=bind_helpers(_Resolver()))


def test_scope_is_never_modified(engine: FormulaEngine) -> None:
    """A formula that mutates data works on plain copies; the caller's scope is unchanged."""
    record = {"tags": ["a"], "nested": {"k": 1}}
    compiled = engine.compile(
        "record['tags'].append('b')\nrecord['nested']['k'] = 2\nx = 5\nreturn record")
    result = compiled.evaluate({"record": record})
    assert {"tags": ["a", "b"], "nested": {"k": 2}} == result
    assert {"tags": ["a"], "nested": {"k": 1}} == record


def test_no_state_leaks_between_evaluations(engine: FormulaEngine) -> None:
    """A local assigned in one evaluation is absent (None) in the next."""
    compiled = engine.compile("if first:\n    seen = 'set'\nreturn seen")
    assert "set" == compiled.evaluate({"first": True})
    assert None is compiled.evaluate({"first": False})


def test_filter_kind_compiles_like_a_formula() -> None:
    """kind='filter' compiles a formula whose truthiness decides processing."""
    compiled = FormulaEngine().compile("status != 'archived'", kind="filter")
    assert compiled.kind == "filter"
    assert compiled.evaluate({"status": "active"}) is True


def test_concurrent_evaluations_do_not_interfere(engine: FormulaEngine) -> None:
    """Threads evaluating one compiled formula each get their own results."""
    compiled = engine.compile("[x * n for x in range(50)]")
    results: dict[int, Any] = {}

    def work(n: int) -> None:
        for _ in range(20):
            results[n] = compiled.evaluate({"n": n})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n: [x * n for x in range(50)] for n in range(4)} == results


def test_limits_belong_to_the_engine() -> None:
    """Two engines with different limits enforce their own limits."""
    small = FormulaEngine(limits=Limits(max_string=10))
    assert "a" * 100 == FormulaEngine().compile("'a' * 100").evaluate({})
    with pytest.raises(FormulaRuntimeError, match="string too long"):
        small.compile("'a' * 100").evaluate({})
