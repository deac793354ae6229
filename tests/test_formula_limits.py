"""Denial-of-service attempts through formulas or record data: each ends as that record's own
located error (an F-code, the collection's file:line:col, the record id), never a hang or a crash."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.collection import load_collections
from engine.errors import FormulaLimitError, FormulaRuntimeError
from engine.formula import FormulaEngine, Limits, helpers, shorten
from engine.runner import INVALID, Runner

HEAD = """\
title: Attack
direction: to_hub
hub_entity: Customer
klaviyo_resource: profile
action: add
status: enabled
rows:
  - type: field
    source: email
    destination: EmailAddress
  - type: formula
    destination: Comment
    formula: |
"""

# Builds a list/tuple that shares itself 60 times over: tiny in memory, 2**60 elements when
# walked as C code walks it (compare, hash, str).
SHARED_LIST = "x = [1]\nfor i in range(60):\n    x = [x, x]\n"
SHARED_TUPLE = "t = (1,)\nfor i in range(60):\n    t = (t, t)\n"
HUGE_DECIMAL = 'd = to_decimal(get(properties, "n"))\n'

# (attack class, formula block, record properties, code, message fragment)
ATTACKS: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("round with a huge negative ndigits", "return round(1, -10**9)", {}, "F204", "ndigits"),
    ("int of a Decimal with a huge exponent", HUGE_DECIMAL + "return int(d)", {"n": "1e999999999"},
     "F204", "number too large"),
    ("to_int of a huge exponent", 'return to_int(get(properties, "n"))', {"n": "1e999999999"},
     "F204", "number too large"),
    ("round of a Decimal with a huge exponent", HUGE_DECIMAL + "return round(d)", {"n": "1e999999999"},
     "F204", "number too large"),
    ("comparing huge shared lists", SHARED_LIST + "return x == [x, x]", {}, "F203", "value too large"),
    ("ordering huge shared lists", SHARED_LIST + "return x < [x, x]", {}, "F203", "value too large"),
    ("hashing a huge shared tuple", SHARED_TUPLE + "return {t: 1}", {}, "F203", "value too large"),
    ("hashing a tuple in a set lookup", SHARED_TUPLE + "return t in {}", {}, "F203", "value too large"),
    ("str of a huge nested value", SHARED_LIST + "return str(x)", {}, "F203", "value too large"),
    ("to_str of a huge nested value", SHARED_LIST + "return to_str(x)", {}, "F203", "value too large"),
    ("f-string of a huge nested value", SHARED_LIST + 'return f"{x}"', {}, "F203", "value too large"),
    ("% formatting of a huge nested value", SHARED_LIST + 'return "%s" % (x,)', {}, "F203",
     "value too large"),
    ("format of a huge Decimal", HUGE_DECIMAL + 'return f"{d:f}"', {"n": "1e999999999"}, "F204",
     "number too large"),
    ("%d of a huge Decimal", HUGE_DECIMAL + 'return "%d" % d', {"n": "1e999999999"}, "F204",
     "number too large"),
    ("join over an iterator", 'return ("," * 100000).join(reversed(get(properties, "s")))',
     {"s": "a" * 100_000}, "F203", "string too long"),
    ("a 5,000-deep result", "x = []\nfor i in range(5000):\n    x = [x]\nreturn x", {}, "F205",
     "nested too deeply"),
    ("comparing a 5,000-deep value", "x = []\nfor i in range(5000):\n    x = [x]\nreturn x == x", {},
     "F205", "nested too deeply"),
    # beyond the list
    ("sorting huge shared lists", SHARED_LIST + "return sorted([x, x])", {}, "F203", "value too large"),
    ("max of huge shared lists", SHARED_LIST + "return max([x, x])", {}, "F203", "value too large"),
    ("list.index over huge shared lists", SHARED_LIST + "return [x].index(x)", {}, "F203",
     "value too large"),
    ("membership in a list of huge shared lists", SHARED_LIST + "return x in [x]", {}, "F203",
     "value too large"),
    ("dict.update with huge tuple keys", SHARED_TUPLE + "d = {}\nd.update([(t, 1)])\nreturn 1", {},
     "F203", "value too large"),
    ("set display of a huge tuple", SHARED_TUPLE + "return len({t})", {}, "F203", "value too large"),
    ("join_ids of a huge nested value", SHARED_LIST + "return join_ids(x)", {}, "F203",
     "value too large"),
    ("split into a million parts", 'return len(get(properties, "s").split(","))', {"s": "," * 1_000_000},
     "F203", "sequence too long"),
    ("mutating a copy of deep record data", 'p = properties\np["x"] = 1\nreturn 1',
     {"deep": "DEEP"}, "F205", "nested too deeply"),
]


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


def _collection(tmp_path: Path, block: str):
    path = tmp_path / "attack.yaml"
    path.write_text(HEAD + textwrap.indent(block, "      ") + "\n")
    report = load_collections([path])
    assert [] == [str(e) for e in report.errors]
    return report.collections, path


@pytest.mark.parametrize("name,block,props,code,fragment", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_ends_as_the_records_located_error(tmp_path: Path, name: str, block: str,
                                                  props: dict[str, Any], code: str, fragment: str) -> None:
    """The attack stops with its F-code, a bounded message, the record id and a position inside
    the formula's block in the YAML file."""
    collections, path = _collection(tmp_path, block)
    runner = Runner(collections)
    props = {k: (_deep(5000) if v == "DEEP" else v) for k, v in props.items()}
    bad = runner.run("Attack", {"id": "01BAD", "email": "bad@example.com", "properties": props})
    assert (INVALID, "01BAD") == (bad.status, bad.record_id)
    [problem] = bad.problems
    assert code == problem.code
    assert fragment in problem.message
    assert len(problem.message) < 600
    assert str(path) in problem.location.file or problem.location.file.endswith("attack.yaml")
    lines = path.read_text().splitlines()
    assert problem.location.line is not None and 10 <= problem.location.line <= len(lines)
    assert problem.location.column is not None and problem.location.column >= 7


def test_run_time_error_points_at_the_failing_node_in_the_yaml_file(tmp_path: Path) -> None:
    """A failing node on the third line of a block formula is reported at that line and column
    of the YAML file."""
    collections, path = _collection(tmp_path, 'a = 1\nb = 2\nreturn a + record["nope"]')
    out = Runner(collections).run("Attack", {"id": "01X", "email": "x@example.com"})
    [problem] = out.problems
    lines = path.read_text().splitlines()
    assert "F100" == problem.code
    assert 'record["nope"]' == lines[problem.location.line - 1][problem.location.column - 1:problem.location.column + 13]


def test_let_and_filter_errors_carry_their_position(tmp_path: Path) -> None:
    """A failing let block and a failing filter are reported at the failing node's line and column."""
    path = tmp_path / "letf.yaml"
    path.write_text(textwrap.dedent("""\
        title: LetFilter
        direction: to_hub
        hub_entity: Customer
        klaviyo_resource: profile
        action: add
        status: enabled
        let:
          total: |
            n = 1
            return n + to_int(first_name)
        rows:
          - type: field
            source: email
            destination: EmailAddress
        """))
    report = load_collections([path])
    assert [] == report.errors
    out = Runner(report.collections).run("LetFilter", {"id": "01L", "email": "a@b.c", "first_name": "x"})
    [problem] = out.problems
    lines = path.read_text().splitlines()
    assert ("F100", 10) == (problem.code, problem.location.line)
    assert "to_int(first_name)" == lines[9][problem.location.column - 1:problem.location.column + 17]

    path.write_text(path.read_text().replace("let:\n  total: |\n    n = 1\n    return n + to_int(first_name)\n",
                                             'filter: email != "" and to_int(first_name) > 1\n'))
    report = load_collections([path])
    assert [] == report.errors
    out = Runner(report.collections).run("LetFilter", {"id": "01F", "email": "a@b.c", "first_name": "x"})
    [problem] = out.problems
    assert (7, 25) == (problem.location.line, problem.location.column)
    assert "to_int(first_name)" in path.read_text().splitlines()[6][24:]


def test_messages_quote_values_cut_with_their_length() -> None:
    """A missing key or a helper's bad argument is quoted at about 200 characters with its length."""
    engine = FormulaEngine()
    with pytest.raises(FormulaRuntimeError) as info:
        engine.compile("record[k]").evaluate({"record": {}, "k": "k" * 1_000_000})
    assert "… (len=1000000)" in info.value.message
    assert len(info.value.message) < 400
    with pytest.raises(FormulaRuntimeError) as info:
        engine.compile("to_bool(s)").evaluate({"s": "y" * 500_000})
    assert "… (len=500000)" in info.value.message
    assert len(info.value.message) < 400


def test_shorten_is_bounded_for_shared_and_deep_values() -> None:
    """shorten() of a self-sharing or 5,000-deep value stays short."""
    shared: Any = [1]
    for _ in range(60):
        shared = [shared, shared]
    assert len(shorten(shared)) <= 220
    assert len(shorten(_deep(5000))) <= 220
    assert "'abc'" == shorten("abc")


def test_time_budget_applies_to_formulas_without_loops() -> None:
    """A formula with no loop is also stopped by the time budget (checked after every call)."""
    engine = FormulaEngine(limits=Limits(max_seconds=0.0))
    with pytest.raises(FormulaLimitError) as info:
        engine.compile("len(record)").evaluate({"record": {}})
    assert "F201" == info.value.code


def test_time_budget_is_checked_at_every_loop_step() -> None:
    """The deadline is checked on the first loop step, not every 32nd."""
    engine = FormulaEngine(limits=Limits(max_seconds=0.0, max_steps=10))
    with pytest.raises(FormulaLimitError) as info:
        engine.compile("n = 0\nfor i in [1, 2]:\n    n += i\nreturn n").evaluate({})
    assert "F201" == info.value.code


def test_path_cache_is_bounded_in_bytes() -> None:
    """get() with 20,000 distinct paths of 200 characters keeps the path cache under its byte bound."""
    for i in range(20_000):
        assert None is helpers.get({}, f"p{i:0199d}", None)
    assert helpers.PATH_CACHE.bytes <= helpers.PATH_CACHE.max_bytes
    long_path = "a." * 5000 + "b"
    helpers.get({}, long_path, None)
    assert None is helpers.PATH_CACHE.get(long_path)


def test_limits_are_documented_with_their_defaults() -> None:
    """docs/formulas.md names every limit with its default value."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "formulas.md").read_text()
    defaults = Limits()
    for name in Limits.names():
        value = getattr(defaults, name)
        shown = f"{value:,}".replace(",", " ") if isinstance(value, int) else str(value)
        assert f"`{name}`" in text and shown in text, name


def test_decimal_arithmetic_stays_cheap() -> None:
    """Decimals with huge exponents still add and compare (context precision), only integer
    conversions are refused."""
    engine = FormulaEngine()
    assert engine.compile("d + 1 > 0").evaluate({"d": Decimal("1e999999")}) is True
    with pytest.raises(FormulaLimitError) as info:
        engine.compile("int(d + 1)").evaluate({"d": Decimal("1e999999")})
    assert "F204" == info.value.code


def test_the_time_limit_counts_the_formula_s_cpu_time_not_a_busy_machine_s_wall_time() -> None:
    """Wall time passing while the thread does not run (another process has the core) is not held
    against the evaluation; CPU time it spends is."""
    import time as _time

    from engine.formula.guards import Budget

    budget = Budget(Limits(max_seconds=0.05, max_steps=10**12))
    _time.sleep(0.12)  # the thread is off the CPU, as on a machine busy with other work
    budget.check_time()
    budget.tick()
    with pytest.raises(FormulaLimitError) as info:
        end = _time.monotonic() + 2.0
        while _time.monotonic() < end:
            budget.tick()
    assert "F201" == info.value.code


def test_the_time_limit_leaves_out_the_garbage_collector_s_work() -> None:
    """A full collection in a big process is the process's work: it is not held against a formula."""
    import gc

    from engine.formula.guards import Budget

    junk = [[i] for i in range(300_000)]  # a heap whose full collection takes a while
    budget = Budget(Limits(max_seconds=0.02, max_steps=10**12))
    for _ in range(20):
        gc.collect()
    budget.check_time()
    budget.tick()
    del junk
