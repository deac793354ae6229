"""The hub API, pages, security and observability of the service, run in-process on a real loopback
port against the real sandbox and a real hub file."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from aiohttp import web

from engine import catalog
from engine.hub import SqliteHub, import_jsonl
from engine.service import Service, build_app
from engine.service._openapi import document
from engine.settings import load_settings

KEY = "pk_service_api_00000001"
TOKEN = "api-token-abcdef0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


async def _start(tmp_path: Path, url: str, *, token: bool = True, triggers: bool = True,
                 extra: str = "") -> tuple[web.AppRunner, Service, str]:
    path = tmp_path / "klaviyo-sync.yaml"
    trig = "{customer: true, transaction: true}" if triggers else "{customer: false, transaction: false}"
    path.write_text(f"api_url: {url}\napi_key: {KEY}\nhub: hub.db\npoll_interval: 1h\noutbound_triggers: {trig}\n"
                    + (f"service:\n  token: {TOKEN}\n  max_body_bytes: 4096\n" if token else "") + extra)
    service = Service(load_settings(path), tick=0.1)
    runner = web.AppRunner(build_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    service.start()
    return runner, service, f"http://{host}:{port}"


@pytest.fixture
async def api(sandbox, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Service, Any]]:
    runner, service, url = await _start(tmp_path, sandbox.url)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as client:
        yield client, service, sandbox
    await service.stop()
    await runner.cleanup()


async def _wait_queue_empty(client: httpx.AsyncClient) -> None:
    import asyncio

    for _ in range(100):
        if not (await client.get("/api/queue")).json()["length"]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the queue never emptied")


async def test_a_customer_written_through_the_api_is_stored_queued_and_sent(api) -> None:
    """POST /api/customers answers 201 with the stored record; the change is dispatched to Klaviyo."""
    client, _, sandbox = api
    resp = await client.post("/api/customers", json={"EmailAddress": "api1@example.com", "CustomerNumber": "A-1",
                                                     "FirstName": "Ada"})
    assert 201 == resp.status_code
    body = resp.json()
    assert ("added", "api1@example.com", 1) == (body["outcome"], body["record"]["EmailAddress"], body["queue_length"])
    await _wait_queue_empty(client)
    got = (await client.get(f"/api/customers/{body['record']['Id']}")).json()
    assert got["KlaviyoId"] in sandbox.state.profiles
    assert "Ada" == sandbox.state.profiles[got["KlaviyoId"]]["attributes"]["first_name"]


async def test_bad_records_get_the_import_messages_located_in_the_body_and_store_nothing(api, tmp_path: Path) -> None:
    """A list with bad items is refused whole (422), each item's message as hub import words it."""
    client, service, _ = api
    items = [{"EmailAddress": "ok@example.com", "CustomerNumber": "1"},
             {"CustomerNumber": "2"},
             {"EmailAddress": "t@example.com", "CustomerNumber": 5}]
    resp = await client.post("/api/customers", json=items)
    assert 422 == resp.status_code
    errors = resp.json()["errors"]
    jsonl = tmp_path / "same.jsonl"
    jsonl.write_text("\n".join(json.dumps(i) for i in items[1:]) + "\n")
    other = SqliteHub(tmp_path / "other.db")
    try:
        report = import_jsonl(other, "customers", jsonl)
    finally:
        other.close()
    assert [e.message for e in report.errors] == [e["message"] for e in errors]
    assert [catalog.EMAIL_REQUIRED, "Customer.CustomerNumber must be a string, got number"] == \
        [e["message"] for e in errors]
    assert ["request body[1]", "request body[2]"] == [e["where"] for e in errors]
    assert 0 == (await client.get("/api/status")).json()["counts"]["customers"]


async def test_bad_json_gets_400_with_line_and_column(api) -> None:
    """A body that is not JSON is answered 400 V400 with where it broke, and nothing is stored."""
    client, _, _ = api
    resp = await client.post("/api/customers", content=b'{"EmailAddress": "x@example.com",\n "CustomerNumber": }')
    assert 400 == resp.status_code
    assert {"code": "V400", "where": "request body:2:20", "line": 2, "column": 20} == \
        {k: resp.json()["error"][k] for k in ("code", "where", "line", "column")}


async def test_an_oversized_body_gets_413_before_it_is_read(api) -> None:
    """A body over service.max_body_bytes is refused with 413 V413."""
    client, _, _ = api
    resp = await client.post("/api/customers", content=b"[" + b'{"EmailAddress": "a@b.c"},' * 400 + b"{}]")
    assert (413, "V413") == (resp.status_code, resp.json()["error"]["code"])
    assert "larger than 4096 bytes" in resp.json()["error"]["message"]


async def test_unknown_routes_and_methods_get_clear_json_answers(api) -> None:
    """An unknown route is 404 V404, a wrong method 405 V405, both as JSON."""
    client, _, _ = api
    missing = await client.get("/api/nothing-here")
    wrong = await client.delete("/api/customers")
    assert (404, "V404") == (missing.status_code, missing.json()["error"]["code"])
    assert (405, "V405") == (wrong.status_code, wrong.json()["error"]["code"])
    assert "allowed: POST" in wrong.json()["error"]["message"]


async def test_every_api_call_needs_the_token(api) -> None:
    """Without the bearer token, or with a wrong one, the API answers 401 and changes nothing."""
    client, _, _ = api
    base = str(client.base_url)
    async with httpx.AsyncClient(base_url=base) as anon:
        none = await anon.post("/api/customers", json={"EmailAddress": "a@example.com", "CustomerNumber": "1"})
        wrong = await anon.get("/api/queue", headers={"authorization": "Bearer nope"})
    assert [401, 401] == [none.status_code, wrong.status_code]
    assert "Bearer" in none.headers["www-authenticate"]
    assert TOKEN not in none.text + wrong.text
    assert 0 == (await client.get("/api/status")).json()["counts"]["customers"]


async def test_without_a_token_the_api_is_disabled_and_pages_are_read_only(sandbox, tmp_path: Path) -> None:
    """No service.token: /api answers 401 naming the setting, pages show, forms are refused 403."""
    runner, service, url = await _start(tmp_path, sandbox.url, token=False)
    try:
        async with httpx.AsyncClient(base_url=url) as anon:
            api = await anon.get("/api/queue")
            page = await anon.get("/errors")
            form = await anon.post("/sync/push", data={"entity": "customer", "id": "1", "csrf": "x"},
                                   headers={"accept": "text/html"})
        assert (401, True) == (api.status_code, "set service.token" in api.json()["error"]["message"])
        assert (200, True) == (page.status_code, "read-only" in page.text)
        assert (403, True) == (form.status_code, "V403" in form.text)
    finally:
        await service.stop()
        await runner.cleanup()


async def test_pages_need_a_session_and_forms_a_csrf_token(api) -> None:
    """Pages redirect to /login; a wrong token is refused; a form without its CSRF token gets 403."""
    client, _, _ = api
    async with httpx.AsyncClient(base_url=str(client.base_url), follow_redirects=False) as browser:
        first = await browser.get("/errors")
        assert (303, "/login?next=%2Ferrors") == (first.status_code, first.headers["location"])
        login = await browser.get("/login")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', login.text).group(1)
        bad = await browser.post("/login", data={"csrf": csrf, "token": "wrong", "next": "/"})
        assert 401 == bad.status_code
        good = await browser.post("/login", data={"csrf": csrf, "token": TOKEN, "next": "/errors"})
        assert (303, "/errors") == (good.status_code, good.headers["location"])
        page = await browser.get("/errors")
        assert 200 == page.status_code
        forged = await browser.post("/sync/push", data={"entity": "customer", "id": "1", "csrf": csrf},
                                    headers={"accept": "text/html"})
        assert 403 == forged.status_code  # the sid changed at login: the old CSRF token is stale
        assert TOKEN not in page.text + login.text


async def test_a_dry_run_push_shows_the_decision_and_requests_and_sends_nothing(api) -> None:
    """POST /api/sync/push with dry_run shows the match decision and the exact requests; Klaviyo is unchanged."""
    client, service, sandbox = api
    hub = SqliteHub(service.hub_path)
    try:
        cid = hub.add_customer({"EmailAddress": "dry@example.com", "CustomerNumber": "D-1"})["Id"]
    finally:
        hub.close()
    resp = await client.post("/api/sync/push", json={"entity": "customer", "id": cid, "dry_run": True})
    body = resp.json()
    assert (200, True, True) == (resp.status_code, body["dry_run"], body["ok"])
    record = body["records"][0]
    assert record["decision"]
    assert any(r["method"] == "POST" and r["path"].endswith("/profiles/") for r in record["requests"]), record
    assert not any(p["attributes"].get("email") == "dry@example.com" for p in sandbox.state.profiles.values())


async def test_a_manual_pull_brings_one_profile_into_the_hub(api) -> None:
    """POST /api/sync/pull with a profile id makes it a hub Customer; an unknown id is 404 I003."""
    client, _, sandbox = api
    pid = sandbox.state.add_profile(email="pulled@example.org", first_name="P")
    resp = await client.post("/api/sync/pull", json={"profile_id": pid})
    assert (200, True) == (resp.status_code, resp.json()["ok"])
    cid = resp.json()["result"]["customer_id"]
    assert "pulled@example.org" == (await client.get(f"/api/customers/{cid}")).json()["EmailAddress"]
    missing = await client.post("/api/sync/pull", json={"profile_id": "01H8TVABCDEF1234567890"})
    assert (404, "I003") == (missing.status_code, missing.json()["error"]["code"])


async def test_metrics_health_and_readiness(api) -> None:
    """/healthz is ok, /readyz checks hub and Klaviyo, /metrics counts requests, records and the queue."""
    client, _, _ = api
    await client.post("/api/customers", json={"EmailAddress": "m@example.com", "CustomerNumber": "M-1"})
    await _wait_queue_empty(client)
    assert "ok" == (await client.get("/healthz")).json()["status"]
    ready = (await client.get("/readyz")).json()
    assert {"hub": "ok", "klaviyo": "ok"} == ready["checks"]
    text = (await client.get("/metrics")).text
    assert 'klaviyo_sync_http_requests_total{method="POST",operation="/api/customers",status="201"} 1.0' in text
    assert 'klaviyo_sync_records_total{flow="Add Klaviyo Profile FROM Hub",outcome="created"} 1.0' in text
    assert "klaviyo_sync_queue_length 0.0" in text
    assert re.search(r'klaviyo_sync_klaviyo_requests_total\{operation="create_profile"\} [1-9]', text)
    assert "klaviyo_sync_poll_lag_seconds" in text


async def test_readiness_fails_when_klaviyo_is_unreachable(tmp_path: Path) -> None:
    """/readyz answers 503 naming Klaviyo when its URL does not answer."""
    runner, service, url = await _start(tmp_path, "http://127.0.0.1:9", triggers=False)
    try:
        async with httpx.AsyncClient(base_url=url) as anon:
            resp = await anon.get("/readyz")
        assert 503 == resp.status_code
        assert resp.json()["checks"]["klaviyo"].startswith("not reachable")
    finally:
        await service.stop()
        await runner.cleanup()


async def test_the_openapi_document_lists_exactly_the_api_routes(api) -> None:
    """/openapi.json describes every route of the app and no other, with valid record schemas."""
    client, service, _ = api
    doc = (await client.get("/openapi.json")).json()
    assert document() == doc
    app = build_app(service)
    routes = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and (r.resource.canonical.startswith("/api/")
                                             or r.resource.canonical in {"/healthz", "/readyz", "/metrics",
                                                                         "/openapi.json"})
              and r.method != "HEAD"}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    customer = {**doc["components"]["schemas"]["Customer"], "$defs": {}}
    schema = json.loads(json.dumps(customer).replace("#/components/schemas/Address", "#/$defs/Address"))
    schema["$defs"]["Address"] = doc["components"]["schemas"]["Address"]
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"EmailAddress": "a@b.c", "CustomerNumber": "1", "Addresses": [{"City": "X"}]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"EmailAddress": "a@b.c", "CustomerNumber": "1", "Colour": "x"}, schema)


async def test_error_log_filters_paging_and_resolve(api) -> None:
    """GET /api/errors filters by flow, level, code, record and text, pages, and resolve marks an entry."""
    client, service, _ = api
    hub = SqliteHub(service.hub_path)
    try:
        for i in range(7):
            hub.errors.log("Flow A", f"broken thing {i}", code="K001", entity="Customer", hub_id=i)
        hub.errors.log("Flow B", "a warning 50%", level="warning", code="I005", klaviyo_id="01ABC")
    finally:
        hub.close()
    page = (await client.get("/api/errors", params={"flow": "Flow A", "limit": 3, "offset": 3})).json()
    assert (7, [3, 2, 1]) == (page["total"], [e["HubId"] for e in page["entries"]])
    assert 1 == (await client.get("/api/errors", params={"level": "warning"})).json()["total"]
    assert 1 == (await client.get("/api/errors", params={"record": "01ABC"})).json()["total"]
    assert 1 == (await client.get("/api/errors", params={"q": "50%"})).json()["total"]
    assert 7 == (await client.get("/api/errors", params={"code": "K001"})).json()["total"]
    first = page["entries"][0]["Id"]
    resolved = (await client.post(f"/api/errors/{first}/resolve")).json()
    assert resolved["ResolvedAt"]
    assert 6 == (await client.get("/api/errors", params={"flow": "Flow A"})).json()["total"]
    assert 7 == (await client.get("/api/errors", params={"flow": "Flow A", "all": "1"})).json()["total"]
    bad = await client.get("/api/errors", params={"limit": "many"})
    assert (400, "V400") == (bad.status_code, bad.json()["error"]["code"])


async def test_the_settings_service_token_is_a_secret(tmp_path: Path) -> None:
    """service.token comes from ${ENV}, is masked in the settings view and counted among the secrets."""
    path = tmp_path / "k.yaml"
    path.write_text("service:\n  token: ${SVC}\n  host: 127.0.0.1\n  port: 0\n")
    settings = load_settings(path, env={"SVC": "tok-123456"})
    assert ("tok-123456", "env:SVC") == (settings.service.token.reveal(), settings.service.token.source)
    assert "tok-123456" in settings.secrets()
    assert "tok-123456" not in json.dumps(settings.display())
    assert {"host": "127.0.0.1", "port": 0, "max_body_bytes": 1048576} == \
        {k: v for k, v in settings.display()["service"].items() if k != "token"}


async def test_status_and_dashboard_warn_about_a_retired_revision(api) -> None:
    """The default 2023-10-15 is past Klaviyo's support window: /api/status and the dashboard say so."""
    client, _service, _sandbox = api
    status = (await client.get("/api/status")).json()
    assert ("2023-10-15", "retired") == (status["revision"], status["revision_support"]["state"])
    assert "past its support window" in status["revision_support"]["warning"]
    async with httpx.AsyncClient(base_url=str(client.base_url), follow_redirects=False) as browser:
        login = await browser.get("/login")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', login.text).group(1)
        await browser.post("/login", data={"csrf": csrf, "token": TOKEN, "next": "/"})
        page = await browser.get("/")
    assert 200 == page.status_code
    assert 'id="revision-warning"' in page.text and "support for this one ended on 2025-10-15" in page.text
