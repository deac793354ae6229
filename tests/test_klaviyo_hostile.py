"""The client against a hostile fake Klaviyo on 127.0.0.1: answers that are not Klaviyo's are errors.

The fake is a raw asyncio socket server in the test's own event loop; each test
scripts what it answers (a dripping body, an endless one, 50 MB, an HTML page,
JSON of the wrong shape, redirects, 429s with odd ``Retry-After`` values, 401/403)
and drives the real :class:`~engine.klaviyo.KlaviyoClient` operations.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from typing import Any

import pytest

from engine.catalog import ERROR_CALLING_KLAVIYO, KLAVIYO_CONNECTION_ERROR
from engine.connect import open_client
from engine.errors import (
    AuthError,
    KlaviyoApiError,
    KlaviyoAuthError,
    KlaviyoConnectionError,
    ReauthorizationRequired,
)
from engine.klaviyo import KlaviyoClient
from engine.settings import Secret, Settings

KEY = "pk_hostile_secret_key_314159"
JSONAPI = "application/vnd.api+json"
PROFILE = {"data": {"type": "profile", "id": "01HOSTILE", "attributes": {"email": "a@example.com"}}}

Writer = asyncio.StreamWriter
Answer = Callable[[Writer], Awaitable[None]]


def head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def respond(status: int, body: bytes | str | dict[str, Any] | list[Any] | None = None, *,
            ctype: str = JSONAPI, headers: dict[str, str] | None = None) -> Answer:
    """A complete answer: status, headers and a body (dicts and lists are sent as JSON)."""
    if isinstance(body, (dict, list)):
        raw = json.dumps(body).encode()
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = body or b""

    async def send(writer: Writer) -> None:
        extra = {"Content-Type": ctype} if raw else {}
        writer.write(head(status, {**extra, **(headers or {}), "Content-Length": str(len(raw))}) + raw)
        await writer.drain()

    return send


class Hostile:
    """A fake Klaviyo: ``script(method, path)`` picks the answer to each request; every request is kept."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.script: Callable[[str, str], Answer] = lambda m, p: respond(500)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def answers(self, *answers: Answer) -> None:
        """Answer the requests in this order; the last answer repeats."""
        queue = list(answers)
        self.script = lambda m, p: queue.pop(0) if len(queue) > 1 else queue[0]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            self.requests.append((method, target, body))
            await self.script(method, target)(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    server = Hostile()
    await server.start()
    yield server
    await server.stop()


def client(server: Hostile, **kw: Any) -> KlaviyoClient:
    kw.setdefault("max_attempts", 1)
    kw.setdefault("backoff_base", 0.01)
    return KlaviyoClient(base_url=server.url, api_key=KEY, **kw)


def drip(every: float = 2.0) -> Answer:
    """Headers at once, then one byte of the promised body every ``every`` seconds."""
    async def send(writer: Writer) -> None:
        writer.write(head(200, {"Content-Type": JSONAPI, "Content-Length": "1000"}))
        await writer.drain()
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(every)

    return send


def endless(chunked: bool = True) -> Answer:
    """A JSON-looking body that never ends, 64 KiB at a time, as fast as the client reads."""
    piece = b"[" * 65536

    async def send(writer: Writer) -> None:
        framing = {"Transfer-Encoding": "chunked"} if chunked else {}
        writer.write(head(200, {"Content-Type": JSONAPI, **framing}))
        while True:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()

    return send


# -- deadline and body size --------------------------------------------------------------


async def test_a_dripping_body_hits_the_deadline_and_is_retried(hostile: Hostile) -> None:
    """One byte every 2 s never trips the read timeout; the 1 s deadline cuts each attempt off."""
    hostile.answers(drip())
    async with client(hostile, deadline=1.0, max_attempts=2) as kl:
        with pytest.raises(KlaviyoConnectionError) as info:
            await kl.get_profile("01HOSTILE")
        assert (2, 1) == (kl.stats.requests["get_profile"], kl.stats.retry_reasons["deadline"])
    assert (f"{KLAVIYO_CONNECTION_ERROR}: no complete answer within the request deadline of 1s (request_deadline)"
            == info.value.message)


async def test_an_endless_body_is_cut_at_the_size_limit(hostile: Hostile) -> None:
    """An endless chunked body: the client stops at the limit and reads at most one chunk past it."""
    limit = 1024 * 1024
    hostile.answers(endless())
    async with client(hostile, max_response_bytes=limit) as kl:
        with pytest.raises(KlaviyoConnectionError) as info:
            await kl.create_profile({"email": "a@example.com"})
        read = kl.stats.body_bytes
    assert info.value.message.startswith(
        f"{KLAVIYO_CONNECTION_ERROR}: the answer is larger than the 1 MiB limit (max_response_bytes; read ")
    assert limit < read <= limit + 65536


async def test_an_endless_body_without_framing_is_cut_too(hostile: Hostile) -> None:
    """A body with neither length nor chunks (read until close) is bounded the same way."""
    hostile.answers(endless(chunked=False))
    async with client(hostile, max_response_bytes=200_000) as kl:
        with pytest.raises(KlaviyoConnectionError, match="larger than the 200000 bytes limit"):
            await kl.get_profile("01HOSTILE")
        assert 200_000 < kl.stats.body_bytes <= 200_000 + 65536


async def test_a_declared_50_mb_body_is_refused_before_reading(hostile: Hostile) -> None:
    """Content-Length 50,000,000 over the default 16 MiB limit: refused unread, retried, then the error."""
    async def big(writer: Writer) -> None:
        writer.write(head(200, {"Content-Type": JSONAPI, "Content-Length": "50000000"}) + b"{" * 65536)
        await writer.drain()

    hostile.answers(big)
    async with client(hostile, max_attempts=2) as kl:
        with pytest.raises(KlaviyoConnectionError) as info:
            await kl.iter_profile_pages().__anext__()
        assert (2, 0) == (len(hostile.requests), kl.stats.body_bytes)
        assert 1 == kl.stats.retry_reasons["too_large"]
    assert (f"{KLAVIYO_CONNECTION_ERROR}: the answer is larger than the 16 MiB limit (max_response_bytes; "
            "declared 50000000 bytes)") == info.value.message


async def test_a_streamed_50_mb_body_stops_at_the_default_limit(hostile: Hostile) -> None:
    """50 MB sent chunked (no length): reading stops just past 16 MiB, never the whole body."""
    piece = b" " * 65536

    async def fifty(writer: Writer) -> None:
        writer.write(head(200, {"Content-Type": JSONAPI, "Transfer-Encoding": "chunked"}))
        for _ in range(50_000_000 // len(piece)):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    hostile.answers(fifty)
    async with client(hostile) as kl:
        with pytest.raises(KlaviyoConnectionError, match="larger than the 16 MiB limit"):
            await kl.create_event("Placed Order", "01HOSTILE", {}, unique_id="o-1")
        assert 16 * 1024 * 1024 < kl.stats.body_bytes <= 16 * 1024 * 1024 + 65536


async def test_a_gzip_bomb_is_inflated_only_up_to_the_limit(hostile: Hostile) -> None:
    """64 MB of zeros gzipped to ~64 KB: inflation stops just past the 1 MiB limit, never the whole 64 MB."""
    bomb = gzip.compress(b"\0" * 64 * 1024 * 1024)
    hostile.answers(respond(200, bomb, headers={"Content-Encoding": "gzip"}))
    async with client(hostile, max_response_bytes=1024 * 1024) as kl:
        with pytest.raises(KlaviyoConnectionError, match="larger than the 1 MiB limit"):
            await kl.get_profile("P")
        assert 1024 * 1024 < kl.stats.body_bytes <= 2 * (1024 * 1024 + 1)


async def test_gzip_answers_are_read_and_corrupt_ones_are_connection_errors(hostile: Hostile) -> None:
    """A gzipped resource is read like a plain one; a corrupt gzip body is a transient connection error."""
    hostile.answers(respond(200, gzip.compress(json.dumps(PROFILE).encode()), headers={"Content-Encoding": "gzip"}),
                    respond(200, b"\x1f\x8b not gzip at all", headers={"Content-Encoding": "gzip"}))
    async with client(hostile) as kl:
        assert PROFILE["data"] == await kl.get_profile("01HOSTILE")
        with pytest.raises(KlaviyoConnectionError) as info:
            await kl.get_profile("01HOSTILE")
    assert info.value.message.startswith(f"{KLAVIYO_CONNECTION_ERROR}: the gzip body could not be decoded (")


async def test_settings_limits_reach_the_client_through_open_client(hostile: Hostile) -> None:
    """max_response_bytes and request_deadline from the settings govern the client open_client builds."""
    settings = Settings(api_url=hostile.url, api_key=Secret(KEY), max_response_bytes=1000, request_deadline=1.0)
    hostile.answers(respond(200, {"data": {"type": "profile", "id": "P", "attributes": {"x": "y" * 2000}}}))
    async with open_client(settings, max_attempts=1) as kl:
        with pytest.raises(KlaviyoConnectionError, match=r"larger than the 1000 bytes limit .*declared 20\d\d bytes"):
            await kl.get_profile("P")
    hostile.answers(drip())
    async with open_client(settings, max_attempts=1) as kl:
        with pytest.raises(KlaviyoConnectionError, match="within the request deadline of 1s"):
            await kl.get_profile("P")


# -- answers that are not Klaviyo's --------------------------------------------------------


async def test_an_html_200_is_not_a_created_profile(hostile: Hostile) -> None:
    """A captive portal's 200 HTML page: retried as transient, then 'Error calling Klaviyo' quoting the page."""
    page = "<html><body><h1>Sign in to the Wi-Fi</h1>" + "x" * 1000 + "</body></html>"
    hostile.answers(respond(200, page, ctype="text/html; charset=utf-8"))
    async with client(hostile, max_attempts=3) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await kl.create_profile({"email": "a@example.com"})
        assert (3, 2) == (kl.stats.requests["create_profile"], kl.stats.retry_reasons["unexpected"])
    err = info.value
    expected = (f"{ERROR_CALLING_KLAVIYO} (HTTP 200): unexpected answer to create_profile: HTTP 200 is not "
                "Klaviyo's answer to this call (expected HTTP 201 with a JSON:API resource); got text/html: "
                "<html><body><h1>Sign in to the Wi-Fi</h1>xxx")
    assert expected == err.message[:len(expected)]
    assert (200, True, False) == (err.status, err.transient, isinstance(err, KlaviyoAuthError))
    assert err.message.endswith("x...") and len(err.message) < 500


async def test_an_html_page_where_json_is_expected_is_an_error(hostile: Hostile) -> None:
    """The expected status with a text/html body: 'expected JSON, got text/html', quoting the page."""
    hostile.answers(respond(200, "<html><body>Just a moment...</body></html>", ctype="text/html"))
    async with client(hostile) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await kl.get_profile("P")
    assert (f"{ERROR_CALLING_KLAVIYO} (HTTP 200): unexpected answer to get_profile: expected JSON, got text/html "
            "(expected HTTP 200 with a JSON:API resource); got text/html: <html><body>Just a moment...</body></html>"
            ) == info.value.message


WRONG_SHAPES = [
    ("create_profile", 201, {"nodata": True}, "no data member"),
    ("create_profile", 201, {"data": [PROFILE["data"]]}, "data is not an object"),
    ("create_profile", 201, {"data": {"type": "profile", "id": 42, "attributes": {}}}, "data.id is not a non-empty string"),
    ("create_profile", 201, [1, 2], "the body is not a JSON object"),
    ("create_profile", 201, "null", "the body is not a JSON object"),
    ("update_profile", 200, {"data": {"type": "profile", "id": "P"}}, "data.attributes is not an object"),
    ("update_profile", 200, "{\"data\": ", "the body is not valid JSON (JSONDecodeError)"),
    ("get_profile", 200, {"data": None}, "data is not an object"),
    ("get_profile", 200, "[" * 100_000 + "]" * 100_000, "the JSON is nested too deeply"),
    ("iter_profile_pages", 200, {"data": PROFILE["data"]}, "data is not a list"),
    ("iter_profile_pages", 200, {"data": [{"id": "A"}]}, "data[0].type is not a non-empty string"),
    ("iter_profile_pages", 200, {"data": [], "links": ["next"]}, "links is not an object"),
    ("iter_profile_pages", 200, {"data": [], "links": {"next": 7}}, "links.next is not a string"),
    ("create_list", 201, {"data": {"type": "list", "id": "", "attributes": {}}}, "data.id is not a non-empty string"),
]


async def _call(kl: KlaviyoClient, op: str) -> Any:
    if op == "create_profile":
        return await kl.create_profile({"email": "a@example.com"})
    if op == "update_profile":
        return await kl.update_profile("P", {"first_name": "A"})
    if op == "get_profile":
        return await kl.get_profile("P")
    if op == "iter_profile_pages":
        return [page async for page in kl.iter_profile_pages()]
    if op == "create_list":
        return await kl.create_list("Newsletter")
    if op == "create_event":
        return await kl.create_event("Placed Order", "P", {}, unique_id="o-1")
    raise AssertionError(op)


@pytest.mark.parametrize(("op", "status", "body", "problem"), WRONG_SHAPES)
async def test_json_of_the_wrong_shape_is_an_error_never_a_key_error(
        hostile: Hostile, op: str, status: int, body: Any, problem: str) -> None:
    """Each wrong-shaped body at the expected status is 'Error calling Klaviyo ... unexpected answer', transient."""
    hostile.answers(respond(status, body))
    async with client(hostile) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await _call(kl, op)
    name = "get_profiles" if op == "iter_profile_pages" else op
    assert info.value.message.startswith(
        f"{ERROR_CALLING_KLAVIYO} (HTTP {status}): unexpected answer to {name}: {problem} (expected HTTP {status} with ")
    assert (status, True) == (info.value.status, info.value.transient)


async def test_a_204_carrying_a_body_is_a_broken_answer(hostile: Hostile) -> None:
    """HTTP forbids a body on 204; the transport refuses such an answer outright (never counted as done)."""
    hostile.answers(respond(204, PROFILE))
    async with client(hostile) as kl:
        with pytest.raises(KlaviyoConnectionError) as info:
            await _call(kl, "create_event")
    assert info.value.message.startswith("An error occurred while contacting Klaviyo")


@pytest.mark.parametrize(("op", "status"), [("create_profile", 200), ("create_event", 200),
                                            ("update_profile", 202), ("create_list", 200)])
async def test_an_unexpected_2xx_status_is_an_error(hostile: Hostile, op: str, status: int) -> None:
    """A 2xx other than the call's own (even with a resource body) is not counted as done."""
    hostile.answers(respond(status, PROFILE))
    async with client(hostile) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await _call(kl, op)
    assert info.value.message.startswith(
        f"{ERROR_CALLING_KLAVIYO} (HTTP {status}): unexpected answer to {op}: HTTP {status} is not Klaviyo's answer "
        "to this call (expected HTTP ")


async def test_an_event_accepted_with_an_html_page_is_an_error(hostile: Hostile) -> None:
    """202 is the event's status, but a 202 carrying an HTML page is no Klaviyo answer."""
    hostile.answers(respond(202, "<html>queued</html>", ctype="text/html"))
    async with client(hostile) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await kl.create_event("Placed Order", "P", {}, unique_id="o-1")
    assert (f"{ERROR_CALLING_KLAVIYO} (HTTP 202): unexpected answer to create_event: expected JSON, got text/html "
            "(expected HTTP 202 with an empty body); got text/html: <html>queued</html>") == info.value.message


async def test_a_409_without_a_duplicate_id_and_an_html_404_are_rejections(hostile: Hostile) -> None:
    """A 409 naming no duplicate profile, and a 404 that is not a JSON:API error, are final errors."""
    conflict = {"errors": [{"id": "1", "code": "conflict", "title": "Conflict", "detail": "something else"}]}
    hostile.answers(respond(409, conflict), respond(404, "<html>no</html>", ctype="text/html"))
    async with client(hostile, max_attempts=3) as kl:
        with pytest.raises(KlaviyoApiError) as conflict_info:
            await kl.create_profile({"email": "a@example.com"})
        with pytest.raises(KlaviyoApiError) as missing_info:
            await kl.get_profile("P")
        assert 2 == len(hostile.requests)
    assert f"{ERROR_CALLING_KLAVIYO} (HTTP 409): something else" == conflict_info.value.message
    assert (f"{ERROR_CALLING_KLAVIYO} (HTTP 404): Not Found (non-JSON response, text/html): no", False) == (
        missing_info.value.message, missing_info.value.transient)


async def test_klaviyo_shaped_answers_pass(hostile: Hostile) -> None:
    """The real shapes pass: 201 resource, 409 duplicate id, 404 error document, 202 empty, 204 empty."""
    dup = {"errors": [{"id": "1", "code": "duplicate_profile", "title": "Conflict", "detail": "exists",
                       "meta": {"duplicate_profile_id": "01DUP"}}]}
    missing = {"errors": [{"id": "2", "code": "not_found", "title": "Not found", "detail": "nope"}]}
    hostile.answers(respond(201, PROFILE), respond(409, dup), respond(404, missing), respond(202), respond(204))
    async with client(hostile) as kl:
        assert ("01HOSTILE", True) == await kl.create_profile({"email": "a@example.com"})
        assert ("01DUP", False) == await kl.create_profile({"email": "a@example.com"})
        assert None is await kl.get_profile("P")
        assert "o-1" == await kl.create_event("Placed Order", "P", {}, unique_id="o-1")
        assert None is await kl.add_profiles_to_list("L", ["P"])


# -- redirects ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 307])
async def test_a_redirect_is_never_followed_and_names_its_location(hostile: Hostile, status: int) -> None:
    """A 301/307 is a final error naming the Location; the redirect target never sees a request."""
    target = f"{hostile.url}/elsewhere/api/events/"
    hostile.script = lambda m, p: respond(201, PROFILE) if p.startswith("/elsewhere") else \
        respond(status, headers={"Location": target})
    async with client(hostile, max_attempts=5) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await kl.create_event("Placed Order", "P", {}, unique_id="o-1")
    assert (f"{ERROR_CALLING_KLAVIYO} (HTTP {status}): redirected to {target}; redirects are not followed, check "
            "api_url (Klaviyo's API is https://a.klaviyo.com)") == info.value.message
    assert (["/api/events/"], False) == ([p for _, p, _ in hostile.requests], info.value.transient)


async def test_a_redirect_location_with_a_password_is_masked(hostile: Hostile) -> None:
    """A Location carrying user:password@ is shown without them."""
    hostile.answers(respond(302, headers={"Location": "https://bob:hunter2secret@evil.example/x"}))
    async with client(hostile) as kl:
        with pytest.raises(KlaviyoApiError) as info:
            await kl.get_profile("P")
    assert "redirected to https://***@evil.example/x;" in info.value.message
    assert "hunter2secret" not in info.value.message


# -- Retry-After extremes -----------------------------------------------------------------


def _past() -> str:
    return format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)


def _future() -> str:
    return format_datetime(datetime.now(UTC) + timedelta(days=30), usegmt=True)


@pytest.mark.parametrize(("value", "kind"), [
    ("nan", "backoff"), ("NaN", "backoff"), ("-5", "backoff"), ("0", "backoff"), ("garbage", "backoff"),
    ("", "backoff"), (None, "backoff"), ("past", "backoff"), ("inf", "cap"), ("1e12", "cap"), ("future", "cap"),
    ("0.05", "value"),
])
async def test_retry_after_extremes_wait_between_base_and_cap(hostile: Hostile, caplog: pytest.LogCaptureFixture,
                                                              value: str | None, kind: str) -> None:
    """Unusable Retry-After values back off normally (never immediate), huge ones wait exactly the cap."""
    value = {"past": _past(), "future": _future()}.get(value or "", value)
    headers = {"Retry-After": value} if value is not None else {}
    throttled = {"errors": [{"id": "1", "code": "throttled", "title": "Throttled", "detail": "slow down"}]}
    hostile.answers(respond(429, throttled, headers=headers), respond(429, throttled, headers=headers),
                    respond(201, PROFILE))
    caplog.set_level(logging.INFO, logger="engine.klaviyo")
    base, cap = 0.02, 0.2 if kind != "value" else 5.0
    async with client(hostile, max_attempts=3, backoff_base=base, retry_after_cap=cap) as kl:
        assert ("01HOSTILE", True) == await kl.create_profile({"email": "a@example.com"})
        assert 2 == kl.stats.retry_reasons["429"]
    waits = [float(m.group(1)) for r in caplog.records if (m := re.search(r"retry \d in ([\d.]+)s \(429\)", r.getMessage()))]
    assert 2 == len(waits)
    if kind == "cap":
        assert [cap, cap] == waits
    elif kind == "value":
        assert [0.05, 0.05] == waits
    else:
        assert all(base <= w <= cap for w in waits)


# -- credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_401_and_403_are_auth_errors_not_retried(hostile: Hostile, status: int) -> None:
    """A refused key is KlaviyoAuthError (still a KlaviyoApiError), after one attempt."""
    body = {"errors": [{"id": "1", "code": "not_authenticated", "title": "t", "detail": "Incorrect authentication"}]}
    hostile.answers(respond(status, body))
    async with client(hostile, max_attempts=5) as kl:
        with pytest.raises(KlaviyoAuthError) as info:
            await kl.create_event("Placed Order", "P", {}, unique_id="o-1")
    assert (f"{ERROR_CALLING_KLAVIYO} (HTTP {status}): Incorrect authentication", status, 1, False) == (
        info.value.message, info.value.status, len(hostile.requests), info.value.transient)
    assert isinstance(info.value, KlaviyoApiError)


class _Tokens:
    def __init__(self, refresh_fails: AuthError | None = None, get_fails: AuthError | None = None) -> None:
        self.refresh_fails, self.get_fails, self.refreshed = refresh_fails, get_fails, 0

    async def get_token(self) -> str:
        if self.get_fails is not None:
            raise self.get_fails
        return "tok-old-1234"

    async def on_unauthorized(self) -> str | None:
        self.refreshed += 1
        if self.refresh_fails is not None:
            raise self.refresh_fails
        return "tok-new-5678"


async def test_401_after_the_one_refresh_is_an_auth_error(hostile: Hostile) -> None:
    """OAuth: 401, one refresh, 401 again -> KlaviyoAuthError; exactly two requests."""
    body = {"errors": [{"id": "1", "code": "not_authenticated", "title": "t", "detail": "expired"}]}
    hostile.answers(respond(401, body))
    tokens = _Tokens()
    async with KlaviyoClient(base_url=hostile.url, token_source=tokens, max_attempts=5) as kl:
        with pytest.raises(KlaviyoAuthError) as info:
            await kl.update_profile("P", {"first_name": "A"})
    assert (f"{ERROR_CALLING_KLAVIYO} (HTTP 401): expired", 2, 1) == (
        info.value.message, len(hostile.requests), tokens.refreshed)


@pytest.mark.parametrize("where", ["get_token", "on_unauthorized"])
@pytest.mark.parametrize("failure", [
    ReauthorizationRequired("Run `klaviyo-sync auth login` to authorise again.", detail="Klaviyo answered invalid_grant"),
    AuthError("The Klaviyo access token could not be refreshed.", code="A021", detail="invalid_client"),
])
async def test_a_failed_token_refresh_is_an_auth_error_keeping_its_message(
        hostile: Hostile, where: str, failure: AuthError) -> None:
    """ReauthorizationRequired/AuthError from the token source come out as KlaviyoAuthError, same text and code."""
    body = {"errors": [{"id": "1", "code": "not_authenticated", "title": "t", "detail": "expired"}]}
    hostile.answers(respond(401, body))
    tokens = _Tokens(**{("get_fails" if where == "get_token" else "refresh_fails"): failure})
    async with KlaviyoClient(base_url=hostile.url, token_source=tokens, max_attempts=5) as kl:
        with pytest.raises(KlaviyoAuthError) as info:
            await kl.get_profile("P")
    err = info.value
    assert (failure.message, failure.code, failure.detail, 401) == (err.message, err.code, err.detail, err.status)
    assert isinstance(err, KlaviyoApiError) and isinstance(err, type(failure))
    assert (0 if where == "get_token" else 1) == len(hostile.requests)
