"""README.md, CONTRIBUTING.md, BENCHMARKS.md and docs/*.md stand on their own: every relative link
names a file of the repository (and, with #anchor, a heading in it), and no text points outside
the repository (../shared/..., absolute paths of this machine)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def _prose(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_relative_link_names_a_file_and_heading_of_the_repository() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(_prose(doc)):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s):, mailto:
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            inside = dest == ROOT or ROOT in dest.parents
            if not inside or not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file in the repository)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert [] == broken


def test_no_text_points_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|/work/|shared/seeds|API-NOTES")
    found = [f"{doc.relative_to(ROOT)}:{n}: {line.strip()}"
             for doc in DOCS for n, line in enumerate(_prose(doc).splitlines(), 1) if outside.search(line)]
    assert [] == found


def test_the_specification_summary_covers_the_five_articles() -> None:
    """docs/specification.md has a section per article and quotes every catalog text."""
    from engine import catalog

    text = (ROOT / "docs" / "specification.md").read_text(encoding="utf-8")
    assert 5 == len(re.findall(r"^## \d\. ", text, flags=re.M))
    texts = [v for k, v in vars(catalog).items() if k.isupper() and not k.startswith("_") and isinstance(v, str) and " " in v]
    assert [] == [t for t in texts if t not in text]
