"""Golden cases: each folder under tests/golden/<collection>/<case>/ holds a source record
(record.json) and optionally existing.json, links.json, parent.json, parent_mapped.json; the
outcome of running it through the shipped collection is compared with expected.yml.

Regenerate deliberately with `pytest tests/test_golden.py --force-regen`, then review the diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli._collections import StaticResolver
from engine.collection import load_collections
from engine.formula.helpers import bind_helpers
from engine.runner import Runner, flatten_jsonapi

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p for p in GOLDEN.glob("*/*") if (p / "record.json").exists())


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture(scope="module")
def shipped():
    report = load_collections()
    assert report.errors == []
    return report.collections


def test_every_shipped_collection_has_golden_cases(shipped) -> None:
    """Each shipped collection has at least one golden case folder."""
    stems = {Path(c.file).stem for c in shipped}
    assert stems == {p.parent.name for p in CASES}


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_golden_case(case: Path, shipped, data_regression) -> None:
    """The collection maps the case's record to the reviewed expected outcome."""
    coll = shipped.find(case.parent.name)
    record = _json(case / "record.json")
    if coll.direction == "to_hub":
        record = flatten_jsonapi(record)
    runner = Runner(shipped, functions=bind_helpers(StaticResolver(_json(case / "links.json"))))
    outcome = runner.run(coll, record, existing=_json(case / "existing.json"),
                         parent=_json(case / "parent.json"), parent_mapped=_json(case / "parent_mapped.json"))
    data_regression.check(outcome.to_dict(), fullpath=case / "expected.yml")


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_map_command_prints_the_golden_outcome(case: Path) -> None:
    """`klaviyo-sync map` prints the same outcome as the golden file, exit 1 only when invalid."""
    import yaml
    from click.testing import CliRunner

    from engine.cli import main

    args = ["map", case.parent.name, str(case / "record.json")]
    for option, name in (("--existing", "existing.json"), ("--links", "links.json"), ("--parent", "parent.json"),
                         ("--parent-mapped", "parent_mapped.json")):
        if (case / name).exists():
            args += [option, str(case / name)]
    result = CliRunner().invoke(main, args)
    expected = yaml.safe_load((case / "expected.yml").read_text())
    assert expected == json.loads(result.stdout)
    assert result.exit_code == (1 if expected["status"] == "invalid" else 0)
