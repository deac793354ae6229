"""YAML loading that remembers where every value came from, within bounds.

PyYAML's ``compose`` gives a node tree whose nodes carry ``start_mark``
(0-based line and column).  :func:`load_with_marks` turns that tree into
plain data *and* a table from JSON-pointer-like paths (tuples of keys and
indexes) to :class:`Mark` so that a schema error at ``rows/3/formula`` can be
reported at ``collections/x.yaml:41:16``.  It also refuses duplicate mapping
keys, which PyYAML silently accepts (the last one would win and a user's edit
would vanish without a word).

Hostile input is refused with a located error, never a traceback, a hang or
an exhausted memory (:class:`YamlLimits`): the text's size, the nesting depth
(checked while composing, so a 100,000-deep file costs nothing), the number of
alias uses and the number of values once aliases are expanded (a "billion
laughs" file stops at the limit instead of growing), and tags: only YAML's
plain types (string, integer, float, boolean, null, timestamp, list, mapping)
are accepted, so ``!!python/object`` or ``!foo`` is an error.  Bytes must be
UTF-8; the first bad byte is reported at its line and column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml

from engine.errors import (
    Location,
    YamlDuplicateKeyError,
    YamlEncodingError,
    YamlLimitError,
    YamlSyntaxError,
    YamlTagError,
)

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Mark:
    """1-based position of a YAML node; ``style`` is the scalar style ('' plain, '|', '>', '"', "'")."""

    line: int
    column: int
    style: str | None = None
    content_line: int | None = None  # first line of a block scalar's content
    content_column: int | None = None


@dataclass(frozen=True)
class YamlLimits:
    """Bounds on one YAML document.

    Attributes:
        max_bytes: size of the file (UTF-8 bytes).
        max_depth: nesting of lists and mappings (the document itself is level 1).
        max_aliases: ``*alias`` uses.
        max_values: values after alias expansion (every scalar, list and mapping counts one).
    """

    max_bytes: int = 1024 * 1024
    max_depth: int = 100
    max_aliases: int = 1000
    max_values: int = 100_000


DEFAULT_LIMITS = YamlLimits()

# The tags of YAML's plain types (what a tag-less document resolves to); anything else is refused.
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in
                        ("str", "int", "float", "bool", "null", "timestamp", "seq", "map"))


# A plain ``=`` resolves to YAML 1.1's "value" tag, which has no constructor: it is just the text.
_VALUE_TAG = "tag:yaml.org,2002:value"


def _block_content_start(lines: list[str], header_line0: int) -> tuple[int, int]:
    """For a literal/folded block scalar whose indicator is on ``header_line0`` (0-based),
    return the 1-based line and column of its first content character."""
    for i in range(header_line0 + 1, len(lines)):
        text = lines[i]
        if text.strip():
            return i + 1, len(text) - len(text.lstrip(" ")) + 1
    return header_line0 + 2, 1


def _position(text: str | bytes, index: int) -> tuple[int, int]:
    """1-based line and column of offset ``index`` in ``text``."""
    newline = b"\n" if isinstance(text, bytes) else "\n"
    line = text.count(newline, 0, index) + 1  # type: ignore[arg-type]
    start = text.rfind(newline, 0, index) + 1  # type: ignore[arg-type]
    return line, index - start + 1


def decode_yaml(data: bytes, filename: str, limits: YamlLimits = DEFAULT_LIMITS) -> str:
    """Check the size of ``data`` and decode it as UTF-8 (a BOM is allowed).

    Raises:
        YamlLimitError: more than ``limits.max_bytes``.
        YamlEncodingError: not UTF-8, located at the first bad byte.
    """
    if len(data) > limits.max_bytes:
        raise YamlLimitError(f"file is larger than {limits.max_bytes} bytes", location=Location(file=filename))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _position(data, exc.start)
        raise YamlEncodingError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} cannot be decoded",
                                location=Location(filename, line, column)) from None


def read_yaml_file(path: str | os.PathLike[str], filename: str | None = None,
                   limits: YamlLimits = DEFAULT_LIMITS) -> str:
    """Read a YAML file as text, refusing one larger than ``limits.max_bytes`` without reading it all.

    Raises:
        OSError: the file cannot be read.
        YamlLimitError, YamlEncodingError: see :func:`decode_yaml`.
    """
    name = filename if filename is not None else os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read(limits.max_bytes + 1)
    return decode_yaml(data, name, limits)


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader whose composer counts nesting and alias uses as it goes."""

    def __init__(self, stream: str, limits: YamlLimits, filename: str) -> None:
        super().__init__(stream)
        self._limits = limits
        self._filename = filename
        self._depth = 0
        self._aliases = 0

    def _limit(self, message: str, mark: Any) -> YamlLimitError:
        return YamlLimitError(message, location=Location(self._filename, mark.line + 1, mark.column + 1))

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # unannotated in types-PyYAML
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > self._limits.max_aliases:
                raise self._limit(f"more than {self._limits.max_aliases} alias uses", event.start_mark)
            return super().compose_node(parent, index)
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self._depth += 1
            if self._depth > self._limits.max_depth:
                raise self._limit(f"nested deeper than {self._limits.max_depth} levels", event.start_mark)
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)


def _compose(text: str, filename: str, limits: YamlLimits) -> yaml.Node | None:
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text, limits, filename)
        return loader.get_single_node()
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
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (control, surrogate)
        line, column = _position(text, exc.position)
        raise YamlSyntaxError(f"YAML error: character U+{exc.character:04X} is not allowed in YAML",
                              location=Location(filename, line, column)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML error: {exc}", location=Location(file=filename)) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_with_marks(
    text: str | bytes,
    filename: str,
    *,
    limits: YamlLimits = DEFAULT_LIMITS,
    key_marks: dict[Path, Mark] | None = None,
) -> tuple[Any, dict[Path, Mark]]:
    """Parse ``text`` and return ``(data, marks)``.

    Args:
        text: the document (bytes are size-checked and decoded as UTF-8 first).
        filename: shown in every error's location.
        limits: size, depth and alias bounds.
        key_marks: when given, filled with the position of each mapping *key* by its value's path.

    Raises:
        YamlSyntaxError: the text is not YAML (with the parser's line and column).
        YamlDuplicateKeyError: a mapping repeats a key.
        YamlLimitError: too large, too deep, or too many values once aliases are expanded.
        YamlTagError: a tag other than YAML's plain types.
        YamlEncodingError: bytes that are not UTF-8.
    """
    if isinstance(text, bytes):
        text = decode_yaml(text, filename, limits)
    elif len(text) > limits.max_bytes:  # a character is at least one byte
        raise YamlLimitError(f"file is larger than {limits.max_bytes} bytes", location=Location(file=filename))
    node = _compose(text, filename, limits)
    marks: dict[Path, Mark] = {}
    if node is None:
        return None, marks
    lines = text.splitlines()
    constructor = yaml.SafeLoader("")  # only used to construct scalars with YAML's own typing
    count = 0

    def where(n: yaml.Node) -> Location:
        return Location(filename, n.start_mark.line + 1, n.start_mark.column + 1)

    def _site(parent: yaml.Node, child: yaml.Node) -> Location | None:
        return where(parent) if id(child) in built else None

    def scalar(n: yaml.ScalarNode) -> Any:
        try:
            return constructor.construct_object(n, deep=True)
        except (ValueError, OverflowError) as exc:
            if n.tag == "tag:yaml.org,2002:timestamp":
                return n.value  # looks like a date but is none (2023-13-45): keep the text as written
            if n.tag == "tag:yaml.org,2002:int":
                raise YamlLimitError(f"integer with {len(n.value)} characters is too large",
                                     location=where(n)) from None
            raise YamlSyntaxError(f"YAML value cannot be read: {exc}", location=where(n)) from None
        except yaml.YAMLError as exc:
            raise YamlSyntaxError(f"YAML value cannot be read: {getattr(exc, 'problem', None) or exc}",
                                  location=where(n)) from None

    built: set[int] = set()  # nodes already built once: meeting one again is an alias use

    def build(n: yaml.Node, path: Path, depth: int, alias_site: Location | None = None) -> Any:
        """``alias_site``: where the outermost alias expansion under way started (errors blame it)."""
        nonlocal count
        count += 1
        if count > limits.max_values:
            raise YamlLimitError(f"more than {limits.max_values} values once aliases are expanded",
                                 location=alias_site or where(n))
        built.add(id(n))
        if depth > limits.max_depth and not isinstance(n, yaml.ScalarNode):
            # reachable through aliases of nested values (or a recursive anchor)
            raise YamlLimitError(f"nested deeper than {limits.max_depth} levels", location=alias_site or where(n))
        if n.tag == _VALUE_TAG and isinstance(n, yaml.ScalarNode) and n.style is None:
            n = yaml.ScalarNode("tag:yaml.org,2002:str", n.value, n.start_mark, n.end_mark, n.style)
        if n.tag not in _PLAIN_TAGS:
            if n.tag == "tag:yaml.org,2002:merge":
                raise YamlTagError("merge keys (<<) are not supported: write the keys out", location=where(n))
            raise YamlTagError(f"unsupported YAML tag {n.tag!r} (only plain strings, numbers, booleans, "
                               "null, dates, lists and mappings)", location=where(n))
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
            return scalar(n)
        marks[path] = mark
        if isinstance(n, yaml.SequenceNode):
            return [build(child, path + (i,), depth + 1, alias_site or _site(n, child))
                    for i, child in enumerate(n.value)]
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            seen: dict[Any, yaml.Node] = {}
            for key_node, value_node in n.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise YamlSyntaxError("YAML mapping keys must be scalars", location=where(key_node))
                if key_node.tag == _VALUE_TAG and key_node.style is None:
                    key_node = yaml.ScalarNode("tag:yaml.org,2002:str", key_node.value, key_node.start_mark,
                                               key_node.end_mark)
                if key_node.tag not in _PLAIN_TAGS:
                    build(key_node, path, depth + 1)  # raises the tag error at the key
                key = scalar(key_node)
                if key in seen:
                    first = seen[key].start_mark.line + 1
                    raise YamlDuplicateKeyError(
                        f"duplicate key {key!r} (first defined on line {first}); the later value would "
                        "silently replace the earlier one",
                        location=where(key_node),
                    )
                seen[key] = key_node
                if key_marks is not None:
                    key_marks[path + (key,)] = Mark(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = build(value_node, path + (key,), depth + 1, alias_site or _site(n, value_node))
            return out
        raise YamlSyntaxError(f"unsupported YAML node {type(n).__name__}", location=where(n))

    return build(node, (), 1), marks


def nearest_mark(marks: dict[Path, Mark], path: Path) -> Mark | None:
    """The mark of ``path`` or of its closest ancestor that has one."""
    p = tuple(path)
    while True:
        if p in marks:
            return marks[p]
        if not p:
            return None
        p = p[:-1]
