"""Checks sandbox answers against Klaviyo's published OpenAPI specs with ``openapi-core``.

:class:`AnswerChecker` loads the spec of one revision (``schemas/klaviyo/``) and
validates a real HTTP answer: the status must be one the operation declares (``4XX``
ranges included), the ``Content-Type`` must be JSON:API (what Klaviyo sends at every
revision, API-NOTES §1; the 2023-10-15 spec declares ``application/json`` for the
same bodies, so at that revision the body is checked against the ``application/json``
schema) and the body must match the declared schema.

Nulls: the 2023-10-15 spec marks no field ``nullable`` although Klaviyo sends
``null`` (API-NOTES §2.5).  Before checking against an older spec, every response
schema of the operations checked is copied with its ``$ref``\\ s inlined, and each
property the newest spec (2026-07-15) marks ``nullable`` at the same place in the
same operation's answer (same property path) is marked ``nullable`` too.  Nothing
is allowed by hand.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

SPEC_DIR = Path(__file__).resolve().parents[1] / "schemas" / "klaviyo"
SPEC_FILES = {"2023-10-15": "openapi-2023-10-15.json", "2026-07-15": "openapi-stable-latest.json"}
NEWEST = "2026-07-15"
JSONAPI = "application/vnd.api+json"
HOST = "https://a.klaviyo.com"

Path_ = tuple[str, ...]


@cache
def _raw(revision: str) -> dict[str, Any]:
    return json.loads((SPEC_DIR / SPEC_FILES[revision]).read_text(encoding="utf-8"))


def _deref(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def nullable_paths(doc: dict[str, Any], node: Any, prefix: Path_ = (), stack: tuple[str, ...] = ()) -> set[Path_]:
    """Property paths (names, ``[]`` for array items, ``{}`` for map values) a schema marks nullable."""
    out: set[Path_] = set()
    if not isinstance(node, dict):
        return out
    if node.get("nullable") is True:
        out.add(prefix)
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref not in stack:
            out |= nullable_paths(doc, _deref(doc, ref), prefix, (*stack, ref))
        return out
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key) or []:
            out |= nullable_paths(doc, sub, prefix, stack)
    for name, sub in (node.get("properties") or {}).items():
        out |= nullable_paths(doc, sub, (*prefix, name), stack)
    if isinstance(node.get("items"), dict):
        out |= nullable_paths(doc, node["items"], (*prefix, "[]"), stack)
    if isinstance(node.get("additionalProperties"), dict):
        out |= nullable_paths(doc, node["additionalProperties"], (*prefix, "{}"), stack)
    return out


def inline_with_nulls(doc: dict[str, Any], node: Any, allowed: set[Path_], prefix: Path_ = (),
                      stack: tuple[str, ...] = ()) -> Any:
    """A copy of ``node`` with ``$ref``\\ s inlined (cycles kept as refs) and ``allowed`` paths nullable."""
    if not isinstance(node, dict):
        return copy.deepcopy(node)
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref in stack:
            return copy.deepcopy(node)
        out = inline_with_nulls(doc, _deref(doc, ref), allowed, prefix, (*stack, ref))
        out.update({k: copy.deepcopy(v) for k, v in node.items() if k != "$ref"})
    else:
        out = {}
        for key, value in node.items():
            if key in ("allOf", "anyOf", "oneOf"):
                out[key] = [inline_with_nulls(doc, sub, allowed, prefix, stack) for sub in value]
            elif key == "properties":
                out[key] = {name: inline_with_nulls(doc, sub, allowed, (*prefix, name), stack)
                            for name, sub in value.items()}
            elif key == "items" and isinstance(value, dict):
                out[key] = inline_with_nulls(doc, value, allowed, (*prefix, "[]"), stack)
            elif key == "additionalProperties" and isinstance(value, dict):
                out[key] = inline_with_nulls(doc, value, allowed, (*prefix, "{}"), stack)
            else:
                out[key] = copy.deepcopy(value)
    if prefix in allowed and prefix:
        out["nullable"] = True
    return out


def _operation(doc: dict[str, Any], method: str, template: str) -> tuple[str, dict[str, Any]] | None:
    for key in (template, template + "/"):
        op = doc["paths"].get(key, {}).get(method.lower())
        if op:
            return key, op
    return None


def _response_schema(doc: dict[str, Any], response: dict[str, Any]) -> tuple[str, Any] | None:
    if "$ref" in response:
        response = _deref(doc, response["$ref"])
    for media, content in (response.get("content") or {}).items():
        if "schema" in content:
            return media, content["schema"]
    return None


def spec_with_newest_nulls(revision: str, operations: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The spec of ``revision`` whose answers to ``operations`` allow the newest spec's nulls."""
    doc = copy.deepcopy(_raw(revision))
    if revision == NEWEST:
        return doc
    newest = _raw(NEWEST)
    for method, template in operations:
        mine, theirs = _operation(doc, method, template), _operation(newest, method, template)
        if mine is None or theirs is None:
            continue
        for status, response in list(mine[1].get("responses", {}).items()):
            new_response = theirs[1].get("responses", {}).get(status)
            found, new_found = _response_schema(doc, response), _response_schema(newest, new_response or {})
            if found is None or new_found is None:
                continue
            allowed = nullable_paths(newest, new_found[1])
            media, schema = found
            resolved = _deref(doc, response["$ref"]) if "$ref" in response else response
            resolved = copy.deepcopy(resolved)
            resolved["content"][media]["schema"] = inline_with_nulls(doc, schema, allowed)
            mine[1]["responses"][status] = resolved
    return doc


class AnswerChecker:
    """Validates answers of one revision; remembers which ``(method, template)`` it checked, by status."""

    def __init__(self, revision: str, operations: Iterable[tuple[str, str]]) -> None:
        self.revision = revision
        self.doc = spec_with_newest_nulls(revision, list(operations))
        self.api = OpenAPI.from_dict(self.doc, config=Config(spec_validator_cls=None))
        self.checked: dict[tuple[str, str], set[int]] = {}

    def declares(self, method: str, template: str) -> bool:
        return _operation(self.doc, method, template) is not None

    def check(self, method: str, template: str, resp: httpx.Response) -> None:
        """Raise AssertionError naming the route when ``resp`` breaks the spec."""
        where = f"{method} {template} at {self.revision} answered {resp.status_code}"
        body = resp.content
        ctype = resp.headers.get("content-type", "").split(";")[0].strip()
        if body:
            assert ctype == JSONAPI, f"{where}: Content-Type {ctype!r}, Klaviyo sends {JSONAPI}"
        op = _operation(self.doc, method, template)
        if op is None:
            # A route this revision does not have: Klaviyo's generic client error applies.
            assert 400 <= resp.status_code < 500, where
            schema = self.doc["components"]["responses"]["ClientError"]["content"]
            self._validate_generic(where, next(iter(schema.values()))["schema"], resp.json())
        else:
            spec_path, operation = op
            declared = self._declared_media(operation, resp.status_code)
            if declared is None and self._declares_status(operation, resp.status_code):
                assert not body, f"{where}: the spec declares no body for this answer, got {body[:200]!r}"
            media = declared if (body and declared and ctype == JSONAPI) else (ctype or "application/json")
            request = MockRequest(HOST, method.lower(), resp.request.url.path, args=dict(resp.request.url.params))
            response = MockResponse(body, status_code=resp.status_code, content_type=media,
                                    headers={k: v for k, v in resp.headers.items() if k.lower() != "content-type"})
            try:
                self.api.validate_response(request, response)
            except Exception as exc:  # openapi-core's errors carry the schema errors as __cause__/schema_errors
                details = [str(e.message) + " at " + "/".join(map(str, e.absolute_path))
                           for e in getattr(exc, "schema_errors", None) or getattr(exc.__cause__, "schema_errors", None) or []]
                raise AssertionError(f"{where}: {type(exc).__name__}: {exc}; {details[:8]}; body {body[:600]!r}") from None
        self.checked.setdefault((method, template), set()).add(resp.status_code)

    @staticmethod
    def _declares_status(operation: dict[str, Any], status: int) -> bool:
        return str(status) in operation.get("responses", {})

    def _declared_media(self, operation: dict[str, Any], status: int) -> str | None:
        responses = operation.get("responses", {})
        response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        if response is None:
            return None
        found = _response_schema(self.doc, response)
        return found[0] if found else None

    def _validate_generic(self, where: str, schema: dict[str, Any], body: Any) -> None:
        from openapi_schema_validator import OAS30Validator

        errors = sorted(OAS30Validator(schema).iter_errors(body), key=str)
        assert not errors, f"{where}: {[e.message for e in errors][:5]}"


__all__ = ["AnswerChecker", "nullable_paths", "inline_with_nulls", "spec_with_newest_nulls", "NEWEST"]
