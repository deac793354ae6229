"""Formulas never change the data they read, whether or not the engine copies it."""

from __future__ import annotations

import copy

import pytest

from engine.formula import FormulaEngine

CASES = [
    # (formula, copy needed?)  a formula that mutates only a fresh local needs no copy
    ('props = {}\nprops["a"] = 1\nreturn props', False),
    ('out = []\nout.append(record["x"])\nreturn out', False),
    ('p = properties\np["x"] = 1\nreturn p', True),
    ('props = {"l": Lines}\nprops["l"].append(1)\nreturn props', True),
    ('props = {"l": Lines}\nprops["l"][0] = 9\nreturn props', True),
    ('for line in Lines:\n    line["x"] = 1\nreturn Lines', True),
    ('x = []\nx = Lines\nx.append(5)\nreturn x', True),
    ('tags.sort()\nreturn tags', True),
    ('d = {}\nd.update(properties)\nreturn d', False),
]


@pytest.mark.parametrize(("source", "needs_copy"), CASES)
def test_formula_leaves_scope_data_unchanged(source: str, needs_copy: bool) -> None:
    """Evaluating the formula leaves every value of the scope exactly as it was."""
    scope = {"properties": {"a": [1]}, "Lines": [{"id": 2}, {"id": 1}], "record": {"x": [3]}, "tags": [3, 1, 2]}
    before = copy.deepcopy(scope)
    compiled = FormulaEngine().compile(source)
    compiled.evaluate(scope)
    compiled.evaluate(scope)
    assert before == scope
    assert needs_copy == compiled._mutates


@pytest.mark.parametrize("source", [
    'phone_number if not is_blank(phone_number) else "N/A"',
    '{"Email": get(parent, "EmailAddress", None), "Sku": Sku}',
    'join_ids(get(parent, "Id", None), Id)',
    "missing_name",
    "x = 1\nreturn x + Id",
    "[s.upper() for s in tags]",
])
def test_private_scope_gives_the_same_result(source: str) -> None:
    """Evaluating on the caller's private scope gives what a built namespace gives, and adds
    nothing but engine-private keys to that scope."""
    def scope() -> dict:
        return {"phone_number": None, "parent": {"EmailAddress": "a@x.com", "Id": 5}, "Sku": "S", "Id": 7,
                "tags": ["a", "b"]}

    compiled = FormulaEngine().compile(source)
    private = scope()
    assert compiled.evaluate(scope()) == compiled.evaluate(private, private=True)
    assert scope() == {k: v for k, v in private.items() if not k.startswith("_")}
