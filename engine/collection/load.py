"""Step 1 of the collection pipeline: find the files, read the YAML with marks, check the schema.

Before it: the paths a user gives (``validate PATH...``, the settings' ``collections``) or the
shipped ``collections/``.  :func:`collection_files` expands folders into their ``*.yaml`` files;
:func:`read_collection` reads one file (size and encoding bounded by engine/_yaml.py), parses it
keeping each value's line and column (:class:`~engine._yaml.Mark`), and validates it against
``schemas/collection.schema.json``, each schema error worded as a one-line diagnosis at the
offending key.  After it: :mod:`.compile` compiles the checked data.  The location helpers
(:func:`location_of`, :func:`formula_location`) turn marks into locations (:class:`~engine.errors.Location`) for
every later step.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from engine._shipped import shipped
from engine._yaml import Mark, Path as YPath, load_with_marks, nearest_mark, read_yaml_file
from engine.errors import (
    CollectionError,
    CollectionReadError,
    CollectionSchemaError,
    FormulaError,
    KlaviyoSyncError,
    Location,
)

SCHEMA_PATH = shipped("schemas", "collection.schema.json")
DEFAULT_COLLECTIONS_DIR = shipped("collections")


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


@lru_cache(maxsize=1)
def _row_keys() -> dict[str, str]:
    """The key each row type takes (``{"field": "source", ...}``), read from the schema's rules for rows."""
    schema: Any = _validator().schema
    rules = schema["$defs"]["row"]["allOf"]
    return {rule["if"]["properties"]["type"]["const"]: rule["then"]["required"][0] for rule in rules}


def _humanise(err: jsonschema.ValidationError, data: Any) -> tuple[str, tuple[Any, ...]]:
    """A schema error as a one-line diagnosis, and the path to report it at."""
    path = tuple(err.absolute_path)
    where = "/".join(str(p) for p in path) or "(top level)"
    v = err.validator
    # types-jsonschema types these as possibly unset; a validator's error always carries them
    instance: Any = err.instance
    schema: Any = err.schema
    expected: Any = err.validator_value
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return f"{where}: missing required key '{missing}'", path
    if v == "additionalProperties":
        extras = sorted(set(instance) - set(schema.get("properties", {})))
        valid = ", ".join(sorted(schema.get("properties", {})))
        return (f"{where}: unknown key(s) {', '.join(map(repr, extras))}; valid keys: {valid}",
                path + (extras[0],) if extras else path)
    if v == "enum":
        return f"{where}: {instance!r} is not one of {', '.join(map(repr, expected))}", path
    if v == "type":
        return f"{where}: {_short(instance)} is not of type {expected!r}", path
    if v is None and "False schema" in err.message:
        # jsonschema reports a forbidden key at the row, not at the key: find the key by its value
        row = data
        for step in path:
            row = row[step]
        takes = _row_keys()
        key = next((k for k in takes.values() if isinstance(row, dict) and k in row and row[k] == instance), "?")
        kind = row.get("type") if isinstance(row, dict) else "?"
        needs = takes.get(kind, "?")
        return (f"{where}: key '{key}' is not allowed in a {kind} row (a {kind} row takes '{needs}')",
                path + (key,))
    return f"{where}: {err.message}", path


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def location_of(filename: str, marks: dict[YPath, Mark], path: YPath, **extra: Any) -> Location:
    """Where the value at ``path`` (or its nearest marked parent) is in the file; ``extra``: more parts (row)."""
    mark = nearest_mark(marks, path)
    return Location(file=filename, line=mark.line if mark else None, column=mark.column if mark else None, **extra)


def formula_location(filename: str, origin: Mark | None, err: FormulaError, row: str | None) -> Location:
    """Map a position inside a formula (``err.formula_line``/``formula_column``) to the YAML file's
    line and column; ``origin`` is the formula scalar's mark (block scalars count from their content)."""
    fl = getattr(err, "formula_line", None)
    fc = getattr(err, "formula_column", None)
    if origin is None:
        return Location(file=filename, row=row)
    line, col = origin.content_line or origin.line, origin.content_column or origin.column
    if fl is not None:
        if origin.style in ("|", ">"):
            line = line + fl - 1
            col = col + (fc - 1 if fc else 0)
        elif fl == 1:
            col = col + (fc - 1 if fc else 0)
        else:
            line = line + fl - 1
            col = fc or 1
    return Location(file=filename, line=line, column=col, row=row)


def display_path(path: Path) -> str:
    """How errors name a collection file, whatever the working directory: the path as the user
    gave it (a folder given joined with the file's name, never resolved), and a shipped
    collection as ``collections/<file>`` wherever the engine is installed."""
    if path.parent == DEFAULT_COLLECTIONS_DIR:
        return str(Path(DEFAULT_COLLECTIONS_DIR.name, path.name))
    return str(path)


def collection_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories into their ``*.yaml`` / ``*.yml`` files, sorted; each is the folder as
    given joined with the file's name (what :func:`display_path` shows)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.iterdir() if x.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class CheckedFile:
    """One collection file that parsed and passed the schema: what :mod:`.compile` takes.

    Attributes:
        filename: how errors name the file.
        data: the parsed YAML (plain dicts, lists and scalars).
        marks: the line and column of every value, by its path in ``data``.
    """

    filename: str
    data: dict[str, Any]
    marks: dict[YPath, Mark]


def read_collection(path: Path, filename: str) -> tuple[CheckedFile | None, list[KlaviyoSyncError]]:
    """Read one collection file, parse it with marks and check it against the schema.

    Args:
        path: the file to read.
        filename: how errors name it.

    Returns:
        The checked file and no errors, or None and every problem found (an unreadable file,
        bad YAML, each schema violation at its key).
    """
    try:
        text = read_yaml_file(path, filename)
    except OSError as exc:
        return None, [CollectionReadError(f"cannot read collection: {exc}", location=Location(file=filename))]
    except CollectionError as exc:  # too large or not UTF-8, located
        return None, [exc]
    try:
        data, marks = load_with_marks(text, filename)
    except CollectionError as exc:
        return None, [exc]
    if not isinstance(data, dict):
        return None, [CollectionSchemaError("a collection must be a YAML mapping (title, direction, rows, ...)",
                                            location=Location(file=filename, line=1, column=1))]
    schema_errors = sorted(_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    errors: list[KlaviyoSyncError] = []
    for err in schema_errors:
        message, at = _humanise(err, data)
        errors.append(CollectionSchemaError(message, location=location_of(filename, marks, at)))
    if errors:
        return None, errors
    return CheckedFile(filename, data, marks), []


__all__ = [
    "DEFAULT_COLLECTIONS_DIR", "CheckedFile", "collection_files", "display_path", "formula_location", "location_of",
    "read_collection",
]
