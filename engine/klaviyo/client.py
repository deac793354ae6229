"""The async Klaviyo REST client every flow uses.

Seam contract: the client owns one httpx transport (pass ``transport=`` to
inject ``httpx.MockTransport`` in unit tests, or point ``base_url`` at the local
sandbox for integration tests), driven by :class:`~engine.klaviyo._transport.HttpSender`.  Each public
coroutine is one *operation*; it sends the revision's path style and content type, authenticates with a private
key (``Klaviyo-API-Key``) or an OAuth :class:`TokenSource` (``Bearer``), stays
inside the shared per-tier rate budget and retries transient failures (see
:mod:`engine.klaviyo._transport`).  Klaviyo rejections raise
:class:`~engine.errors.KlaviyoApiError`, transport failures
:class:`~engine.errors.KlaviyoConnectionError`; neither ever contains the key.
Each operation names the statuses and body shapes Klaviyo answers it with
(:mod:`engine.klaviyo._answers`); any other answer is a ``KlaviyoApiError``, so an
operation returns only values read from a checked answer.

Example::

    async with KlaviyoClient(api_key=key, base_url=sandbox.url) as kl:
        pid, created = await kl.create_profile({"email": "a@example.com"})
        await kl.create_event("Placed Order", pid, {"OrderId": "1"}, value=9.5, unique_id="order-1")
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from engine._iter import chunks
from engine._version import __version__
from engine.errors import KlaviyoApiError
from engine.klaviyo import revision as rev
from engine.klaviyo._aiohttp_transport import AiohttpTransport
from engine.klaviyo._answers import EMPTY, ERRORS, PAGE, RESOURCE, Answer
from engine.klaviyo._errors import api_error, redact, url_password
from engine.klaviyo._shared_budget import TierBudget
from engine.klaviyo._transport import ClientStats, HttpSender, Requester, TokenSource
from engine.klaviyo.ratelimit import RateBudget

DEFAULT_BASE_URL = "https://a.klaviyo.com"
SUBSCRIBE_BATCH = 100
#: profiles one subscribe job takes from revision 2024-07-15 (100 before it)
SUBSCRIBE_BATCH_LATER = 1000
SUBSCRIBE_BATCH_LATER_FROM = "2024-07-15"
LIST_BATCH = 1000
#: one bulk import job: at most this many profiles and this many bytes of body (API-NOTES §5)
BULK_IMPORT_MAX_PROFILES = 10_000
BULK_IMPORT_MAX_BYTES = 5_000_000
BULK_IMPORT_MAX_PROFILE_BYTES = 100_000


EMAIL_LOOKUP_BATCH = 100  # values in one any() filter, and the profile page size

def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class KlaviyoClient:
    """Async client for the Klaviyo endpoints the engine needs.

    Args:
        base_url: API root (the subscription's API URL setting).
        api_key: a private key (``pk_...``); never shown in any output.
        token_source: OAuth tokens instead of a key (see :class:`TokenSource`).
        revision: the ``revision`` header; blank or ``None`` means ``2023-10-15``.
        tier_overrides: per-tier budget, e.g. ``{"L": {"burst": 75, "steady": 700}}``.
        max_concurrency: requests in flight at once.
        timeout: seconds for connecting and for each read of an HTTP attempt (httpx's timeout).
        deadline: seconds one HTTP attempt may take in all, request and whole answer.
        max_response_bytes: largest answer body read; a larger one is a transient
            connection error.
        max_attempts: attempts per operation, first one included.
        retry_after_cap: longest ``Retry-After`` honoured, in seconds.
        backoff_base / backoff_max: exponential backoff (seconds) for 5xx/timeouts.
        transport: an httpx transport (tests).
        budget: the rate budget to draw from: a :class:`RateBudget` shared by clients of one process, or
            the account's :class:`~engine.klaviyo._shared_budget.SharedRateBudget` in Redis, shared by every
            process (``rate_budget`` setting).  Default: a new in-process budget of ``tier_overrides``.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        token_source: TokenSource | None = None,
        revision: str | None = None,
        tier_overrides: Mapping[str, Mapping[str, int]] | None = None,
        max_concurrency: int = 16,
        timeout: float = 30.0,
        deadline: float = 60.0,
        max_response_bytes: int = 16 * 1024 * 1024,
        max_attempts: int = 5,
        retry_after_cap: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: TierBudget | None = None,
    ) -> None:
        if api_key is None and token_source is None:
            raise ValueError("KlaviyoClient needs an api_key or a token_source")
        self.revision = rev.normalize(revision)
        self.base_url = base_url.rstrip("/")
        self.stats = ClientStats()
        self.budget: TierBudget = budget or RateBudget(tier_overrides, revision=self.revision)
        self._http = HttpSender(transport or AiohttpTransport(limit=max_concurrency), base_url=self.base_url,
                                timeout=timeout, headers={"user-agent": f"klaviyo-sync/{__version__}"})
        self._req = Requester(
            self._http,
            revision=self.revision,
            api_key=api_key,
            token_source=token_source,
            budget=self.budget,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            retry_after_cap=retry_after_cap,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            stats=self.stats,
            deadline=deadline,
            max_response_bytes=max_response_bytes,
            extra_secrets=tuple(p for p in (url_password(self.base_url),) if p),
        )
        self._list_cache: dict[str, dict[str, Any] | None] = {}

    def __repr__(self) -> str:
        return f"KlaviyoClient(base_url={redact(self.base_url, ())!r}, revision={self.revision!r})"

    async def __aenter__(self) -> KlaviyoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (and the shared budget's connections to Redis, if any)."""
        await self._http.aclose()
        close = getattr(self.budget, "aclose", None)
        if close is not None:
            await close()

    # -- helpers ---------------------------------------------------------------------

    def supports(self, capability: str) -> bool:
        """Whether this client's revision has ``capability`` (see :mod:`.revision`)."""
        return rev.supports(self.revision, capability)

    def inflight_limit(self, tier: str) -> int:
        """Requests of ``tier`` worth having in flight now: the tier's burst rate times the
        measured latency, with headroom, at most ``max_concurrency`` (:class:`~.ratelimit.InFlight`)."""
        return self._req.slot(tier).limit

    def _path(self, *segments: str) -> str:
        return rev.api_path(self.revision, *segments)

    async def _send(self, op: str, method: str, path: str, tier: str, expect: Mapping[int, str],
                    **kw: Any) -> Answer:
        self.stats.throttle_wait_s = self.budget.waited
        try:
            return await self._req.send(op, method, path, tier=tier, expect=expect, **kw)
        finally:
            self.stats.throttle_wait_s = self.budget.waited

    async def _pages(
        self, op: str, path: str, tier: str, params: dict[str, Any]
    ) -> AsyncIterator[Answer]:
        """Yield each checked page, following ``links.next`` by its ``page[cursor]``.

        The cursor is taken from the next link and sent to our own base URL, so a
        link naming another host can never receive our credentials.
        """
        params = {k: v for k, v in params.items() if v is not None}
        while True:
            page = await self._send(op, "GET", path, tier, {200: PAGE}, params=params)
            yield page
            nxt = page.next_link()
            if not nxt:
                return
            try:
                cursor = parse_qs(urlsplit(nxt).query).get("page[cursor]")
            except ValueError:
                cursor = None
            if not cursor:
                return
            params = {**params, "page[cursor]": cursor[0]}

    # -- profiles --------------------------------------------------------------------

    async def iter_profile_pages(
        self,
        *,
        filter: str | None = None,
        sort: str | None = None,
        page_size: int | None = None,
        additional_fields: Sequence[str] | None = None,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yield pages of profile resources (``GET /api/profiles``), following ``links.next``.

        ``filter`` is Klaviyo's filter syntax, e.g. ``greater-than(updated,2024-01-01T00:00:00Z)``;
        ``additional_fields=["subscriptions"]`` adds consent.
        """
        params: dict[str, Any] = {"filter": filter, "sort": sort, "page[size]": page_size}
        if additional_fields:
            params["additional-fields[profile]"] = ",".join(additional_fields)
        async for page in self._pages("get_profiles", self._path("profiles"), "L", params):
            yield page.items()

    async def iter_profiles(self, **kw: Any) -> AsyncIterator[dict[str, Any]]:
        """Like :meth:`iter_profile_pages`, one profile at a time."""
        async for page in self.iter_profile_pages(**kw):
            for item in page:
                yield item

    async def get_profile(
        self, profile_id: str, *, additional_fields: Sequence[str] | None = None
    ) -> dict[str, Any] | None:
        """The profile resource, or ``None`` when Klaviyo answers 404."""
        params = {"additional-fields[profile]": ",".join(additional_fields)} if additional_fields else None
        answer = await self._send(
            "get_profile", "GET", self._path("profiles", profile_id), "L", {200: RESOURCE, 404: ERRORS}, params=params
        )
        return None if answer.status == 404 else answer.resource()

    async def create_profile(self, attributes: Mapping[str, Any]) -> tuple[str, bool]:
        """Create a profile; returns ``(id, created)``.

        A 409 ``duplicate_profile`` (the identifiers already belong to a profile, or
        a retried create already happened) returns the existing id with ``created=False``.
        """
        body = {"data": {"type": "profile", "attributes": dict(attributes)}}
        answer = await self._send("create_profile", "POST", self._path("profiles"), "L",
                                  {201: RESOURCE, 409: ERRORS}, body=body)
        if answer.status == 409:
            existing = answer.duplicate_profile_id()
            if existing is None:
                raise api_error(answer.response, self._req.secrets())
            return existing, False
        return answer.resource_id(), True

    async def update_profile(
        self, profile_id: str, attributes: Mapping[str, Any], *, unset: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Partial update: only the attributes given change; ``None`` clears a field.

        ``unset`` removes custom ``properties`` keys.  Returns the updated resource.
        """
        data: dict[str, Any] = {"type": "profile", "id": profile_id, "attributes": dict(attributes)}
        if unset:
            data["meta"] = {"patch_properties": {"unset": list(unset)}}
        answer = await self._send(
            "update_profile", "PATCH", self._path("profiles", profile_id), "L", {200: RESOURCE}, body={"data": data}
        )
        return answer.resource()

    async def create_or_update_profile(
        self, attributes: Mapping[str, Any], *, profile_id: str | None = None
    ) -> tuple[str, bool] | None:
        """Upsert with ``POST /api/profile-import`` -> ``(id, created)``.

        Returns ``None`` when the revision has no profile-import (before 2024-02-15);
        use :meth:`upsert_profile` to fall back to create + patch automatically.
        """
        if not self.supports("profile_import"):
            return None
        data: dict[str, Any] = {"type": "profile", "attributes": dict(attributes)}
        if profile_id:
            data["id"] = profile_id
        answer = await self._send(
            "create_or_update_profile", "POST", self._path("profile-import"), "L", {200: RESOURCE, 201: RESOURCE},
            body={"data": data},
        )
        return answer.resource_id(), answer.status == 201

    async def upsert_profile(self, attributes: Mapping[str, Any]) -> tuple[str, bool]:
        """Create or update by identifiers, with the cheapest call the revision offers."""
        done = await self.create_or_update_profile(attributes)
        if done is not None:
            return done
        pid, created = await self.create_profile(attributes)
        if not created:
            await self.update_profile(pid, attributes)
        return pid, created

    async def find_profiles(
        self, *, email: str | None = None, phone_number: str | None = None, external_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Profiles whose email / phone number / external id equals the value given (one of them)."""
        given = [(k, v) for k, v in (("email", email), ("phone_number", phone_number), ("external_id", external_id))
                 if v]
        if len(given) != 1:
            raise ValueError("find_profiles needs exactly one of email=, phone_number=, external_id=")
        field, value = given[0]
        found: list[dict[str, Any]] = []
        async for page in self.iter_profile_pages(filter=f"equals({field},{_quote(value)})"):
            found.extend(page)
        return found

    # -- lists -----------------------------------------------------------------------

    async def find_profile_ids_by_email(self, emails: Sequence[str]) -> dict[str, str]:
        """Lowercased email -> profile id for the emails Klaviyo holds, 100 per request
        (``any(email,[...])`` with ``page[size]=100``): one call finds a batch's existing profiles."""
        wanted = list(dict.fromkeys(e.strip().lower() for e in emails if e and e.strip()))
        found: dict[str, str] = {}
        for chunk in chunks(wanted, EMAIL_LOOKUP_BATCH):
            text = "any(email,[" + ",".join(_quote(e) for e in chunk) + "])"
            async for page in self.iter_profile_pages(filter=text, page_size=EMAIL_LOOKUP_BATCH):
                for p in page:
                    email = (p.get("attributes") or {}).get("email")
                    if isinstance(email, str) and p.get("id"):
                        found.setdefault(email.lower(), str(p["id"]))
        return found

    async def find_lists_by_name(self, name: str) -> list[dict[str, Any]]:
        """Every list named ``name`` (Klaviyo does not make names unique)."""
        found: list[dict[str, Any]] = []
        params = {"filter": f"equals(name,{_quote(name)})"}
        async for page in self._pages("get_lists", self._path("lists"), "L", params):
            found.extend(page.items())
        return found

    async def find_list_by_name(self, name: str) -> dict[str, Any] | None:
        """The first list named ``name`` or ``None``; found lists are cached per client."""
        if name in self._list_cache:
            return self._list_cache[name]
        found = await self.find_lists_by_name(name)
        hit = found[0] if found else None
        if hit is not None:
            self._list_cache[name] = hit
        return hit

    async def create_list(self, name: str) -> str:
        """Create a list and return its id."""
        body = {"data": {"type": "list", "attributes": {"name": name}}}
        answer = await self._send("create_list", "POST", self._path("lists"), "M", {201: RESOURCE}, body=body)
        self._list_cache[name] = answer.resource()
        return answer.resource_id()

    async def _list_relationship(self, op: str, method: str, list_id: str, profile_ids: Sequence[str]) -> None:
        path = self._path("lists", list_id, "relationships", "profiles")
        for chunk in chunks(list(profile_ids), LIST_BATCH):
            body = {"data": [{"type": "profile", "id": pid} for pid in chunk]}
            await self._send(op, method, path, "M", {204: EMPTY}, body=body)

    async def add_profiles_to_list(self, list_id: str, profile_ids: Sequence[str]) -> None:
        """Add profiles to a list without touching consent (batches of 1,000)."""
        await self._list_relationship("add_profiles_to_list", "POST", list_id, profile_ids)

    async def remove_profiles_from_list(self, list_id: str, profile_ids: Sequence[str]) -> None:
        """Remove profiles from a list without touching consent (batches of 1,000)."""
        await self._list_relationship("remove_profiles_from_list", "DELETE", list_id, profile_ids)

    async def get_list_profiles(self, list_id: str, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every profile resource in a list (``GET /api/lists/{id}/profiles``)."""
        out: list[dict[str, Any]] = []
        params = {"page[size]": page_size}
        async for page in self._pages("get_list_profiles", self._path("lists", list_id, "profiles"), "L", params):
            out.extend(page.items())
        return out

    # -- consent ---------------------------------------------------------------------

    def _consent_profiles(
        self, profiles: Sequence[Mapping[str, Any]], consent: str, channels: Sequence[str]
    ) -> list[dict[str, Any]]:
        out = []
        for p in profiles:
            attrs = {k: p[k] for k in ("email", "phone_number") if p.get(k)}
            if not attrs:
                raise ValueError("each profile to (un)subscribe needs an email or a phone_number")
            subs = {}
            if "email" in channels and "email" in attrs:
                subs["email"] = {"marketing": {"consent": consent}}
            if "sms" in channels and "phone_number" in attrs:
                subs["sms"] = {"marketing": {"consent": consent}}
            if consent == "SUBSCRIBED" or self.supports("subscriptions_required"):
                attrs["subscriptions"] = subs
            item: dict[str, Any] = {"type": "profile", "attributes": attrs}
            if p.get("id") and consent == "SUBSCRIBED":
                item["id"] = p["id"]
            out.append(item)
        return out

    def subscribe_limit(self) -> int:
        """Profiles one subscribe job may name at this revision (100; 1,000 from 2024-07-15)."""
        return SUBSCRIBE_BATCH_LATER if rev.date_of(self.revision) >= SUBSCRIBE_BATCH_LATER_FROM else SUBSCRIBE_BATCH

    async def _consent_job(
        self, op: str, job: str, profiles: Sequence[Mapping[str, Any]], consent: str,
        list_id: str | None, channels: Sequence[str], custom_source: str | None, batch: int = SUBSCRIBE_BATCH,
    ) -> None:
        if consent == "SUBSCRIBED" and list_id is None and not self.supports("optional_subscribe_list"):
            raise ValueError(f"revision {self.revision} needs a list_id to subscribe profiles")
        for chunk in chunks(list(profiles), batch):
            attributes: dict[str, Any] = {
                "profiles": {"data": self._consent_profiles(chunk, consent, channels)}
            }
            if custom_source and consent == "SUBSCRIBED":
                attributes["custom_source"] = custom_source
            data: dict[str, Any] = {"type": job, "attributes": attributes}
            if list_id:
                data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
            await self._send(op, "POST", self._path(job + "s"), "L", {202: EMPTY}, body={"data": data})

    async def subscribe_profiles(
        self,
        profiles: Sequence[Mapping[str, Any]],
        *,
        list_id: str | None = None,
        channels: Sequence[str] = ("email", "sms"),
        custom_source: str | None = None,
        batch: int = SUBSCRIBE_BATCH,
    ) -> None:
        """Give marketing consent (jobs of ``batch`` profiles, at most :meth:`subscribe_limit`);
        profiles are ``{"email"|"phone_number", "id"?}``."""
        await self._consent_job(
            "subscribe_profiles", "profile-subscription-bulk-create-job", profiles,
            "SUBSCRIBED", list_id, channels, custom_source, min(max(1, batch), self.subscribe_limit()),
        )

    async def unsubscribe_profiles(
        self,
        profiles: Sequence[Mapping[str, Any]],
        *,
        list_id: str | None = None,
        channels: Sequence[str] = ("email", "sms"),
    ) -> None:
        """Withdraw marketing consent (job, batches of 100)."""
        await self._consent_job(
            "unsubscribe_profiles", "profile-subscription-bulk-delete-job", profiles,
            "UNSUBSCRIBED", list_id, channels, None,
        )

    # -- events ----------------------------------------------------------------------

    async def create_event(
        self,
        metric_name: str,
        profile: str | Mapping[str, Any],
        properties: Mapping[str, Any] | None = None,
        *,
        value: float | None = None,
        unique_id: str | None = None,
        time: datetime | str | None = None,
    ) -> str:
        """Record an event (202).  ``profile`` is a profile id or identifier attributes.

        Without ``unique_id`` one is generated *before* the first attempt, so a retry
        can never record the event twice.  Returns the ``unique_id`` used.
        """
        uid = unique_id or str(uuid.uuid4())
        attrs = event_attributes(metric_name, profile, properties, value=value, unique_id=uid, time=time)
        await self._send("create_event", "POST", self._path("events"), "XL", {202: EMPTY},
                         body={"data": {"type": "event", "attributes": attrs}})
        return uid

    async def bulk_create_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Create up to 1,000 events in one bulk job (202, from revision 2024-05-15; tier M).

        Each item holds :meth:`create_event`'s arguments (``metric_name``, ``profile``,
        ``properties``, ``value``, ``unique_id`` -- required here, so a retry cannot record an
        event twice -- and ``time``).  Events of the same profile share one entry of the job.
        Klaviyo checks the whole request before it answers: one event it refuses fails the
        request (400), and nothing of it is recorded.
        """
        entries: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        for ev in events:
            attrs = event_attributes(ev["metric_name"], ev["profile"], ev.get("properties"), value=ev.get("value"),
                                     unique_id=ev["unique_id"], time=ev.get("time"))
            prof = attrs.pop("profile")["data"]
            key = json.dumps(prof, sort_keys=True)
            entries.setdefault(key, (prof, []))[1].append({"type": "event", "attributes": attrs})
        data = [{"type": "event-bulk-create", "attributes": {"profile": {"data": prof},
                                                             "events": {"data": evs}}}
                for prof, evs in entries.values()]
        await self._send("bulk_create_events", "POST", self._path("event-bulk-create-jobs"), "M", {202: EMPTY},
                         body={"data": {"type": "event-bulk-create-job",
                                        "attributes": {"events-bulk-create": {"data": data}}}})

    async def get_events(
        self, *, filter: str | None = None, sort: str | None = None
    ) -> list[dict[str, Any]]:
        """Every event matching ``filter`` (e.g. ``equals(profile_id,"...")``).

        Each event resource gets an extra key ``"included"`` holding its metric and
        profile resources (from ``include=metric,profile``) for convenient checks.
        """
        params = {"filter": filter, "sort": sort, "include": "metric,profile"}
        out: list[dict[str, Any]] = []
        async for page in self._pages("get_events", self._path("events"), "XL", params):
            inc = {(r["type"], r["id"]): r for r in page.included()}
            for ev in page.items():
                rel = ev.get("relationships") or {}
                extra = {}
                for name in ("metric", "profile"):
                    link = rel.get(name)
                    ref = link.get("data") if isinstance(link, dict) else None
                    ref = ref if isinstance(ref, dict) else {}
                    extra[name] = inc.get((ref.get("type"), ref.get("id")))
                out.append({**ev, "included": extra})
        return out

    # -- bulk profile import (from 2023-12-15) --------------------------------------

    async def bulk_import_profiles(
        self, profiles: Sequence[Mapping[str, Any]], *, list_ids: Sequence[str] = ()
    ) -> str:
        """Start a bulk profile import job (up to 10,000 profiles); returns the job id.

        Raises:
            KlaviyoApiError: the revision has no bulk import (HTTP 404 from Klaviyo).
        """
        job = await self.start_bulk_import([bulk_import_entry(p) for p in profiles], list_ids=list_ids)
        return str(job["id"])

    async def start_bulk_import(
        self, entries: Sequence[Mapping[str, Any]], *, list_ids: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Start a bulk profile import job of ready ``entries`` (:func:`bulk_import_entry`) -> the job resource."""
        answer = await self._send("bulk_import_profiles", "POST", self._path("profile-bulk-import-jobs"), "M",
                                  {202: RESOURCE}, body=bulk_import_body(entries, list_ids))
        return answer.resource()

    async def get_bulk_import_job(self, job_id: str) -> dict[str, Any]:
        """The bulk import job resource (``attributes.status``, counts)."""
        answer = await self._send("get_bulk_import_job", "GET", self._path("profile-bulk-import-jobs", job_id), "M",
                                  {200: RESOURCE})
        return answer.resource()

    async def iter_bulk_import_jobs(self, *, sort: str = "-created_at") -> AsyncGenerator[list[dict[str, Any]], None]:
        """Pages of bulk import job resources, newest first by default."""
        params = {"sort": sort, "page[size]": 100}
        async for page in self._pages("get_bulk_import_jobs", self._path("profile-bulk-import-jobs"), "M", params):
            yield page.items()

    async def iter_bulk_import_job_profiles(self, job_id: str) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Pages of the profiles a bulk import job created or updated (100 a page)."""
        path = self._path("profile-bulk-import-jobs", job_id, "profiles")
        async for page in self._pages("get_bulk_import_job_profiles", path, "M", {"page[size]": 100}):
            yield page.items()

    async def iter_bulk_import_errors(self, job_id: str) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Pages of a bulk import job's ``import-error`` resources (100 a page)."""
        path = self._path("profile-bulk-import-jobs", job_id, "import-errors")
        async for page in self._pages("get_bulk_import_errors", path, "M", {"page[size]": 100}):
            yield page.items()


def bulk_import_entry(attributes: Mapping[str, Any], profile_id: str | None = None) -> dict[str, Any]:
    """One profile of a bulk import job (``id`` makes Klaviyo update that profile)."""
    entry: dict[str, Any] = {"type": "profile", "attributes": dict(attributes)}
    if profile_id:
        entry["id"] = profile_id
    return entry


def bulk_import_body(entries: Sequence[Mapping[str, Any]], list_ids: Sequence[str] = ()) -> dict[str, Any]:
    """The body of ``POST /api/profile-bulk-import-jobs``."""
    data: dict[str, Any] = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": list(entries)}}}
    if list_ids:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in list_ids]}}
    return {"data": data}


def json_size(value: Any) -> int:
    """Bytes ``value`` takes in a request body (compact UTF-8 JSON, as the transport sends it)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def event_attributes(metric_name: str, profile: str | Mapping[str, Any], properties: Mapping[str, Any] | None, *,
                     value: float | None, unique_id: str, time: datetime | str | None) -> dict[str, Any]:
    """The attributes of one event, as ``POST /api/events`` and the bulk event job take them."""
    if isinstance(profile, str):
        prof: dict[str, Any] = {"type": "profile", "id": profile, "attributes": {}}
    else:
        prof = {"type": "profile", "attributes": dict(profile)}
    attrs: dict[str, Any] = {
        "properties": dict(properties or {}),
        "metric": {"data": {"type": "metric", "attributes": {"name": metric_name}}},
        "profile": {"data": prof},
        "unique_id": unique_id,
    }
    if value is not None:
        attrs["value"] = value
    if time is not None:
        attrs["time"] = time.isoformat() if isinstance(time, datetime) else time
    return attrs


__all__ = ["KlaviyoClient", "KlaviyoApiError", "TokenSource", "DEFAULT_BASE_URL", "bulk_import_body",
           "bulk_import_entry", "json_size"]

