"""What Klaviyo answers for each call, and checking that an answer is one of those.

Every operation of :class:`~engine.klaviyo.KlaviyoClient` names the statuses it
expects, each with the body shape Klaviyo gives with it (see the OpenAPI specs in
``shared/klaviyo``).  :func:`check` holds an answer against that; only an
:class:`Answer` that passed is handed to the operation, which reads it through the
accessors below -- never by indexing the raw JSON -- so a wrong-shaped body can
never surface as a ``KeyError`` or ``TypeError``.

Shapes:

* :data:`RESOURCE` -- ``{"data": {"type": str, "id": str, "attributes": dict, ...}}``
  (one resource: profile create/get/patch, list create, profile-import, jobs);
* :data:`PAGE` -- ``{"data": [resource, ...], "links": dict or absent,
  "included": [resource, ...] or absent}`` (every ``GET`` of a collection);
* :data:`EMPTY` -- no body (``202``/``204``); a JSON body is tolerated, anything
  else (an HTML page) is not;
* :data:`ERRORS` -- ``{"errors": [dict, ...]}``, a JSON:API error document (the
  ``404`` of a get, the ``409`` of a profile create).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from engine.errors import MalformedAnswerError

RESOURCE = "a JSON:API resource"
PAGE = "a JSON:API page of resources"
EMPTY = "an empty body"
ERRORS = "a JSON:API error document"

#: Largest nesting accepted in an answer before it is called malformed (Klaviyo's go ~6 deep).
MAX_DEPTH = 64


def is_json_type(response: httpx.Response) -> bool:
    """Whether the answer says it is JSON (``application/json``, ``application/vnd.api+json``, ``*+json``)."""
    ctype: str = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))


def _depth_ok(value: Any) -> bool:
    """Whether ``value`` nests at most :data:`MAX_DEPTH` deep; walked a level at a time,
    containers only (a page of 100 profiles has ~60,000 values but ~2,500 containers)."""
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 1  # of the values in `level`; their children are one deeper
    while level:
        if depth >= MAX_DEPTH and any(level):
            return False  # a child of any of them would be deeper than MAX_DEPTH
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below.extend(v for v in children if isinstance(v, (dict, list)))
        level = below
        depth += 1
    return True


def parse_json(response: httpx.Response) -> Any:
    """The answer's JSON body.

    Raises:
        MalformedAnswerError: not JSON by content type, not UTF-8, not valid JSON, or nested too deep.
    """
    if not is_json_type(response):
        ctype = response.headers.get("content-type") or "no content type"
        raise MalformedAnswerError(f"expected JSON, got {ctype.split(';')[0].strip()}")
    try:
        body = json.loads(response.content)
    except RecursionError:
        raise MalformedAnswerError("the JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedAnswerError(f"the body is not valid JSON ({type(exc).__name__})") from None
    if not _depth_ok(body):
        raise MalformedAnswerError("the JSON is nested too deeply")
    return body


def _resource_problem(item: Any, where: str) -> str | None:
    if not isinstance(item, dict):
        return f"{where} is not an object"
    for key in ("type", "id"):
        if not isinstance(item.get(key), str) or not item[key]:
            return f"{where}.{key} is not a non-empty string"
    if not isinstance(item.get("attributes"), dict):
        return f"{where}.attributes is not an object"
    if "relationships" in item and not isinstance(item["relationships"], (dict, type(None))):
        return f"{where}.relationships is not an object"
    return None


def _shape_problem(shape: str, body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if shape == RESOURCE:
        if "data" not in body:
            return "no data member"
        return _resource_problem(body["data"], "data")
    if shape == PAGE:
        data = body.get("data")
        if not isinstance(data, list):
            return "data is not a list" if "data" in body else "no data member"
        for i, item in enumerate(data):
            problem = _resource_problem(item, f"data[{i}]")
            if problem:
                return problem
        links = body.get("links")
        if links is not None:
            if not isinstance(links, dict):
                return "links is not an object"
            if not isinstance(links.get("next"), (str, type(None))):
                return "links.next is not a string"
        included = body.get("included")
        if included is not None:
            if not isinstance(included, list):
                return "included is not a list"
            for i, item in enumerate(included):
                problem = _resource_problem(item, f"included[{i}]")
                if problem:
                    return problem
        return None
    if shape == ERRORS:
        errors = body.get("errors")
        if not isinstance(errors, list) or not errors or not all(isinstance(e, dict) for e in errors):
            return "errors is not a list of objects"
        return None
    raise ValueError(f"unknown answer shape {shape!r}")


@dataclass(frozen=True)
class Answer:
    """An answer that passed :func:`check`: its status and validated body (``None`` when empty)."""

    status: int
    body: Any
    response: httpx.Response

    def resource(self) -> dict[str, Any]:
        """The ``data`` resource of a :data:`RESOURCE` answer."""
        return dict(self.body["data"])

    def resource_id(self) -> str:
        """The ``data.id`` of a :data:`RESOURCE` answer."""
        return str(self.body["data"]["id"])

    def items(self) -> list[dict[str, Any]]:
        """The ``data`` list of a :data:`PAGE` answer."""
        return list(self.body["data"])

    def included(self) -> list[dict[str, Any]]:
        """The ``included`` list of a :data:`PAGE` answer (empty when absent)."""
        return list(self.body.get("included") or [])

    def next_link(self) -> str | None:
        """``links.next`` of a :data:`PAGE` answer."""
        return (self.body.get("links") or {}).get("next") or None

    def first_error(self) -> dict[str, Any]:
        """``errors[0]`` of an :data:`ERRORS` answer."""
        return dict(self.body["errors"][0])

    def duplicate_profile_id(self) -> str | None:
        """``errors[0].meta.duplicate_profile_id`` of a 409 ``duplicate_profile``, else ``None``."""
        err = self.first_error()
        if err.get("code") != "duplicate_profile":
            return None
        meta = err.get("meta")
        dup = meta.get("duplicate_profile_id") if isinstance(meta, dict) else None
        return dup if isinstance(dup, str) and dup else None


def check(response: httpx.Response, shape: str) -> Answer:
    """Hold ``response`` against ``shape``; return the :class:`Answer` or raise :class:`MalformedAnswerError`."""
    if shape == EMPTY:
        if not response.content.strip():
            return Answer(response.status_code, None, response)
        return Answer(response.status_code, parse_json(response), response)
    body = parse_json(response)
    problem = _shape_problem(shape, body)
    if problem:
        raise MalformedAnswerError(problem)
    return Answer(response.status_code, body, response)


def describe(expect: Mapping[int, str]) -> str:
    """``HTTP 201 with a JSON:API resource`` -- what an operation expects, for messages."""
    return " or ".join(f"HTTP {status} with {shape}" for status, shape in sorted(expect.items()) if status < 300)


__all__ = ["Answer", "MalformedAnswerError", "RESOURCE", "PAGE", "EMPTY", "ERRORS", "check", "describe", "is_json_type",
           "parse_json"]
