"""Request validation against Klaviyo's published OpenAPI spec of the revision sent.

The specs live in ``schemas/klaviyo/`` (byte-exact copies; see its README).
Revisions before 2024-10-15 are checked against ``openapi-2023-10-15.json``,
later ones against ``openapi-stable-latest.json`` (2026-07-15): the two
revisions the project supports end to end.  OpenAPI 3.0 schemas are JSON Schema
plus ``nullable``; :func:`_to_json_schema` rewrites that keyword, then
``jsonschema`` validates with ``$ref`` resolved through a ``referencing``
registry holding the whole document.
"""

from __future__ import annotations

import json
import re
import threading
from functools import cache
from typing import Any

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT7

from engine._shipped import shipped
from engine.klaviyo import revision as rev
from engine.sandbox._state import invalid

SPEC_DIR = shipped("schemas", "klaviyo")
SPEC_FILES = {"2023-10-15": "openapi-2023-10-15.json", "2026-07-15": "openapi-stable-latest.json"}
_URI = "urn:klaviyo-openapi"
_lock = threading.Lock()


def spec_revision_for(revision: str) -> str:
    """Which stored spec checks a request sent with ``revision``."""
    return "2026-07-15" if rev.supports(revision, "no_trailing_slash") else "2023-10-15"


def _to_json_schema(node: Any) -> Any:
    """Rewrite OpenAPI's ``nullable: true`` into JSON Schema (recursively, on a copy)."""
    if isinstance(node, list):
        return [_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k not in ("nullable", "example", "description")}
    if node.get("nullable") is True:
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class Spec:
    """One revision's spec: operations by (method, path) and their validators."""

    def __init__(self, spec_revision: str) -> None:
        raw = json.loads((SPEC_DIR / SPEC_FILES[spec_revision]).read_text(encoding="utf-8"))
        self.revision = spec_revision
        self.paths: dict[str, Any] = raw["paths"]
        doc = {"components": {"schemas": _to_json_schema(raw["components"]["schemas"])}}
        self._registry: Registry = Registry().with_resource(_URI, DRAFT7.create_resource(doc))
        self._validators: dict[tuple[str, str], jsonschema.Draft7Validator] = {}

    def operation(self, method: str, template: str) -> dict[str, Any] | None:
        """The spec's operation for ``template`` (written without trailing slash) and method."""
        for key in (template, template + "/"):
            op: dict[str, Any] | None = self.paths.get(key, {}).get(method.lower())
            if op:
                return op
        return None

    def _validator(self, method: str, template: str, op: dict[str, Any]) -> jsonschema.Draft7Validator | None:
        key = (method, template)
        if key not in self._validators:
            content: dict[str, Any] = (op.get("requestBody") or {}).get("content") or {}
            media: dict[str, Any] = next(iter(content.values()), {})
            schema = media.get("schema")
            if schema is None:
                return None
            schema = _to_json_schema(schema)
            if "$ref" in schema:
                schema = {"$ref": _URI + schema["$ref"]}
            self._validators[key] = jsonschema.Draft7Validator(schema, registry=self._registry)
        return self._validators[key]

    def validate_body(self, method: str, template: str, body: Any, revision: str | None = None) -> None:
        """Raise Klaviyo's 400 naming the field when ``body`` breaks the spec.

        ``revision`` is the one the request was sent with, where it differs from the spec's: what
        Klaviyo relaxed between the two (:data:`RELAXED`) is not refused.
        """
        op = self.operation(method, template)
        if op is None or "requestBody" not in op:
            return
        validator = self._validator(method, template, op)
        if validator is None:
            return
        errors = validator.iter_errors(body)
        relaxed = [r for r in RELAXED.get((method, template), ()) if revision and rev.supports(revision, r[0])]
        if relaxed:
            errors = (e for e in validator.iter_errors(body) if not any(_relaxes(r, e) for r in relaxed))
        err = jsonschema.exceptions.best_match(errors)
        if err is None:
            return
        path = "/" + "/".join(str(p) for p in err.absolute_path)
        detail = err.message
        if err.validator == "required":
            m = re.match(r"'([^']+)' is a required property", err.message)
            if m:
                path = path.rstrip("/") + "/" + m.group(1)
                detail = f"'{m.group(1)}' is a required field."
        elif err.validator == "enum":
            detail = (f"{json.dumps(err.instance)} is not a valid choice. "
                      f"Valid choices: {', '.join(map(str, err.validator_value))}.")
        elif err.validator == "type":
            detail = f"{json.dumps(err.instance)[:80]} is not of type {err.validator_value}."
        raise invalid(detail, pointer=path if path != "/" else "/data")

    def validate_query(self, method: str, template: str, query: dict[str, str]) -> None:
        """Check declared query parameters (enums, integer bounds) of the operation."""
        op = self.operation(method, template)
        if op is None:
            return
        for param in op.get("parameters") or []:
            if param.get("in") != "query" or param.get("name") not in query:
                continue
            name, raw, schema = param["name"], query[param["name"]], param.get("schema") or {}
            if schema.get("type") == "array":
                enum = (schema.get("items") or {}).get("enum")
                for item in raw.split(","):
                    if enum and item not in enum:
                        raise invalid(f"'{item}' is not a valid choice for '{name}'. "
                                      f"Valid choices: {', '.join(enum)}.", parameter=name)
            elif schema.get("type") == "integer":
                try:
                    val = int(raw)
                except ValueError:
                    raise invalid(f"'{name}' must be an integer.", parameter=name) from None
                if "maximum" in schema and val > schema["maximum"] or "minimum" in schema and val < schema["minimum"]:
                    raise invalid(
                        f"'{name}' must be between {schema.get('minimum')} and {schema.get('maximum')}.", parameter=name
                    )
            elif schema.get("enum") and raw not in schema["enum"]:
                raise invalid(f"'{raw}' is not a valid choice for '{name}'. "
                              f"Valid choices: {', '.join(schema['enum'])}.", parameter=name)


#: What a later revision than the stored spec's allows: (method, template) -> (capability, the
#: JSON pointer of the object, the property it no longer requires).  Revisions 2023-12-15 to
#: 2024-07-15 are checked against the 2023-10-15 spec, whose subscribe jobs require a list.
RELAXED: dict[tuple[str, str], tuple[tuple[str, str, str], ...]] = {
    ("POST", "/api/profile-subscription-bulk-create-jobs"): (
        ("optional_subscribe_list", "/data", "relationships"),
        ("optional_subscribe_list", "/data/relationships", "list"),
    ),
}


def _relaxes(rule: tuple[str, str, str], err: jsonschema.ValidationError) -> bool:
    _capability, at, name = rule
    where = "/" + "/".join(str(p) for p in err.absolute_path)
    return err.validator == "required" and where == at and f"'{name}' is a required property" == err.message


@cache
def _load(spec_revision: str) -> Spec:
    return Spec(spec_revision)


def spec_for(revision: str) -> Spec:
    """The (cached) :class:`Spec` that checks requests sent with ``revision``."""
    with _lock:
        return _load(spec_revision_for(revision))


__all__ = ["Spec", "spec_for", "spec_revision_for", "SPEC_DIR"]
