"""``--dry-run`` for the outbound flows: an httpx transport that sends nothing that writes.

The flows run exactly as in a real dispatch; only the Klaviyo client's transport
differs.  :class:`DryRunTransport` passes read-only ``GET`` requests to Klaviyo and
*records* every other request -- method, path and JSON body, exactly as the client
built it -- answering it with the response Klaviyo would give, so the flow takes
the same decisions (created / linked / updated, conflicts, fallbacks) as the
dispatch that follows:

* ``POST /api/profiles`` -> 409 ``duplicate_profile`` naming the profile holding
  the email, else the phone number, else the external id; else 201 with a
  placeholder id ``dry-run-new-<n>``;
* ``POST /api/profile-import`` -> 409 naming the email's profile when the
  identifiers belong to two profiles, 200 with the one matched, else 201;
* ``PATCH /api/profiles/<id>`` -> 404 when the profile does not exist, 409 naming
  the profile that already holds one of the new identifiers, else 200 echoing
  the body;
* everything else (events, consent jobs, list relationships) -> 202 / 204.

Who holds an identifier is asked of Klaviyo with read-only lookups on
``GET /api/profiles`` (``filter=equals(<field>,"<value>")``, and
``GET /api/profiles/<id>`` for existence) in the path style of the revision the
client uses -- never on the write's own route.  The answers are remembered for the
run together with the identifiers the simulated writes gave out, so a later record
of the same run sees the profile an earlier one "created".  The lookups are
recorded too (marked ``read_only``) so the output can say which GETs were sent.
A lookup Klaviyo refuses (401, 429, 5xx...) is the answer of the simulated write,
so the client reacts to it as it would in a real run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field as dc_field
from typing import Any

import httpx

PLACEHOLDER_PREFIX = "dry-run-new-"


@dataclass
class RecordedRequest:
    """One request the dry run saw: sent (``read_only``) or only recorded."""

    method: str
    path: str
    body: Any = None
    params: dict[str, str] = dc_field(default_factory=dict)
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


IDENTIFIERS = ("email", "phone_number", "external_id")  # Klaviyo's matching order


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(field: str, value: Any) -> tuple[str, str]:
    text = str(value)
    return field, text.lower() if field == "email" else text


def _duplicate(pid: str) -> httpx.Response:
    return httpx.Response(409, json={"errors": [{
        "id": "dry-run", "status": 409, "code": "duplicate_profile", "title": "Conflict.",
        "detail": "A profile already exists with one of these identifiers.",
        "source": {"pointer": "/data/attributes"}, "meta": {"duplicate_profile_id": pid}}]})


def _identifiers(attrs: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(f, attrs[f]) for f in IDENTIFIERS if isinstance(attrs.get(f), str) and attrs[f].strip()]


class DryRunTransport(httpx.AsyncBaseTransport):
    """Send GETs through ``inner``; record and simulate every write (see module doc).

    Requests are recorded into :attr:`sink`, a list the flow swaps per record
    (``transport.sink = result.requests``) so each record shows its own requests.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.sink: list[RecordedRequest] = []
        self._new = 0
        self._owner: dict[tuple[str, str], str | None] = {}  # identifier -> profile holding it (None: nobody)
        self._exists: dict[str, bool] = {}  # profile id -> whether Klaviyo has it

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _record(self, request: httpx.Request, body: Any, read_only: bool = False) -> None:
        params = dict(request.url.params)
        self.sink.append(RecordedRequest(request.method, request.url.path, body, params, read_only))

    async def _get(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        await resp.aread()
        return resp

    @staticmethod
    def _profiles_url(request: httpx.Request, *tail: str) -> httpx.URL:
        """``/api/profiles[/<id>]`` in the path style of ``request`` (trailing slash or not)."""
        path = request.url.path
        root = path.partition("/api/")[0]
        new = root + "/api/" + "/".join(("profiles", *tail)) + ("/" if path.endswith("/") else "")
        return request.url.copy_with(path=new, query=None)

    async def _read(self, request: httpx.Request, url: httpx.URL) -> httpx.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("content-type", "content-length")}
        get = httpx.Request("GET", url, headers=headers)
        self._record(get, None, read_only=True)
        return await self._get(get)

    def _learn(self, resource: Any) -> None:
        """Remember a profile resource Klaviyo showed: it exists and holds its identifiers."""
        if not isinstance(resource, dict) or resource.get("id") is None:
            return
        pid = str(resource["id"])
        self._exists[pid] = True
        attrs = resource.get("attributes")
        for field, value in _identifiers(attrs if isinstance(attrs, dict) else {}):
            self._owner.setdefault(_key(field, value), pid)

    async def _owner_of(self, request: httpx.Request, field: str, value: str) -> str | None | httpx.Response:
        """The id of the profile holding ``field`` = ``value``, None, or Klaviyo's refusal of the lookup."""
        key = _key(field, value)
        if key in self._owner:
            return self._owner[key]
        url = self._profiles_url(request).copy_merge_params({"filter": f"equals({field},{_quote(value)})"})
        resp = await self._read(request, url)
        if resp.status_code != 200:
            return resp
        data = resp.json().get("data") or []
        for item in data:
            self._learn(item)
        self._owner[key] = str(data[0]["id"]) if data else None
        return self._owner[key]

    async def _missing(self, request: httpx.Request, pid: str) -> httpx.Response | None:
        """None when profile ``pid`` exists; else Klaviyo's answer (404, or a refused lookup)."""
        if pid.startswith(PLACEHOLDER_PREFIX) or self._exists.get(pid):
            return None
        resp = await self._read(request, self._profiles_url(request, pid))
        if resp.status_code == 200:
            self._learn(resp.json().get("data"))
            return None
        return resp

    def _give(self, pid: str, attrs: dict[str, Any]) -> None:
        """A simulated write succeeded: ``pid`` now holds the identifiers it was given."""
        self._exists[pid] = True
        for field, value in _identifiers(attrs):
            self._owner[_key(field, value)] = pid

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
            duplicate = response.json()["errors"][0]["meta"]["duplicate_profile_id"]
            recorded.answer += f" duplicate_profile (profile {duplicate})"
        return response

    async def _simulate(self, request: httpx.Request, body: Any) -> httpx.Response:
        path = request.url.path.rstrip("/")
        data = body.get("data") if isinstance(body, dict) else None
        attrs = dict(data.get("attributes") or {}) if isinstance(data, dict) else {}
        if request.method == "POST" and path.endswith("/api/profiles"):
            return await self._create(request, attrs)
        if request.method == "POST" and path.endswith("/api/profile-import"):
            return await self._import(request, attrs)
        if request.method == "PATCH" and "/api/profiles/" in request.url.path:
            return await self._patch(request, path.rsplit("/", 1)[-1], data, attrs)
        if path.endswith("/relationships/profiles"):
            return httpx.Response(204)
        if path.endswith("/api/lists"):
            return httpx.Response(201, json={"data": {"type": "list", "id": "dry-run-list", "attributes": attrs}})
        return httpx.Response(202)

    def _created(self, attrs: dict[str, Any]) -> httpx.Response:
        self._new += 1
        pid = f"{PLACEHOLDER_PREFIX}{self._new}"
        self._give(pid, attrs)
        return httpx.Response(201, json={"data": {"type": "profile", "id": pid, "attributes": attrs}})

    async def _create(self, request: httpx.Request, attrs: dict[str, Any]) -> httpx.Response:
        for field, value in _identifiers(attrs):
            owner = await self._owner_of(request, field, value)
            if isinstance(owner, httpx.Response):
                return owner
            if owner is not None:
                return _duplicate(owner)
        return self._created(attrs)

    async def _import(self, request: httpx.Request, attrs: dict[str, Any]) -> httpx.Response:
        owners: list[str] = []
        for field, value in _identifiers(attrs):
            owner = await self._owner_of(request, field, value)
            if isinstance(owner, httpx.Response):
                return owner
            if owner is not None and owner not in owners:
                owners.append(owner)
        if len(owners) > 1:  # the identifiers belong to different profiles: Klaviyo names the email's
            return _duplicate(owners[0])
        if not owners:
            return self._created(attrs)
        self._give(owners[0], attrs)
        return httpx.Response(200, json={"data": {"type": "profile", "id": owners[0], "attributes": attrs}})

    async def _patch(self, request: httpx.Request, pid: str, data: Any, attrs: dict[str, Any]) -> httpx.Response:
        missing = await self._missing(request, pid)
        if missing is not None:
            return missing
        for field, value in _identifiers(attrs):
            owner = await self._owner_of(request, field, value)
            if isinstance(owner, httpx.Response):
                return owner
            if owner is not None and owner != pid:
                return _duplicate(owner)
        self._give(pid, attrs)
        return httpx.Response(200, json={"data": data if isinstance(data, dict) else {}})


__all__ = ["DryRunTransport", "RecordedRequest", "PLACEHOLDER_PREFIX"]
