"""Client unit behaviour with httpx.MockTransport: headers by revision, auth modes, error texts, secrets."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from engine.errors import KlaviyoApiError, KlaviyoConnectionError, SettingsErrors
from engine.klaviyo import KlaviyoClient, revision
from engine.klaviyo._errors import parse_retry_after
from engine.settings import load_settings

KEY = "pk_unit_secret_key_987"


def _profile(pid: str) -> dict:
    return {"type": "profile", "id": pid, "attributes": {}}


def _client(handler, **kw) -> KlaviyoClient:
    kw.setdefault("api_key", KEY)
    return KlaviyoClient(base_url="https://a.klaviyo.com", transport=httpx.MockTransport(handler),
                         backoff_base=0.001, **kw)


@pytest.mark.parametrize(
    ("rev", "path", "ctype"),
    [("", "/api/profiles/", "application/json"), ("2026-07-15", "/api/profiles", "application/vnd.api+json")],
)
async def test_request_shape_follows_the_revision(rev: str, path: str, ctype: str) -> None:
    """Blank revision sends 2023-10-15 with trailing slash and application/json; 2026-07-15 the JSON:API form."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"data": {"type": "profile", "id": "P1", "attributes": {}}})

    async with _client(handler, revision=rev) as kl:
        assert ("P1", True) == await kl.create_profile({"email": "a@example.com"})
    req = seen[0]
    assert (path, ctype, ctype) == (req.url.path, req.headers["content-type"], req.headers["accept"])
    assert (rev or "2023-10-15") == req.headers["revision"]
    assert f"Klaviyo-API-Key {KEY}" == req.headers["authorization"]


@pytest.mark.parametrize("base", ["https://a.klaviyo.com", "https://a.klaviyo.com/", "http://127.0.0.1:8765/proxy/k"])
@pytest.mark.parametrize(("path", "params"), [("/api/events/", None), ("api/profiles/",
                         {"filter": 'any(email,["a+b@example.com","c d@example.com"])', "page[size]": 100}),
                         ("/api/profiles/01H%2FX/", {"additional-fields[profile]": "subscriptions"})])
async def test_requests_are_built_as_httpx_s_client_builds_them(base: str, path: str, params: dict | None) -> None:
    """The engine builds each request itself (no httpx.AsyncClient): the same URL, timeout and user agent."""
    from engine._version import __version__
    from engine.klaviyo._transport import HttpSender

    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202) if request.method == "POST" else httpx.Response(200, content=b"{}")

    sender = HttpSender(httpx.MockTransport(handler), base_url=base, timeout=12.5, headers={"User-Agent": "ua/1"})
    async with sender.stream("GET", path, params=params, content=None, headers={"revision": "r"}) as resp:
        assert 200 == resp.status_code
    async with httpx.AsyncClient(base_url=base.rstrip("/"), timeout=12.5,
                                 transport=httpx.MockTransport(handler)) as reference:
        await reference.get(path, params=params)
    ours, theirs = seen
    assert (str(theirs.url), theirs.extensions["timeout"]) == (str(ours.url), ours.extensions["timeout"])
    assert ("ua/1", "r") == (ours.headers["user-agent"], ours.headers["revision"])

    async with _client(handler) as kl:
        await kl.create_event("M", "P1", {}, unique_id="u1")
    assert f"klaviyo-sync/{__version__}" == seen[-1].headers["user-agent"]


async def test_html_error_body_is_reported_readably() -> None:
    """A proxy's HTML 403 becomes 'Error calling Klaviyo (HTTP 403): Forbidden (non-JSON response, ...)'."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, text="<html><head><title>x</title></head><body><h1>Just a moment...</h1></body></html>",
                              headers={"content-type": "text/html"})

    async with _client(handler) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await kl.get_profile("P1")
    assert "Error calling Klaviyo (HTTP 403): Forbidden (non-JSON response, text/html): x Just a moment..." == info.value.message
    assert (403, None, None) == (info.value.status, info.value.klaviyo_code, info.value.pointer)


async def test_secrets_never_appear_in_errors_logs_or_reprs(caplog: pytest.LogCaptureFixture) -> None:
    """A transport error quoting the key and an error body echoing it are both redacted everywhere."""
    caplog.set_level(logging.DEBUG)
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if request.url.path.startswith("/api/profiles"):
            raise httpx.ConnectError(f"failed with header {request.headers['authorization']}", request=request)
        return httpx.Response(400, json={"errors": [{"id": "1", "code": "invalid", "title": "t",
                                                     "detail": f"bad key {KEY}", "source": {"pointer": "/data"}}]})

    async with _client(handler, max_attempts=2) as kl:
        with pytest.raises(KlaviyoConnectionError) as conn:
            await kl.get_profile("P1")
        with pytest.raises(KlaviyoApiError) as api:
            await kl.create_list("L")
        texts = [repr(kl), repr(kl._http), str(conn.value), repr(conn.value), str(api.value), json.dumps(api.value.errors),
                 *(r.getMessage() for r in caplog.records)]
    assert [] == [t for t in texts if KEY in t]
    assert "***" in str(conn.value) and "***" in str(api.value)


class _Tokens:
    def __init__(self) -> None:
        self.token, self.refreshed = "tok-old-123", 0

    async def get_token(self) -> str:
        return self.token

    async def on_unauthorized(self) -> str | None:
        self.refreshed += 1
        self.token = "tok-new-456"
        return self.token


async def test_bearer_token_is_refreshed_once_after_401() -> None:
    """With a token source the client sends Bearer, and after a 401 retries once with a fresh token."""
    auths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        auths.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer tok-old-123":
            return httpx.Response(401, json={"errors": [{"id": "1", "code": "not_authenticated", "title": "t", "detail": "d"}]})
        return httpx.Response(200, json={"data": {"type": "profile", "id": "P1", "attributes": {}}})

    tokens = _Tokens()
    async with KlaviyoClient(token_source=tokens, transport=httpx.MockTransport(handler)) as kl:
        assert "P1" == (await kl.get_profile("P1") or {})["id"]
    assert (["Bearer tok-old-123", "Bearer tok-new-456"], 1) == (auths, tokens.refreshed)


async def test_4xx_other_than_429_is_not_retried() -> None:
    """A 400 is final: one attempt, no retry counted."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=b"not json at all")

    async with _client(handler) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await kl.create_list("L")
        assert (1, 0) == (kl.stats.requests["create_list"], kl.stats.total_retries)
    assert info.value.message.startswith("Error calling Klaviyo (HTTP 400): Bad Request (non-JSON response")


async def test_next_link_cursor_is_sent_to_our_own_host() -> None:
    """A links.next naming another host is followed by its cursor against the configured base URL."""
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if "page[cursor]" in request.url.params:
            return httpx.Response(200, json={"data": [_profile("B")], "links": {"next": None}})
        return httpx.Response(200, json={"data": [_profile("A")],
                                         "links": {"next": "https://evil.example/api/profiles/?page%5Bcursor%5D=c1"}})

    async with _client(handler) as kl:
        assert ["A", "B"] == [p["id"] async for p in kl.iter_profiles()]
    assert ["a.klaviyo.com", "a.klaviyo.com"] == hosts


@pytest.mark.parametrize(
    ("rev", "capability", "expected"),
    [("2023-10-15", "profile_import", False), ("2024-02-15", "profile_import", True),
     ("2023-12-15", "bulk_profile_import", True), ("2024-02-15", "bulk_events", False),
     ("2024-05-15", "bulk_events", True), ("2026-07-15.pre", "subscriptions_required", True), (None, "bulk_events", False)],
)
def test_supports_dates_each_capability(rev: str | None, capability: str, expected: bool) -> None:
    """Capabilities switch on at the revision that introduced them."""
    assert expected is revision.supports(rev, capability)


def test_unknown_capability_and_bad_revision_are_refused() -> None:
    """An unknown capability names the known ones; a malformed revision is a ValueError."""
    with pytest.raises(KeyError, match="profile_import"):
        revision.supports("2023-10-15", "teleport")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        revision.normalize("yesterday")
    assert json.dumps("2023-10-15") == json.dumps(revision.normalize("  "))


@pytest.mark.parametrize(("value", "expected"), [
    ("nan", None), ("-3", None), ("0", None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ("inf", float("inf")), ("1e12", 1e12), ("2", 2.0), ("Fri, 01 Jan 9999 00:00:00 GMT", "future"),
])
def test_retry_after_values_are_read_or_refused(value: str, expected: float | str | None) -> None:
    """NaN, non-positive, past and unparseable Retry-After values are unusable; large ones are kept for the cap."""
    got = parse_retry_after(httpx.Response(429, headers={"retry-after": value}))
    if expected == "future":
        assert got is not None and got > 1e9
    else:
        assert expected == got


@pytest.mark.parametrize("value", ["nan", "-3", "0", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", None, "inf", "1e12",
                                   "Fri, 01 Jan 9999 00:00:00 GMT"])
async def test_the_429_wait_stays_between_the_base_backoff_and_the_cap(value: str | None) -> None:
    """Whatever Retry-After says, the wait after a 429 is at least backoff_base and at most retry_after_cap."""
    headers = {"retry-after": value} if value is not None else {}
    async with KlaviyoClient(api_key=KEY, backoff_base=0.5, retry_after_cap=10.0) as kl:
        waits = [kl._req.retry_after_delay(httpx.Response(429, headers=headers), attempt) for attempt in (1, 2, 3)]
    assert [] == [w for w in waits if not 0.5 <= w <= 10.0]
    if value in ("inf", "1e12", "Fri, 01 Jan 9999 00:00:00 GMT"):
        assert [10.0, 10.0, 10.0] == waits


@pytest.mark.parametrize(("url", "ok"), [
    ("http://a.klaviyo.com", False), ("http://10.0.0.8:8080", False), ("http://127.0.0.1:8080", True),
    ("http://127.9.9.9", True), ("http://[::1]:9000", True), ("http://localhost:8080/api", True),
    ("https://a.klaviyo.com", True),
])
def test_plain_http_api_urls_are_refused_off_loopback(tmp_path, url: str, ok: bool) -> None:
    """api_url: http:// loads only for a loopback host; otherwise a located S002 that says to use https."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(f"name: x\napi_url: {url}\n", encoding="utf-8")
    if ok:
        assert url.rstrip("/") == load_settings(path, env={}).api_url
        return
    with pytest.raises(SettingsErrors) as info:
        load_settings(path, env={})
    assert [f"{path}:2:10: S002 api_url: must use https:// (plain http:// is allowed only for a loopback host "
            f"such as 127.0.0.1), got {json.dumps(url)}"] == [str(e) for e in info.value.errors]


@pytest.mark.parametrize(("text", "message"), [
    ("request_timeout: 0s\n", "1:18: S002 request_timeout: must be a positive duration such as 30s, got \"0s\""),
    ("request_deadline: 0.0m\n", "1:19: S002 request_deadline: must be a positive duration such as 30s, got \"0.0m\""),
    ("request_deadline: 0\n", "1:19: S002 request_deadline: must be at least 1, got 0"),
    ("request_timeout: soon\n", "1:18: S002 request_timeout: must be a duration such as 30s, 5m or 1h, got \"soon\""),
    ("max_response_bytes: 0\n", "1:21: S002 max_response_bytes: must be at least 1, got 0"),
    ("max_response_bytes: 16MiB\n", "1:21: S002 max_response_bytes: must be an integer, got a string \"16MiB\""),
])
def test_request_limits_must_be_positive(tmp_path, text: str, message: str) -> None:
    """Zero, negative or malformed request limits are refused with a located error."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsErrors) as info:
        load_settings(path, env={})
    assert [f"{path}:{message}"] == [str(e) for e in info.value.errors]


def test_request_limits_have_defaults_and_read_durations(tmp_path) -> None:
    """Defaults 30s / 60s / 16 MiB; durations in s, m or h and a byte count are read."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text("name: defaults\n", encoding="utf-8")
    s = load_settings(path, env={})
    assert (30.0, 60.0, 16 * 1024 * 1024) == (s.request_timeout, s.request_deadline, s.max_response_bytes)
    path.write_text("request_timeout: 5\nrequest_deadline: 2m\nmax_response_bytes: 4096\n", encoding="utf-8")
    s = load_settings(path, env={})
    assert (5.0, 120.0, 4096) == (s.request_timeout, s.request_deadline, s.max_response_bytes)
    assert ("5s", "120s", 4096) == tuple(s.display()[k] for k in ("request_timeout", "request_deadline",
                                                                  "max_response_bytes"))


async def test_a_password_in_the_api_url_is_masked_everywhere(tmp_path) -> None:
    """settings show, the formula view, the client's repr and its errors never show the URL's password."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text("api_url: https://ops:pw-Sekr1t-77@proxy.example\n", encoding="utf-8")
    settings = load_settings(path, env={})
    assert "https://ops:********@proxy.example" == settings.display()["api_url"] == settings.for_formulas()["api_url"]
    assert "pw-Sekr1t-77" in settings.secrets()

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    async with KlaviyoClient(base_url=settings.api_url, api_key=KEY, transport=httpx.MockTransport(handler),
                             max_attempts=1) as kl:
        with pytest.raises(KlaviyoConnectionError) as info:
            await kl.get_profile("P1")
        texts = [repr(kl), str(info.value)]
    assert [] == [t for t in texts if "pw-Sekr1t-77" in t]
    assert "KlaviyoClient(base_url='https://***@proxy.example', revision='2023-10-15')" == texts[0]


async def test_the_user_agent_carries_the_installed_version() -> None:
    """The version is written once (engine/_version.py): the package metadata and the user agent agree."""
    import importlib.metadata

    from engine._version import __version__

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    async with _client(handler) as kl:
        await kl.create_event("Placed Order", {"email": "ua@example.com"}, {}, unique_id="ua-1")
    assert importlib.metadata.version("klaviyo-sync") == __version__
    assert f"klaviyo-sync/{__version__}" == seen[0].headers["user-agent"]
