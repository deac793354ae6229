"""docs/outbound.md and docs/inbound.md explain every outcome word the flows count, for every
shipped collection of their direction (the "Outcomes" tables)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.collection import load_collections
from engine.flows.summary import NOT_SENT, OUTCOMES, RunSummary

ROOT = Path(__file__).resolve().parent.parent


def _outcomes_table(doc: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(column titles after the first, {word: cells}) of the table under "## Outcomes"."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("\n## Outcomes\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    header, body = cells[0], [c for c in cells[2:]]
    words: dict[str, list[str]] = {}
    for row in body:
        word = re.fullmatch(r"`([a-z ]+)`", row[0])
        assert word, f"{doc.name}: the first cell of {row} is not one `word`"
        assert len(row) == len(header), f"{doc.name}: row {word.group(1)} has {len(row)} cells, header {len(header)}"
        assert all(row[1:]), f"{doc.name}: row {word.group(1)} has an empty cell"
        words[word.group(1)] = row[1:]
    return header[1:], words


def _titles(direction: str) -> set[str]:
    report = load_collections([ROOT / "collections"])
    assert [] == report.errors
    return {c.title for c in report.collections.collections.values() if c.direction == direction}


@pytest.mark.parametrize(("doc", "direction", "extra"), [
    ("outbound.md", "to_klaviyo", (NOT_SENT,)),
    ("inbound.md", "to_hub", ()),
])
def test_the_table_lists_every_outcome_word_for_every_collection(doc: str, direction: str, extra: tuple[str, ...]) -> None:
    """Rows: exactly the words the code can count (OUTCOMES, plus outbound's per-record "not sent");
    columns: every shipped collection of the direction (a column may name two, "Add / Update ...")."""
    columns, words = _outcomes_table(ROOT / "docs" / doc)
    assert sorted([*OUTCOMES, *extra]) == sorted(words)
    named = set()
    for column in columns:
        if " / " in column:
            first, rest = column.split(" / ", 1)
            tail = rest.split(" ", 1)[1]
            named |= {f"{first} {tail}", rest}
        else:
            named.add(column)
    assert _titles(direction) == named


def test_the_summary_refuses_a_word_the_tables_do_not_explain() -> None:
    """RunSummary.count accepts only OUTCOMES, so no other word can reach a summary."""
    summary = RunSummary("poll")
    summary.count("Add Klaviyo Profile TO Hub", "created")
    with pytest.raises(ValueError, match="unknown outcome 'merged'"):
        summary.count("Add Klaviyo Profile TO Hub", "merged")
    with pytest.raises(ValueError):
        summary.count("Add Klaviyo Profile FROM Hub", NOT_SENT)
