"""`klaviyo-sync docs`: docs/collections/ is what the command generates from the shipped collections;
the HTML pages carry the mapping tables and formulas in full; the messages a page lists are the ones
the mapper really logs; `--out` writes a fresh folder, replaces only its own pages and writes nothing
when a collection is broken.  Commands run as real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from engine import catalog
from engine.collection import CollectionSet, load_collections
from engine.docgen import MARKER, collection_docs, render_document, render_pages
from engine.formula.helpers import bind_helpers
from engine.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "collections"
SHIPPED = ROOT / "collections"
REGENERATE = ".venv/bin/python -m engine docs --out docs/collections"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``klaviyo-sync ARGS`` as a process in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k not in ("KLAVIYO_SYNC_CONFIG", "KLAVIYO_SYNC_HUB")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "engine", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def folder_text(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.iterdir())}


def shipped_pages(fmt: str = "md") -> dict[str, str]:
    report = load_collections()
    assert [] == report.errors
    return render_pages(report.collections, fmt)


def test_docs_collections_is_current() -> None:
    """The committed docs/collections/ equals the pages generated from the shipped collections."""
    expected = shipped_pages()
    assert expected == folder_text(DOCS), f"docs/collections/ is stale: {REGENERATE}"


def test_out_writes_every_page_into_a_fresh_folder(tmp_path: Path) -> None:
    """`docs --out` makes a missing folder and writes an index plus one page per collection, as committed."""
    out = tmp_path / "new" / "pages"
    done = cli("docs", str(SHIPPED), "--out", str(out), cwd=tmp_path)
    assert 0 == done.returncode, done.stderr
    assert f"9 page(s) written to {out}\n" == done.stderr
    assert folder_text(DOCS) == folder_text(out)
    index = (out / "README.md").read_text(encoding="utf-8")
    assert MARKER in index.splitlines()[0]
    for page in sorted(p.stem for p in SHIPPED.glob("*.yaml")):
        assert f"]({page}.md)" in index  # the index links every collection's page


def test_without_out_one_document_goes_to_stdout(tmp_path: Path) -> None:
    """Without --out the index and every collection are printed as one document linked by anchors."""
    done = cli("docs", "--format", "md", cwd=tmp_path)
    assert 0 == done.returncode, done.stderr
    assert "" == done.stderr and [] == list(tmp_path.iterdir())
    report = load_collections()
    assert render_document(report.collections, "md") == done.stdout
    assert "[Add Klaviyo Profile TO Hub](#add-klaviyo-profile-to-hub)" in done.stdout
    assert "\n## Add Klaviyo Profile TO Hub\n" in done.stdout


class _Tables(HTMLParser):
    """The rows of each table by class, and the text of each <pre> by class."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.pres: dict[str, list[str]] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._pre: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        if tag == "table":
            self._table = cls
            self.tables.setdefault(cls, [])
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "pre":
            self._pre = cls
            self.pres.setdefault(cls, []).append("")
        elif tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "pre":
            self._pre = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self.pres[self._pre][-1] += data


def parsed(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html)
    parser.close()
    return parser


def test_html_pages_carry_the_mapping_table_and_every_formula_in_full() -> None:
    """The HTML page of the Placed Order collection has its rows in the specification's columns and its
    multi-line formulas verbatim, one-line formulas in the table."""
    pages = shipped_pages("html")
    assert {"index.html"} | {f"{p.stem}.html" for p in SHIPPED.glob("*.yaml")} == set(pages)
    page = parsed(pages["add-placed-order-event-from-hub.html"])
    rows = page.tables["mappings"]
    assert ["Mapping Type", "Source Field (Hub)", "Destination Field (Klaviyo)", "Description"] == rows[0]
    data = yaml.safe_load((SHIPPED / "add-placed-order-event-from-hub.yaml").read_text(encoding="utf-8"))
    assert [r["destination"] for r in data["rows"]] == [r[2] for r in rows[1:]]
    assert ["Dynamic Formula", "See ProfileId formula below", "ProfileId"] == rows[1][:3]
    assert ["Static", '"Placed Order"', "MetricName"] == rows[3][:3]
    assert ["Dynamic Formula", "to_str(Id)", "UniqueId"] == rows[4][:3]
    assert ["Field", "Total", "NumericValue"] == rows[5][:3]
    assert rows[1][3].startswith("Required. Resolves the Klaviyo profile")
    formulas = [r["formula"].rstrip() for r in data["rows"] if r["type"] == "formula" and "\n" in r["formula"].strip()]
    assert formulas == page.pres["formula"] and 2 == len(formulas)
    messages = [r[0] for r in page.tables["messages"][1:]]
    assert any(m.startswith(catalog.ORDER_EVENT_NOT_CREATED) and catalog.TRANSACTION_MAPPING_INCOMPLETE in m
               for m in messages)
    assert ["Parent Collection", "None"] == page.tables["facts"][4]
    assert "add-ordered-product-event-from-hub.html" in page.links
    index = parsed(pages["index.html"])
    assert 1 + 8 == len(index.tables["collections"])


def test_html_escapes_what_a_collection_says(tmp_path: Path) -> None:
    """A description or formula holding markup is shown as text in the HTML, never as markup."""
    text = (SHIPPED / "add-profile-to-hub.yaml").read_text(encoding="utf-8")
    text = text.replace("description: >-\n  Creates a hub Customer", "description: >-\n  <script>x()</script> Creates", 1)
    text = text.replace("formula: first_name\n", 'formula: first_name if "<b>" != "" else None\n', 1)
    (tmp_path / "c.yaml").write_text(text, encoding="utf-8")
    report = load_collections([tmp_path])
    assert [] == report.errors
    html = render_pages(report.collections, "html")["c.html"]
    assert "<script>" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html
    assert 'first_name if "<b>" != "" else None' in [r[1] for r in parsed(html).tables["mappings"]]


def test_md_pages_show_multi_line_formulas_in_full() -> None:
    """Every formula of every shipped collection stands in its Markdown page verbatim."""
    pages = shipped_pages()
    for path in sorted(SHIPPED.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        page = pages[f"{path.stem}.md"]
        for row in data["rows"]:
            if row["type"] == "formula":
                formula = row["formula"].strip()
                assert (f"```python\n{formula}\n```" in page if "\n" in formula
                        else f"`{formula}`" in page), (path.name, row["destination"])
        for name, formula in (data.get("let") or {}).items():
            assert f"{name}:\n\n```python\n{formula.strip()}\n```" in page
        if data.get("filter"):
            assert f"```python\n{data['filter'].strip()}\n```" in page
        else:
            assert "This collection does not have a mapping filter applied." in page


def _pattern(text: str) -> re.Pattern[str]:
    """A listed message as a pattern: its <placeholders> stand for any text."""
    return re.compile("".join(".+" if part.startswith("<") else re.escape(part)
                              for part in re.split(r"(<[^>]+>)", text)))


def _listed(collections: CollectionSet, title: str) -> list[tuple[re.Pattern[str], tuple[str, ...]]]:
    (doc,) = [d for d in collection_docs(collections) if d.title == title]
    return [(_pattern(m.text), m.codes) for m in doc.messages]


CUSTOM = """\
title: Custom Profile TO Hub
direction: to_hub
hub_entity: Customer
klaviyo_resource: profile
action: add
status: enabled
rows:
  - type: formula
    destination: EmailAddress
    formula: email
    importance: required
  - type: field
    source: location.city
    destination: Comment
    on_missing: error
  - type: formula
    destination: FirstName
    formula: first_name
    expect: string
  - type: formula
    destination: LastName
    formula: last_name
    max_length: 3
  - type: formula
    destination: Company
    formula: get(properties, "Firm")
"""


@pytest.mark.parametrize(("record", "code"), [
    ({"first_name": "Ann", "location": {"city": "Oslo"}}, "M002"),
    ({"email": "a@example.com"}, "M010"),
    ({"email": "a@example.com", "location": {"city": "Oslo"}, "first_name": 7}, "M003"),
    ({"email": "a@example.com", "location": {"city": "Oslo"}, "last_name": "Longer"}, "M004"),
])
def test_a_page_lists_what_the_mapper_logs(tmp_path: Path, record: dict[str, object], code: str) -> None:
    """Each problem the real mapper reports for a record is a message the collection's page lists, with its code."""
    (tmp_path / "custom.yaml").write_text(CUSTOM, encoding="utf-8")
    report = load_collections([tmp_path])
    assert [] == report.errors
    coll = report.collections["Custom Profile TO Hub"]
    outcome = Runner(report.collections, functions=bind_helpers(None)).run(coll, {"properties": {"Firm": "X"}, **record})
    problems = [p for p in outcome.problems if p.code == code]
    assert problems, outcome.to_dict()
    listed = _listed(report.collections, coll.title)
    for p in problems:
        assert any(pattern.fullmatch(p.message) and p.code in codes for pattern, codes in listed), (p, listed)


def test_a_shipped_page_lists_its_required_messages() -> None:
    """A profile without email through Add Klaviyo Profile TO Hub logs the catalog text its page lists."""
    report = load_collections()
    coll = report.collections["Add Klaviyo Profile TO Hub"]
    outcome = Runner(report.collections, functions=bind_helpers(None)).run(coll, {"first_name": "Ann"})
    assert [("M002", catalog.EMAIL_REQUIRED)] == [(p.code, p.message) for p in outcome.problems]
    assert any(p.fullmatch(catalog.EMAIL_REQUIRED) and "M002" in c for p, c in _listed(report.collections, coll.title))


def test_every_catalog_text_is_documented() -> None:
    """Every text of the error catalog a flow logs stands in the generated documentation."""
    document = render_document(load_collections().collections, "md")
    texts = {name: value for name, value in vars(catalog).items() if name.isupper() and isinstance(value, str)}
    not_logged = {"EMAIL_ALREADY_EXISTS"}  # the expected link, never an error-log entry (docs/inbound.md)
    missing = [name for name, text in texts.items() if name not in not_logged and text not in document]
    assert [] == missing


def test_broken_collections_are_reported_like_validate_and_nothing_is_written(tmp_path: Path) -> None:
    """A broken collection gives validate's located errors, exit 1, and no folder (``map`` too)."""
    broken = tmp_path / "collections"
    broken.mkdir()
    text = (SHIPPED / "add-profile-to-hub.yaml").read_text(encoding="utf-8")
    text = text.replace("formula: first_name\n", "formula: frist_name\n")
    (broken / "bad.yaml").write_text(text, encoding="utf-8")
    line = text.splitlines().index("    formula: frist_name") + 1
    out = tmp_path / "out"
    done = cli("docs", "collections", "--out", str(out), cwd=tmp_path)  # problems name the folder as given
    checked = cli("validate", "collections", cwd=tmp_path)
    assert (1, 1) == (done.returncode, checked.returncode)
    assert "" == done.stdout
    errors = [line for line in checked.stderr.splitlines() if ": C0" in line]
    assert [f"collections/bad.yaml:{line}:14: C010 unknown name 'frist_name' in formula; did you mean 'first_name'? "
            "(in rows[2] FirstName)"] == errors
    assert errors == done.stderr.splitlines()
    assert not out.exists()
    record = tmp_path / "record.json"
    record.write_text('{"email": "ann@example.com"}', encoding="utf-8")
    mapped = cli("map", "--collections", "collections", "add-profile-to-hub", str(record), cwd=tmp_path)
    assert (1, "", errors) == (mapped.returncode, mapped.stdout, mapped.stderr.splitlines())


def test_out_replaces_its_own_pages_and_refuses_anyone_elses(tmp_path: Path) -> None:
    """A second --out into the same folder replaces the pages; a file of a page's name that docs did not
    write stops the run (exit 2) before anything is written."""
    out = tmp_path / "pages"
    assert 0 == cli("docs", "--out", str(out), cwd=tmp_path).returncode
    (out / "add-profile-to-hub.md").write_text(f"<!-- {MARKER} -->\nold\n", encoding="utf-8")
    again = cli("docs", "--out", str(out), cwd=tmp_path)
    assert 0 == again.returncode, again.stderr
    assert folder_text(DOCS) == folder_text(out)

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("# my own notes\n", encoding="utf-8")
    refused = cli("docs", "--out", str(mine), cwd=tmp_path)
    assert 2 == refused.returncode
    assert (f"{mine}: G001 the folder holds README.md, which klaviyo-sync docs did not write; nothing was "
            "written (give --out another folder, or move those files)\n") == refused.stderr
    assert {"README.md": "# my own notes\n"} == folder_text(mine)


def test_html_out_writes_an_index_html(tmp_path: Path) -> None:
    """`docs --format html --out` writes index.html and one .html page per collection."""
    done = cli("docs", "--format", "html", "--out", "site", cwd=tmp_path)
    assert 0 == done.returncode, done.stderr
    assert shipped_pages("html") == folder_text(tmp_path / "site")
