"""``--dry-run`` for the outbound flows: an httpx transport that sends nothing that writes.

The flows run exactly as in a real dispatch; only the Klaviyo client's transport
differs.  :class:`DryRunTransport` passes read-only ``GET`` requests to Klaviyo (a
profile lookup by email is how a match decision is made) and *records* every
other request -- method, path and JSON body, exactly as the client built it --
answering it with the response Klaviyo would most likely give:

* ``POST /api/profiles`` -> 409 ``duplicate_profile`` naming the profile that a
  read-only lookup by email, then phone number, finds; else 201 with a
  placeholder id ``dry-run-new-<n>``;
* ``POST /api/profile-import`` -> 200 with the matched id, else 201;
* ``PATCH /api/profiles/<id>`` -> 200 echoing the body; a placeholder id is not
  looked up;
* everything else (events, consent jobs, list relationships) -> 202 / 204.

So the recorded requests are the ones a real run would send, given Klaviyo's
current state and writes that succeed.  The lookups it made itself are recorded
too (marked ``read_only``) so the output can say which GETs were sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

PLACEHOLDER_PREFIX = "dry-run-new-"


@dataclass
class RecordedRequest:
    """One request the dry run saw: sent (``read_only``) or only recorded."""

    method: str
    path: str
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    read_only: bool = False
    answer: str | None = None  # the simulated answer of a recorded write

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.params:
            out["params"] = self.params
        if self.body is not None:
            out["body"] = self.body
        if self.read_only:
            out["sent"] = "read-only lookup"
        if self.answer:
            out["simulated_answer"] = self.answer
        return out

    def line(self) -> str:
        query = "?" + "&".join(f"{k}={v}" for k, v in self.params.items()) if self.params else ""
        text = f"{self.method} {self.path}{query}"
        if self.body is not None:
            text += " " + json.dumps(self.body, ensure_ascii=False, separators=(",", ":"))
        if self.answer:
            text += f"   -> simulated {self.answer}"
        return text + ("   (read-only, sent)" if self.read_only else "")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DryRunTransport(httpx.AsyncBaseTransport):
    """Send GETs through ``inner``; record and simulate every write (see module doc).

    Requests are recorded into :attr:`sink`, a list the flow swaps per record
    (``transport.sink = result.requests``) so each record shows its own requests.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.sink: list[RecordedRequest] = []
        self._new = 0

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _record(self, request: httpx.Request, body: Any, read_only: bool = False) -> None:
        params = dict(request.url.params)
        self.sink.append(RecordedRequest(request.method, request.url.path, body, params, read_only))

    async def _get(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        await resp.aread()
        return resp

    async def _lookup(self, request: httpx.Request, attrs: dict[str, Any]) -> str | None:
        """The id of the profile Klaviyo would match by email, then phone (read-only GETs)."""
        for key in ("email", "phone_number"):
            value = attrs.get(key)
            if not value:
                continue
            url = request.url.copy_with(query=None).copy_merge_params({"filter": f"equals({key},{_quote(value)})"})
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-type", "content-length")}
            get = httpx.Request("GET", url, headers=headers)
            self._record(get, None, read_only=True)
            resp = await self._get(get)
            if resp.status_code == 200:
                data = resp.json().get("data") or []
                if data:
                    return str(data[0]["id"])
        return None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self._record(request, None, read_only=True)
            return await self._get(request)
        raw = await request.aread()
        body = json.loads(raw) if raw else None
        self._record(request, body)
        recorded = self.sink[-1]
        response = await self._simulate(request, body)
        recorded.answer = str(response.status_code)
        if response.status_code in (200, 201) and "/profile" in request.url.path:
            recorded.answer += f" (profile {response.json()['data'].get('id')})"
        elif response.status_code == 409:
            recorded.answer += f" duplicate_profile (profile {response.json()['errors'][0]['meta']['duplicate_profile_id']})"
        return response

    async def _simulate(self, request: httpx.Request, body: Any) -> httpx.Response:
        path = request.url.path.rstrip("/")
        data = (body or {}).get("data") if isinstance(body, dict) else None
        if request.method == "POST" and (path.endswith("/api/profiles") or path.endswith("/api/profile-import")):
            attrs = dict((data or {}).get("attributes") or {})
            found = await self._lookup(request, attrs)
            if found is not None and path.endswith("/api/profiles"):
                return httpx.Response(409, json={"errors": [{
                    "id": "dry-run", "status": 409, "code": "duplicate_profile", "title": "Conflict.",
                    "detail": "A profile already exists with one of these identifiers.",
                    "source": {"pointer": "/data/attributes"}, "meta": {"duplicate_profile_id": found}}]})
            if found is None:
                self._new += 1
                found = f"{PLACEHOLDER_PREFIX}{self._new}"
            status = 201 if found.startswith(PLACEHOLDER_PREFIX) else 200
            return httpx.Response(status, json={"data": {"type": "profile", "id": found, "attributes": attrs}})
        if request.method == "PATCH" and "/api/profiles/" in request.url.path:
            return httpx.Response(200, json={"data": data or {}})
        if path.endswith("/relationships/profiles"):
            return httpx.Response(204)
        if path.endswith("/api/lists"):
            return httpx.Response(201, json={"data": {"type": "list", "id": "dry-run-list",
                                                      "attributes": (data or {}).get("attributes") or {}}})
        return httpx.Response(202)


__all__ = ["DryRunTransport", "RecordedRequest", "PLACEHOLDER_PREFIX"]
