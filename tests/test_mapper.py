"""The row mapper and the runner core: policies, native types, children, identities."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest

from engine import catalog
from engine.collection import load_collections
from engine.formula import FormulaEngine
from engine.formula.helpers import bind_helpers
from engine.runner import Runner

HEAD = """\
title: T
direction: {direction}
hub_entity: {entity}
klaviyo_resource: {resource}
action: add
status: enabled
"""


def build(tmp_path: Path, body: str, direction: str = "to_hub", entity: str = "Customer",
          resource: str = "profile", extra: dict[str, str] | None = None):
    (tmp_path / "t.yaml").write_text(HEAD.format(direction=direction, entity=entity, resource=resource)
                                     + textwrap.dedent(body))
    for name, text in (extra or {}).items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    report = load_collections([tmp_path])
    assert report.errors == [], [str(e) for e in report.errors]
    return report.collections


def test_field_row_missing_source_is_omitted_by_default(tmp_path: Path) -> None:
    """A field row whose source is absent leaves the destination out (never sent as null)."""
    cs = build(tmp_path, """
        rows:
          - {type: field, source: first_name, destination: FirstName}
          - {type: field, source: email, destination: EmailAddress}
    """)
    out = Runner(cs).run("T", {"id": "1", "email": "a@x.com"})
    assert ("ok", {"EmailAddress": "a@x.com"}) == (out.status, out.payload)


def test_on_missing_null_and_error(tmp_path: Path) -> None:
    """on_missing: null writes null; on_missing: error makes the record invalid with M010."""
    cs = build(tmp_path, """
        on_missing: "null"
        rows:
          - {type: field, source: first_name, destination: FirstName}
          - {type: field, source: last_name, destination: LastName, on_missing: error}
    """)
    out = Runner(cs).run("T", {"id": "1"})
    assert out.status == "invalid"
    assert ["M010"] == [p.code for p in out.problems]
    out = Runner(cs).run("T", {"id": "1", "last_name": "L"})
    assert {"FirstName": None, "LastName": "L"} == out.payload


def test_results_keep_native_types(tmp_path: Path) -> None:
    """Numbers, booleans, lists and dicts keep their types from static values and formulas."""
    cs = build(tmp_path, """
        rows:
          - {type: static, destination: CustomFields.Flag, value: true}
          - {type: static, destination: CustomFields.Count, value: 3}
          - {type: formula, destination: CustomFields.Total, formula: "get(properties, 'n', 0) * 2.5"}
          - {type: formula, destination: CustomFields.Tags, formula: "[t.upper() for t in get(properties, 'tags', [])]"}
    """)
    out = Runner(cs).run("T", {"id": "1", "properties": {"n": 2, "tags": ["a", "b"]}})
    assert {"Flag": True, "Count": 3, "Total": 5.0, "Tags": ["A", "B"]} == out.payload["CustomFields"]


def test_expect_refuses_wrong_type_without_coercion(tmp_path: Path) -> None:
    """A value of the wrong type is an M003 problem, not silently converted."""
    cs = build(tmp_path, """
        rows:
          - {type: field, source: properties.age, destination: CustomFields.Age, expect: integer}
    """)
    out = Runner(cs).run("T", {"id": "1", "properties": {"age": "42"}})
    assert out.status == "invalid"
    assert out.problems[0].code == "M003"
    assert "must be integer, got str '42'" in out.problems[0].message


def test_unreadable_list_position_uses_the_catalog_text(tmp_path: Path) -> None:
    """A get() of a list position that is not there reports the seeds' address/subscription message."""
    cs = build(tmp_path, """
        unreadable_message: A mapped address or subscription value could not be read from the Klaviyo profile.
        rows:
          - {type: formula, destination: Comment, formula: "get(record, 'properties.addresses[1].street')"}
    """)
    out = Runner(cs).run("T", {"id": "9", "properties": {"addresses": [{"street": "only one"}]}})
    assert out.status == "invalid"
    assert catalog.ADDRESS_VALUE_UNREADABLE == out.problems[0].message
    assert "addresses[1]" in out.problems[0].detail


def test_let_bindings_feed_field_rows(tmp_path: Path) -> None:
    """A let name can start a field row's source path."""
    cs = build(tmp_path, """
        let:
          billing: |
            for a in Addresses or []:
                if a.get("IsPrimaryBilling"):
                    return a
            return None
        rows:
          - {type: field, source: billing.City, destination: location.city}
          - {type: field, source: EmailAddress, destination: email}
          - {type: static, destination: SubscribeProfile, value: false}
    """, direction="to_klaviyo")
    rec = {"Id": 1, "EmailAddress": "a@x.com", "Addresses": [
        {"City": "Ship"}, {"City": "Bill", "IsPrimaryBilling": True}]}
    out = Runner(cs).run("T", rec)
    assert {"location": {"city": "Bill"}, "email": "a@x.com", "SubscribeProfile": False} == out.payload


def test_filter_false_is_filtered_and_filter_error_is_invalid(tmp_path: Path) -> None:
    """A falsy filter filters the record; a filter that raises makes it invalid, never crashes."""
    cs = build(tmp_path, """
        filter: "email.endswith('@keep.com')"
        rows:
          - {type: field, source: email, destination: EmailAddress}
    """)
    r = Runner(cs)
    assert "filtered" == r.run("T", {"id": "1", "email": "a@drop.com"}).status
    assert "ok" == r.run("T", {"id": "2", "email": "a@keep.com"}).status
    bad = r.run("T", {"id": "3"})
    assert "invalid" == bad.status
    assert bad.problems[0].location.row == "filter"


def test_mapping_never_mutates_the_input(tmp_path: Path) -> None:
    """Formulas work on copies: the caller's record is unchanged after mapping."""
    cs = build(tmp_path, """
        rows:
          - type: formula
            destination: Comment
            formula: |
              p = properties
              p["x"] = 1
              return "done"
    """)
    rec = {"id": "1", "properties": {"a": [1, 2]}}
    before = copy.deepcopy(rec)
    assert "ok" == Runner(cs).run("T", rec).status
    assert before == rec


def test_runtime_limit_is_a_record_problem_not_a_crash(tmp_path: Path) -> None:
    """A runaway formula makes only its record invalid; the next record still maps."""
    cs = build(tmp_path, """
        rows:
          - type: formula
            destination: Comment
            formula: |
              n = 0
              while True:
                  n = n + 1
              return n
          - {type: field, source: email, destination: EmailAddress}
    """)
    r = Runner(cs)
    out = r.run("T", {"id": "1", "email": "a@x.com"})
    assert out.status == "invalid"
    assert out.problems[0].code.startswith("F")


def test_a_non_object_record_is_invalid(tmp_path: Path) -> None:
    """A JSON array or string as a record is an M001 problem."""
    cs = build(tmp_path, """
        rows:
          - {type: field, source: email, destination: EmailAddress}
    """)
    out = Runner(cs).run("T", ["not", "a", "record"])  # type: ignore[arg-type]
    assert ("invalid", "M001") == (out.status, out.problems[0].code)


def test_children_expand_per_line_with_deterministic_ids() -> None:
    """Placed Order expands one Ordered Product per line; identities repeat on a re-run."""
    cs = load_collections().collections

    class Links:
        def get_external_id(self, entity, hub_id):
            return "01PROFILE" if (entity, str(hub_id)) == ("Customer", "7") else None

        def get_customer_id_by_email(self, email):
            return None

    runner = Runner(cs, functions=bind_helpers(Links()))
    tx = {"Id": 5, "TransactionNumber": "SO-5", "CustomerId": 7, "EmailAddress": "a@x.com", "Total": 3,
          "Lines": [{"Id": 50, "Sku": "A", "ExtendedPrice": 1}, {"Id": 51, "Sku": "B", "ExtendedPrice": 2}]}
    first = runner.run("Add Klaviyo Placed Order Event FROM Hub", tx)
    second = runner.run("Add Klaviyo Placed Order Event FROM Hub", tx)
    ids = [(c.record_id, c.payload["UniqueId"]) for c in first.children]
    assert [("5/Lines/50", "5-50"), ("5/Lines/51", "5-51")] == ids
    assert ids == [(c.record_id, c.payload["UniqueId"]) for c in second.children]
    assert [c.payload["ProfileId"] for c in first.children] == ["01PROFILE", "01PROFILE"]


def test_line_without_id_is_invalid_not_guessed() -> None:
    """A line with no Id cannot get a deterministic unique id, so its event is refused."""
    cs = load_collections().collections
    runner = Runner(cs, functions=bind_helpers(type("R", (), {
        "get_external_id": lambda self, e, i: "01P", "get_customer_id_by_email": lambda self, e: None})()))
    tx = {"Id": 5, "TransactionNumber": "SO-5", "CustomerId": 7, "EmailAddress": "a@x.com", "Total": 3,
          "Lines": [{"Sku": "B", "ExtendedPrice": 2}]}
    child = runner.run("Add Klaviyo Placed Order Event FROM Hub", tx).children[0]
    assert child.record_id == "5/Lines/0"
    assert child.status == "invalid"
    assert child.problems[0].message == catalog.PRODUCT_EVENT_NOT_CREATED


@pytest.mark.parametrize(("source", "expected"), [
    ("email", ("email",)),
    ('get(existing, "FirstName", None)', ("existing", "FirstName")),
    ("get(location, 'a.b[1]', default=None)", ("location", "a", "b", 1)),
    ('get(existing, "FirstName")', None),          # no default: raises when absent, so not a plain read
    ('get(existing, "FirstName", "x")', None),
    ("email.lower()", None),
    ("phone_number or 'N/A'", None),
])
def test_path_read_recognises_only_pure_path_reads(source: str, expected) -> None:
    """Only a bare name or get(name, "path", None) is evaluated as a field read (decided once, from
    the checked syntax tree)."""
    assert expected == FormulaEngine().compile(source).read_path


def test_path_read_rows_match_the_interpreter(tmp_path: Path) -> None:
    """A formula row evaluated as a path read gives what the interpreter gives, present or absent."""
    cs = build(tmp_path, """
        rows:
          - {type: formula, destination: FirstName, formula: "get(location, 'city', None)"}
          - {type: formula, destination: LastName, formula: "get(location, 'city', None) or None"}
          - {type: formula, destination: Company, formula: "organization"}
          - {type: formula, destination: Comment, formula: "organization or None"}
    """)
    r = Runner(cs)
    for rec in ({"id": "1", "location": {"city": "X"}, "organization": "O"}, {"id": "2", "location": None}, {"id": "3"}):
        p = r.run("T", rec).payload
        assert p.get("FirstName") == p.get("LastName")
        assert p.get("Company") == p.get("Comment")


def test_a_problem_names_its_record_in_text_but_not_in_the_outcome_dict() -> None:
    """Each problem's location holds the record id the runner added; the outcome's dict states it once."""
    out = Runner(load_collections().collections).run("Add Klaviyo Profile FROM Hub", {"Id": 19, "CustomerNumber": "N-19"},
                              with_children=False)
    [problem] = out.problems
    assert ("19", "19") == (out.record_id, problem.location.record_id)
    assert "record 19" in str(problem)
    assert "record_id" not in out.to_dict()["problems"][0]
