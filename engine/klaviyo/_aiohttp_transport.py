"""An httpx transport over aiohttp: the client keeps httpx's API, aiohttp carries the bytes.

Why: at 64 requests in flight httpcore's connection pool rescans every connection on
each request and retries assignments internally; measured with ``bench/bench_http.py``
it cost several milliseconds of CPU per request, against about 0.2 ms for aiohttp
(already a dependency: the sandbox and the service run on it).  Everything above the
transport -- ``httpx.AsyncClient``, the retry loop, the size limit while streaming,
``httpx.MockTransport`` in unit tests -- stays as it is.

Errors are translated into httpx's exception classes, so the client treats them
exactly as before: a connect failure is :class:`httpx.ConnectError`, a timeout
:class:`httpx.ConnectTimeout` / :class:`httpx.ReadTimeout`, a connection lost mid-answer
:class:`httpx.RemoteProtocolError` or :class:`httpx.ReadError`.  Bodies are passed
through undecoded (``auto_decompress=False``): the client decodes gzip itself so the
size limit counts the bytes that arrive.  Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

_DROP = {"host", "content-length", "transfer-encoding", "connection"}
CHUNK = 64 * 1024
LARGE = 512 * 1024


def _timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    t: dict[str, Any] = request.extensions.get("timeout") or {}
    connect = t.get("connect")
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=t.get("read"))


def _translate(exc: BaseException, request: httpx.Request, *, reading: bool) -> httpx.TransportError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text, request=request)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):  # no answer within the read timeout
        return httpx.ReadTimeout(text, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(text, request=request)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(text, request=request)
    if reading:
        return httpx.ReadError(text, request=request)
    return httpx.WriteError(text, request=request) if isinstance(exc, aiohttp.ClientOSError) else \
        httpx.RemoteProtocolError(text, request=request)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK):
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _translate(exc, self._request, reading=True) from None

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AiohttpTransport(limit=n))``: at most ``limit`` connections."""

    def __init__(self, *, limit: int = 16, keepalive_s: float = 15.0) -> None:
        self._limit = max(1, limit)
        self._keepalive = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=self._keepalive, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept",
                                                                     "Content-Type"),
                                                  trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() not in _DROP]
        raw = await request.aread()
        # aiohttp warns that raw bytes this large block the loop: hand them over as a file
        body: Any = io.BytesIO(raw) if len(raw) > LARGE else (raw or None)
        try:
            response = await session.request(request.method, str(request.url), headers=headers,
                                             data=body, allow_redirects=False, timeout=_timeout(request),
                                             compress=None)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translate(exc, request, reading=False) from None
        return httpx.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["AiohttpTransport"]
