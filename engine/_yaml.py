"""YAML loading that remembers where every value came from.

PyYAML's ``compose`` gives a node tree whose nodes carry ``start_mark``
(0-based line and column).  :func:`load_with_marks` turns that tree into
plain data *and* a table from JSON-pointer-like paths (tuples of keys and
indexes) to :class:`Mark` so that a schema error at ``rows/3/formula`` can be
reported at ``collections/x.yaml:41:16``.  It also refuses duplicate mapping
keys, which PyYAML silently accepts (the last one would win and a user's edit
would vanish without a word).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from engine.errors import CollectionError, Location

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    """1-based position of a YAML node; ``style`` is the scalar style ('' plain, '|', '>', '"', "'")."""

    line: int
    column: int
    style: str | None = None
    content_line: int | None = None  # first line of a block scalar's content
    content_column: int | None = None


class YamlDuplicateKeyError(CollectionError):
    code = "C003"


class YamlSyntaxError(CollectionError):
    code = "C001"


def _block_content_start(lines: list[str], header_line0: int) -> tuple[int, int]:
    """For a literal/folded block scalar whose indicator is on ``header_line0`` (0-based),
    return the 1-based line and column of its first content character."""
    for i in range(header_line0 + 1, len(lines)):
        text = lines[i]
        if text.strip():
            return i + 1, len(text) - len(text.lstrip(" ")) + 1
    return header_line0 + 2, 1


def load_with_marks(text: str, filename: str) -> tuple[Any, dict[Path, Mark]]:
    """Parse ``text`` and return ``(data, marks)``.

    Raises:
        YamlSyntaxError: the text is not YAML (with the parser's line and column).
        YamlDuplicateKeyError: a mapping repeats a key.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        raise YamlSyntaxError(
            f"YAML syntax error: {problem}",
            location=Location(
                file=filename,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            ),
        ) from None
    except yaml.YAMLError as exc:  # reader errors (bad characters) carry no mark object
        raise YamlSyntaxError(f"YAML error: {exc}", location=Location(file=filename)) from None
    marks: dict[Path, Mark] = {}
    if node is None:
        return None, marks
    lines = text.splitlines()
    constructor = yaml.SafeLoader("")  # only used to construct scalars with YAML's own typing

    def build(n: yaml.Node, path: Path) -> Any:
        mark = Mark(n.start_mark.line + 1, n.start_mark.column + 1)
        if isinstance(n, yaml.ScalarNode):
            style = n.style or ""
            content_line = content_col = None
            if style in ("|", ">"):
                content_line, content_col = _block_content_start(lines, n.start_mark.line)
            elif style in ('"', "'"):
                content_line, content_col = mark.line, mark.column + 1
            else:
                content_line, content_col = mark.line, mark.column
            marks[path] = Mark(mark.line, mark.column, style, content_line, content_col)
            return constructor.construct_object(n, deep=True)
        marks[path] = mark
        if isinstance(n, yaml.SequenceNode):
            return [build(child, path + (i,)) for i, child in enumerate(n.value)]
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in n.value:
                key = constructor.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    raise YamlSyntaxError(
                        "YAML mapping keys must be scalars",
                        location=Location(filename, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                    )
                if key in seen:
                    first = seen[key].start_mark.line + 1
                    raise YamlDuplicateKeyError(
                        f"duplicate key {key!r} (first defined on line {first}); the later value would "
                        "silently replace the earlier one",
                        location=Location(filename, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                    )
                seen[key] = key_node
                out[key] = build(value_node, path + (key,))
            return out
        raise YamlSyntaxError(f"unsupported YAML node {type(n).__name__}", location=Location(filename, mark.line, mark.column))

    return build(node, ()), marks


def nearest_mark(marks: dict[Path, Mark], path: Path) -> Mark | None:
    """The mark of ``path`` or of its closest ancestor that has one."""
    p = tuple(path)
    while True:
        if p in marks:
            return marks[p]
        if not p:
            return None
        p = p[:-1]
