"""The OpenAPI 3.1 document of the hub API, served at ``/openapi.json``.

The record schemas are built from the hub's own field tables (:mod:`engine.hub._records`), so
the document cannot disagree with what ``hub import`` and the API accept.  Every route of one
subscription is listed twice: as ``/api/...`` (the serve's own subscription) and as
``/api/subscriptions/{subscription}/...`` (operation id ``...InSubscription``), built from the first.
"""

from __future__ import annotations

from typing import Any

from engine.hub._records import ADDRESS_FIELDS, CUSTOMER_FIELDS, LINE_FIELDS, TRANSACTION_FIELDS

_JSON = {int: "integer", float: "number", str: "string", bool: "boolean", dict: "object", list: "array"}
_READ_ONLY = {"CreatedAt", "UpdatedAt", "CustomerId", "TransactionId"}


def _schema(fields: dict[str, tuple[type, ...]], required: tuple[str, ...] = (), **children: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name, types in fields.items():
        kinds = sorted({_JSON[t] for t in types})
        if kinds == ["integer", "number"]:
            kinds = ["number"]
        prop: dict[str, Any] = {"type": [*kinds, "null"]}
        if name in children:
            prop["items"] = {"$ref": f"#/components/schemas/{children[name]}"}
        if name in _READ_ONLY:
            prop["readOnly"] = True
        props[name] = prop
    return {"type": "object", "additionalProperties": False, "properties": props, "required": list(required)}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"required": True, "description": text, "content": {"application/json": {"schema": schema}}}


def _answer(text: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": text}
    if schema is not None:
        out["content"] = {"application/json": {"schema": schema}}
    return out


_ERRORS = {
    "400": _answer("Not JSON, or not the expected shape (V400; line and column for JSON syntax)", _ref("Error")),
    "401": _answer("No token, a wrong token, or service.token is not set (V401)", _ref("Error")),
    "413": _answer("Body larger than service.max_body_bytes (V413)", _ref("Error")),
}
_RECORD_ERRORS = {**_ERRORS, "409": _answer("Email address already exists (H002)", _ref("Error")),
                  "422": _answer("A record refused with the message hub import gives, located in the body; "
                                 "nothing was stored", _ref("Error"))}
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
_SUBSCRIPTION = {"name": "subscription", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_]{0,39}$"},
                 "description": "a subscription of the shared hub (GET /api/subscriptions lists them)"}
_READ_ONLY_ANSWER = _answer("The subscription is read-only in this serve: it has no settings for it "
                            "(serve --subscriptions DIR) (V403)", _ref("Error"))
_UNKNOWN = _answer("No such subscription in the hub database (V404)", _ref("Error"))


def _records(entity: str, kind: str) -> dict[str, Any]:
    one_or_many = {"oneOf": [_ref(entity), {"type": "array", "items": _ref(entity), "minItems": 1}]}
    return {
        "post": {"operationId": f"create{entity}s", "summary": f"Create or update {kind} (as hub import does: "
                 f"by Id, else by {'email' if entity == 'Customer' else 'transaction number'})",
                 "requestBody": _body(one_or_many, "One record, or a list stored all-or-nothing"),
                 "responses": {"201": _answer("Every record was added", _ref("WriteResult")),
                               "200": _answer("Stored (updated or unchanged)", _ref("WriteResult")),
                               **_RECORD_ERRORS}, "security": [{"bearer": []}]},
    }


def _one(entity: str, *, patch: bool) -> dict[str, Any]:
    ops: dict[str, Any] = {
        "get": {"operationId": f"get{entity}", "summary": f"One {entity} with its Klaviyo link and queue state",
                "parameters": _ID, "responses": {"200": _answer(entity, _ref(entity)),
                                                 "404": _answer("No such record (H003)", _ref("Error")),
                                                 "401": _ERRORS["401"]}, "security": [{"bearer": []}]},
        "put": {"operationId": f"put{entity}", "summary": f"Replace-or-create {entity} {{id}} (fields absent keep "
                "their values, as a re-import)", "parameters": _ID,
                "requestBody": _body(_ref(entity), "The whole record"),
                "responses": {"200": _answer("Stored", _ref("WriteResult")),
                              "201": _answer("Added", _ref("WriteResult")), **_RECORD_ERRORS},
                "security": [{"bearer": []}]},
    }
    if patch:
        ops["patch"] = {"operationId": f"patch{entity}", "summary": f"Change some fields of {entity} {{id}}",
                        "parameters": _ID, "requestBody": _body(_ref(entity), "The fields to change"),
                        "responses": {"200": _answer("Stored", _ref("WriteResult")),
                                      "404": _answer("No such record (H003)", _ref("Error")), **_RECORD_ERRORS},
                        "security": [{"bearer": []}]}
    return ops


def _op(op_id: str, summary: str, responses: dict[str, Any], *, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, secure: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if body is not None:
        out["requestBody"] = body
    if params:
        out["parameters"] = params
    if secure:
        out["security"] = [{"bearer": []}]
    return out


def _q(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


def _in_subscription(paths: dict[str, Any]) -> dict[str, Any]:
    """Each ``/api/...`` operation again under ``/api/subscriptions/{subscription}/...``."""
    out: dict[str, Any] = {}
    for path, ops in paths.items():
        if not path.startswith("/api/") or path.startswith("/api/subscriptions"):
            continue
        scoped: dict[str, Any] = {}
        for method, op in ops.items():
            op = {**op, "operationId": op["operationId"] + "InSubscription",
                  "parameters": [_SUBSCRIPTION, *op.get("parameters", [])],
                  "responses": {**op["responses"], "404": op["responses"].get("404", _UNKNOWN)}}
            if method != "get":
                op["responses"]["403"] = _READ_ONLY_ANSWER
            scoped[method] = op
        out["/api/subscriptions/{subscription}" + path[len("/api"):]] = scoped
    return out


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict)."""
    obj = {"type": "object"}
    paths: dict[str, Any] = {
        "/api/customers": _records("Customer", "Customers"),
        "/api/customers/{id}": _one("Customer", patch=True),
        "/api/transactions": _records("Transaction", "Transactions"),
        "/api/transactions/{id}": _one("Transaction", patch=False),
        "/api/errors": {"get": _op("listErrors", "Error-log entries, newest first (unresolved unless all=1)",
                                   {"200": _answer("One page of entries and the total", obj), **_ERRORS},
                                   params=[_q("flow", {"type": "string"}, "collection title"),
                                           _q("level", {"enum": ["error", "warning"]}, "level"),
                                           _q("code", {"type": "string"}, "error code, e.g. K001"),
                                           _q("record", {"type": "string"}, "hub Id or Klaviyo id"),
                                           _q("q", {"type": "string"}, "text in the message or detail"),
                                           _q("all", {"type": "boolean"}, "include resolved entries"),
                                           _q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size"),
                                           _q("offset", {"type": "integer", "minimum": 0}, "entries to skip")])},
        "/api/errors/{id}/resolve": {"post": _op("resolveError", "Mark an entry resolved",
                                                 {"200": _answer("The entry", obj),
                                                  "404": _answer("No such entry (H003)", _ref("Error")), **_ERRORS},
                                                 params=_ID)},
        "/api/errors/{id}/retry": {"post": _op(
            "retryError", "Send the entry's record again (push a hub record, pull a Klaviyo profile, or poll now); "
            "on success the record's open entries are resolved",
            {"200": _answer("What was retried, ok, and the entries resolved", obj),
             "404": _answer("No such entry (H003)", _ref("Error")),
             "422": _answer("The entry names no record (V422)", _ref("Error")), **_ERRORS}, params=_ID)},
        "/api/queue": {"get": _op("getQueue", "Outbound changes waiting, oldest first",
                                  {"200": _answer("Length and changes", obj), **_ERRORS},
                                  params=[_q("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "at most")])},
        "/api/sync/pull": {"post": _op(
            "syncPull", "Manual Sync of one Klaviyo profile into the hub",
            {"200": _answer("The profile's result and the run summary", obj),
             "404": _answer("Klaviyo has no such profile (I003)", _ref("Error")),
             "422": _answer("Not a profile id (I002)", _ref("Error")), **_ERRORS},
            body=_body({"type": "object", "required": ["profile_id"],
                        "properties": {"profile_id": {"type": "string", "examples": ["01H8TVABCDEF1234567890"]}}},
                       "The profile id (ULID or numeric)"))},
        "/api/sync/push": {"post": _op(
            "syncPush", "Manual Sync of one hub Customer or Transaction to Klaviyo; dry_run shows the match "
            "decision and the exact requests and sends nothing",
            {"200": _answer("The outbound report", obj), "404": _answer("No such record (H003)", _ref("Error")),
             **_ERRORS},
            body=_body({"type": "object", "required": ["entity", "id"],
                        "properties": {"entity": {"enum": ["customer", "transaction"]}, "id": {"type": "integer"},
                                       "dry_run": {"type": "boolean", "default": False}}}, "What to send"))},
        "/api/status": {"get": _op("getStatus", "Counts, cursors, outcomes per flow, Klaviyo calls, connection",
                                   {"200": _answer("Status", obj), **_ERRORS})},
        "/api/subscriptions": {"get": _op(
            "listSubscriptions", "Every subscription of the hub (one on a SQLite hub) with its counts, last poll "
            "and whether this serve may act on it",
            {"200": _answer("The hub (password masked), this serve's subscription, and one row each",
                            _ref("SubscriptionList")), **_ERRORS})},
        "/api/subscriptions/{subscription}": {"get": _op(
            "getSubscription", "One subscription's row", {"200": _answer("The row", _ref("Subscription")),
                                                         "404": _UNKNOWN, **_ERRORS}, params=[_SUBSCRIPTION])},
        "/healthz": {"get": _op("healthz", "Alive", {"200": _answer("ok", obj)}, secure=False)},
        "/readyz": {"get": _op("readyz", "Hub open and Klaviyo reachable",
                               {"200": _answer("ready", obj), "503": _answer("not ready, with the reason", obj)},
                               secure=False)},
        "/metrics": {"get": _op("metrics", "Prometheus text format",
                                {"200": {"description": "metrics",
                                         "content": {"text/plain": {"schema": {"type": "string"}}}}},
                                secure=False)},
        "/openapi.json": {"get": _op("openapi", "This document", {"200": _answer("OpenAPI 3.1", obj)}, secure=False)},
    }
    paths.update(_in_subscription(paths))
    error = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "detail": {"type": ["string", "null"]},
            "where": {"type": ["string", "null"], "description": "e.g. request body[2], or request body:1:7"},
            "line": {"type": ["integer", "null"]}, "column": {"type": ["integer", "null"]}}},
        "errors": {"type": "array", "description": "every refused record, when several were", "items": obj}}}
    write = {"type": "object", "properties": {"record": obj, "outcome": {"enum": ["added", "updated", "unchanged"]},
                                              "results": {"type": "array", "items": obj},
                                              "queue_length": {"type": "integer"}}}
    counts = {"type": "object", "properties": {k: {"type": "integer"} for k in (
        "customers", "transactions", "links", "queue_length", "unresolved_errors", "unresolved_warnings")}}
    subscription = {"type": "object", "required": ["name", "own", "settings", "actions"], "properties": {
        "name": {"type": "string"}, "own": {"type": "boolean", "description": "this serve's own subscription"},
        "settings": {"type": "boolean", "description": "this serve has its settings"},
        "actions": {"type": "boolean", "description": "writes, retries, resolve and Manual Sync are allowed"},
        "syncing": {"type": "boolean", "description": "this serve polls and dispatches it"},
        "counts": counts, "last_poll": {"type": ["string", "null"], "description": "when a poll last saved a cursor"},
        "error": {"type": "object", "description": "instead of counts, when the subscription cannot be opened"}}}
    listing = {"type": "object", "properties": {"hub": {"type": "string"}, "own": {"type": "string"},
                                                "shared": {"type": "boolean"},
                                                "subscriptions": {"type": "array", "items": _ref("Subscription")}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "klaviyo-sync hub API", "version": "1",
                 "description": "Customers and Transactions in the hub's record shape (as hub import), the error "
                                "log, the outbound queue and Manual Sync. Every /api call needs "
                                "'Authorization: Bearer <service.token>'. The routes act on the serve's own "
                                "subscription; under /api/subscriptions/{subscription}/ on the one named "
                                "(read-only when the serve has no settings for it)."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "service.token from the settings"}},
            "schemas": {
                "Customer": _schema(CUSTOMER_FIELDS, ("EmailAddress", "CustomerNumber"), Addresses="Address"),
                "Address": _schema(ADDRESS_FIELDS),
                "Transaction": _schema(TRANSACTION_FIELDS, ("TransactionNumber",), Lines="TransactionLine"),
                "TransactionLine": _schema(LINE_FIELDS),
                "Error": error,
                "WriteResult": write,
                "Subscription": subscription,
                "SubscriptionList": listing,
            },
        },
    }


__all__ = ["document"]
