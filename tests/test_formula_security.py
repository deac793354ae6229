"""Escape attempts against the formula sandbox: each is refused at compile or stopped at run."""

from __future__ import annotations

import time

import pytest

from engine.errors import FormulaLimitError, FormulaRuntimeError, FormulaSyntaxError
from engine.formula import FormulaEngine, Limits

# (source, code, message fragment): refused by compile().
REFUSED_AT_COMPILE = [
    ("().__class__.__bases__[0].__subclasses__()", "F005", "'__subclasses__' is not allowed"),
    ("record.__class__", "F005", "'__class__' is not allowed: names starting with '_' are private"),
    ("__import__('os')", "F005", "name '__import__' is not allowed"),
    ("_private", "F005", "names starting with '_' are private"),
    ("getattr(record, 'x')", "F006", "unknown function 'getattr'"),
    ("open('/etc/passwd')", "F006", "unknown function 'open'"),
    ("open('/etc/passwd').read()", "F007", "method '.read()' is not allowed"),
    ("eval('1')", "F006", "unknown function 'eval'"),
    ("exec('x = 1')", "F006", "unknown function 'exec'"),
    ("compile('1', 'f', 'eval')", "F006", "unknown function 'compile'"),
    ("type(x)", "F006", "unknown function 'type'"),
    ("import os", "F004", "import is not allowed"),
    ("from os import path", "F004", "import is not allowed"),
    ('"{0.__class__}".format(x)', "F008", "format() method is not allowed"),
    ('"{0.x}".format(x)', "F008", "format() method is not allowed"),
    ('"{x}".format_map(d)', "F008", "format_map() method is not allowed"),
    ('f"{x:{w}}"', "F008", "nested replacement fields"),
    ('f"{x:>1000000000}"', "F008", "above the limit"),
    ('f"{x:.100000f}"', "F008", "above the limit"),
    ("lambda: 1", "F003", "lambda is not allowed"),
    ("def f():\n    return 1\nreturn f()", "F003", "def is not allowed"),
    ("class A:\n    pass\nreturn A", "F003", "class is not allowed"),
    ("global x\nreturn x", "F003", "global is not allowed"),
    ("with x:\n    pass\nreturn 1", "F003", "with is not allowed"),
    ("try:\n    x = 1\nexcept Exception:\n    pass\nreturn 1", "F003", "try is not allowed"),
    ("del x\nreturn 1", "F003", "del is not allowed"),
    ("(yield 1)", "F003", "yield is not allowed"),
    ("(x for x in y)", "F003", "generator expressions are not allowed"),
    ("(y := 1)", "F003", "walrus"),
    ("len(*args)", "F009", "star-args"),
    ("len(**kw)", "F009", "**kwargs is not allowed"),
    ("{**d}", "F009", "'**' unpacking"),
    ("x.real", "F007", "attribute access '.real' is not allowed"),
    ("x.encode()", "F007", "method '.encode()' is not allowed"),
    ("s.x = 1\nreturn s", "F007", "attribute access '.x' is not allowed"),
    ("b'bytes'", "F003", "bytes literals are not allowed"),
    ("len = 1\nreturn len", "F012", "cannot assign to function 'len'"),
    ("f = str\nreturn f(1)", "F012", "function 'str' can only be called"),
    ("x()", "F006", "unknown function 'x'"),
    ("(lambda: 1)()", "F006", "only named functions and safe methods can be called"),
    ("x" * 10_001, "F002", "the limit is 10000"),
    ("[" * 200 + "1" + "]" * 200, "F011", "nested too deep"),
    ("(" * 1000 + "1" + ")" * 1000, "F001", "too many nested parentheses"),
    ("-" * 5000 + "1", "F011", "nested too deep"),
    ("", "F013", "formula is empty"),
]


@pytest.fixture
def engine() -> FormulaEngine:
    """An engine with the default helpers and limits."""
    return FormulaEngine()


@pytest.mark.parametrize("source,code,fragment", REFUSED_AT_COMPILE,
                         ids=[s[:40] for s, _, _ in REFUSED_AT_COMPILE])
def test_escape_is_refused_at_compile(engine: FormulaEngine, source: str, code: str,
                                      fragment: str) -> None:
    """Each escape attempt is refused by compile() with its stable code and a clear message."""
    with pytest.raises(FormulaSyntaxError) as info:
        engine.compile(source)
    assert (code, code) == (info.value.code, type(info.value).code)  # the code is the class's
    assert fragment in info.value.message


def test_private_attribute_error_points_at_the_attribute() -> None:
    """The error for 'record.__class__' points at '__class__' (line 1, column 8)."""
    with pytest.raises(FormulaSyntaxError) as info:
        FormulaEngine().compile("record.__class__")
    assert (1, 8) == (info.value.formula_line, info.value.formula_column)


# (source, scope, code, message fragment): compiles, then stopped by a limit at run time.
STOPPED_AT_RUN = [
    ('"a" * 10**9', {}, "F203", "string too long"),
    ("10**9 * 'a'", {}, "F203", "string too long"),
    ("[0] * 10**9", {}, "F203", "sequence too long"),
    ("s + s", {"s": "a" * 600_000}, "F203", "string too long"),
    ("2 ** 10**10", {}, "F204", "exponent 10000000000 is above the limit"),
    ("10 ** 10 ** 10", {}, "F204", "above the limit"),
    ("(10**1000) ** 1000", {}, "F204", "number too large"),
    ("1 << 10**9", {}, "F204", "number too large"),
    ("x * x", {"x": 2**9_000}, "F204", "number too large"),
    ("range(10**9)", {}, "F203", "sequence too long"),
    ("list(s)", {"s": "a" * 200_000}, "F203", "sequence too long"),
    ('"%1000000000d" % 1', {}, "F203", "% format width"),
    ('"%*d" % (10**9, 1)', {}, "F203", "'*' widths"),
    ('"x".ljust(10**9)', {}, "F203", "string too long"),
    ('"7".zfill(10**9)', {}, "F203", "string too long"),
    ('s.replace("a", s)', {"s": "a" * 2000}, "F203", "string too long"),
    ('s.join([s, s, s])', {"s": "a" * 400_000}, "F203", "string too long"),
    ("while True:\n    pass\nreturn 1", {}, "F202", "step limit exceeded"),
    ("for i in range(10**5):\n    for j in range(10**5):\n        pass\nreturn 1", {}, "F202",
     "step limit exceeded"),
    ("[[i, j] for i in range(10**5) for j in range(10**5)]", {}, "F201|F202", "limit exceeded"),
    ("x = 'a'\nwhile True:\n    x = x + x\nreturn x", {}, "F203", "string too long"),
    ("x = [1]\nwhile True:\n    x = x * 2\nreturn x", {}, "F203", "sequence too long"),
    ("x = 2\nwhile True:\n    x = x * x\nreturn x", {}, "F204", "number too large"),
    ("d = {}\ni = 0\nwhile True:\n    d[i] = i\n    i += 1\nreturn d", {}, "F201|F202", "limit exceeded"),
]


@pytest.mark.parametrize("source,scope,code,fragment", STOPPED_AT_RUN,
                         ids=[s[:40] for s, _, _, _ in STOPPED_AT_RUN])
def test_runaway_is_stopped_at_run(engine: FormulaEngine, source: str, scope: dict[str, object],
                                   code: str, fragment: str) -> None:
    """Each runaway formula compiles, then stops with FormulaLimitError well within a second."""
    compiled = engine.compile(source)
    started = time.monotonic()
    with pytest.raises(FormulaLimitError) as info:
        compiled.evaluate(scope)
    assert time.monotonic() - started < 2.0
    assert info.value.code in code.split("|")  # a slow machine may hit time before steps
    assert info.value.code == type(info.value).code  # the code is the class's
    assert fragment in info.value.message


def test_time_limit_stops_slow_loops() -> None:
    """A loop that stays under the step limit but runs too long stops on the time limit (F201)."""
    engine = FormulaEngine(limits=Limits(max_seconds=0.05, max_steps=10**9))
    compiled = engine.compile("x = 0\nwhile True:\n    x = x + 1\nreturn x")
    started = time.monotonic()
    with pytest.raises(FormulaLimitError) as info:
        compiled.evaluate({})
    assert time.monotonic() - started < 1.0
    assert "F201" == info.value.code


def test_a_formula_cannot_rebind_a_helper_for_later_evaluations(engine: FormulaEngine) -> None:
    """Assigning a helper's name is refused, and helpers are unchanged for the next formula."""
    with pytest.raises(FormulaSyntaxError):
        engine.compile("upper = lower\nreturn 1")
    assert "ABC" == engine.compile("upper('abc')").evaluate({})


def test_scope_cannot_replace_a_function(engine: FormulaEngine) -> None:
    """A scope entry named like a helper does not replace the helper the formula calls."""
    compiled = engine.compile("upper(x)")
    assert "A" == compiled.evaluate({"x": "a", "upper": lambda v: "hijacked", "_fn": {}})


def test_methods_are_only_those_of_plain_types(engine: FormulaEngine) -> None:
    """A safe method name on a non-plain object is refused at run time (F101)."""

    class Secretive:
        def get(self, key: str) -> str:
            return "secret"

    compiled = engine.compile("obj.get('api_key')")
    with pytest.raises(FormulaRuntimeError) as info:
        compiled.evaluate({"obj": Secretive()})
    assert "F101" == info.value.code


def test_dict_subclass_cannot_override_a_method(engine: FormulaEngine) -> None:
    """A dict subclass's own .get is bypassed: the plain dict method runs."""

    class Tricky(dict):  # type: ignore[type-arg]
        def get(self, *args: object) -> str:  # type: ignore[override]
            return "overridden"

    assert "v" == engine.compile("d.get('k')").evaluate({"d": Tricky(k="v")})


def test_sum_refuses_to_concatenate_lists(engine: FormulaEngine) -> None:
    """sum() only adds numbers, so it cannot be used to build huge lists quadratically."""
    with pytest.raises(FormulaRuntimeError, match="sum\\(\\) only adds numbers"):
        engine.compile("sum([[1]] * 10, [])").evaluate({})
