"""Loading and validating collections: the shipped ones pass, each broken fixture fails with
its exact message at file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.collection import ROW_KINDS, load_collections, parse_path
from engine.collection.load import SCHEMA_PATH

ROOT = Path(__file__).parent.parent
BROKEN = Path(__file__).parent / "fixtures" / "broken"
FIXTURES = sorted([p for p in BROKEN.glob("*.yaml")] + [BROKEN / "parent_cycle"])


def _validate(*args: str):
    """`klaviyo-sync validate ARGS`; its output names the files below the project root as the fixtures do."""
    result = CliRunner().invoke(main, ["validate", *args])
    return result, result.output.replace(f"{ROOT}/", "")


def test_shipped_collections_validate_cleanly() -> None:
    """`klaviyo-sync validate collections/` exits 0 and lists the eight collections."""
    result = CliRunner().invoke(main, ["validate", str(ROOT / "collections")])
    assert result.exit_code == 0, result.output
    assert "8 collection(s) valid, 0 error(s)" in result.output


def test_shipped_collections_are_the_eight_of_the_specification() -> None:
    """The shipped collections carry the seeds' titles, with iPaaS.com read as Hub."""
    titles = {c.title for c in load_collections().collections}
    assert titles == {
        "Add Klaviyo Profile TO Hub", "Update Klaviyo Profile TO Hub",
        "Add Klaviyo Profile Address TO Hub", "Update Klaviyo Profile Address TO Hub",
        "Add Klaviyo Profile FROM Hub", "Update Klaviyo Profile FROM Hub",
        "Add Klaviyo Placed Order Event FROM Hub", "Add Klaviyo Ordered Product Event FROM Hub",
    }


def test_children_name_their_parents() -> None:
    """Address children hang under the profile collections, Ordered Product under Placed Order."""
    cs = load_collections().collections
    assert [c.title for c in cs.children_of("Add Klaviyo Profile TO Hub")] == ["Add Klaviyo Profile Address TO Hub"]
    assert [c.title for c in cs.children_of("Add Klaviyo Placed Order Event FROM Hub")] == [
        "Add Klaviyo Ordered Product Event FROM Hub"]
    assert cs.order.index("Add Klaviyo Placed Order Event FROM Hub") < cs.order.index(
        "Add Klaviyo Ordered Product Event FROM Hub")


def test_shipped_collections_carry_the_schema_line() -> None:
    """Every shipped collection starts with the yaml-language-server schema line for editors."""
    for path in (ROOT / "collections").glob("*.yaml"):
        assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=../schemas/collection.schema.json"


def test_placeholders_are_warned_about() -> None:
    """validate warns about every placeholder the seeds list, and --strict turns them into failure."""
    report = load_collections()
    codes = sorted(w.code for w in report.warnings)
    assert codes == ["W002"] * 9
    result = CliRunner().invoke(main, ["validate", "--strict", str(ROOT / "collections")])
    assert result.exit_code == 1


@pytest.mark.parametrize("fixture", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_broken_fixture_fails_with_exact_message(fixture: Path) -> None:
    """validate exits 1 and prints exactly the fixture's expected problems."""
    expected = fixture.with_suffix(".expected").read_text().splitlines() if fixture.suffix else \
        (BROKEN / f"{fixture.name}.expected").read_text().splitlines()
    result, output = _validate(str(fixture))
    assert result.exit_code == 1
    lines = output.splitlines()
    assert expected == lines[:-1]
    assert lines[-1].startswith("0 collection(s) valid")


def test_validate_reports_every_file_in_one_run() -> None:
    """Validating several files reports the problems of all of them, not only the first."""
    result, output = _validate(str(BROKEN))
    assert result.exit_code == 1
    files_with_errors = {line.split(":")[0] for line in output.splitlines() if ": C" in line or ": F" in line}
    assert len(files_with_errors) == len(list(BROKEN.glob("*.yaml")))


def test_unmapped_subscribe_profile_is_warned(tmp_path: Path) -> None:
    """An outbound profile collection without SubscribeProfile gets warning W001 (it would unsubscribe)."""
    text = (ROOT / "collections" / "add-profile-from-hub.yaml").read_text()
    start = text.index("  - type: static\n    destination: SubscribeProfile")
    (tmp_path / "c.yaml").write_text(text[:start])
    report = load_collections([tmp_path])
    assert report.errors == []
    assert [w.code for w in report.warnings if w.code == "W001"] == ["W001"]
    assert "every profile this collection sends is unsubscribed" in report.warnings[0].message


def test_validate_json_output_lists_problems() -> None:
    """--json prints machine-readable problems with file, line, column and code."""
    import json

    result = CliRunner().invoke(main, ["validate", "--json", str(BROKEN / "duplicate_key.yaml")])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["errors"][0]["code"] == "C003"
    assert (data["errors"][0]["line"], data["errors"][0]["column"]) == (12, 5)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A path that does not exist is reported, not ignored."""
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'nope.yaml'}: C000 no such file" in result.output


@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_files_are_named_as_given_whatever_the_working_directory(where: str, tmp_path: Path, monkeypatch) -> None:
    """A problem names its file as the root given joined with the file's name, the shipped ones as collections/."""
    monkeypatch.chdir(ROOT if where == "root" else tmp_path)
    report = load_collections([BROKEN])
    assert {str(BROKEN / p.name) for p in BROKEN.glob("*.yaml")} == {e.location.file for e in report.errors}
    shipped = load_collections()
    assert {f"collections/{p.name}" for p in (ROOT / "collections").glob("*.yaml")} == {c.file for c in shipped.collections}
    assert all(w.location.file.startswith("collections/") for w in shipped.warnings)


def test_row_kinds_are_the_schema_row_types() -> None:
    """The row registry has one kind per row type the schema allows, each under its YAML name."""
    import json

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$defs"]["row"]["properties"]["type"]["enum"] == list(ROW_KINDS)
    assert all(name == kind.name for name, kind in ROW_KINDS.items())


def test_every_shipped_row_plans_one_step() -> None:
    """Each compiled row tells the mapper one step: a constant, a path read or a formula."""
    steps = {(r.type, ROW_KINDS[r.type].plan(r).step) for c in load_collections().collections for r in c.rows}
    assert {("field", "read"), ("static", "constant"), ("formula", "formula")} == steps


@pytest.mark.parametrize(("text", "expected"), [
    ("email", ("email",)),
    ("location.address1", ("location", "address1")),
    ("Lines[0].Sku", ("Lines", 0, "Sku")),
    ("a[1][2]", ("a", 1, 2)),
])
def test_parse_path(text: str, expected: tuple) -> None:
    """Source paths split on dots, with [N] as list positions."""
    assert expected == parse_path(text)
