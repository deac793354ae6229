"""The sandbox's asynchronous job endpoints: consent (subscribe / unsubscribe) and bulk profile import.

Klaviyo answers these with 202 and does the work later, profile by profile; so
does the sandbox (``docs/klaviyo.md``, "Jobs"):

* a ``POST`` checks the body *synchronously* (the spec, then Klaviyo's limits:
  100 profiles per subscribe job before revision 2024-07-15 and 1,000 from it,
  100 per unsubscribe job, 10,000 profiles and 5 MB per bulk import job, 100 KB
  per imported profile) and answers 400 / 413 with Klaviyo's error body, or 202;
* the job is stored in :attr:`SandboxState.jobs` (so it survives a restart with
  a ``state_file``) and a background processor in the server's event loop
  applies it later, one profile at a time: a profile that cannot be processed
  is skipped (a bulk import records an ``import-error``), the others go on;
* a bulk import job moves ``queued`` → ``processing`` → ``complete`` and can be
  read back with the job list, the job, its ``import-errors``, ``profiles`` and
  ``lists`` (and their ``relationships/`` forms), where the revision has them.

``SandboxOptions.job_delay_s`` keeps every job queued that long before the
processor starts it.  :func:`drain` (``SandboxState.drain_jobs``) applies pending
jobs at once from any thread, so a test can make consent visible, or step a
bulk import through ``processing``, without waiting on a clock.

:data:`ROUTES` has the same shape as :data:`engine.sandbox._handlers.ROUTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from engine.errors import SandboxApiError
from engine.klaviyo import revision as rev
from engine.sandbox import _filters as flt
from engine.sandbox._accounts import Accounts
from engine.sandbox._handlers import (
    STATE_KEY,
    Handler,
    attributes_and_patch,
    body_data,
    filter_conditions,
    request_state,
)
from engine.sandbox._render import (
    REVISION_KEY,
    additional_fields,
    body_response,
    link,
    list_resource,
    page_size,
    paginate,
    profile_resource,
)
from engine.sandbox._state import SandboxState, invalid, iso, not_found

if TYPE_CHECKING:
    from engine.sandbox._server import SandboxOptions

log = logging.getLogger("engine.sandbox")

# -- Klaviyo's limits (API-NOTES §3.1, §3.2, §5; the specs' operation descriptions) --------

SUBSCRIBE_MAX = 100            # "Maximum number of profile can be submitted for subscription: 100" (2023-10-15)
SUBSCRIBE_MAX_LATER = 1000     # "... for subscription: 1000" from revision 2024-07-15
SUBSCRIBE_1000_FROM = "2024-07-15"
UNSUBSCRIBE_MAX = 100          # "Maximum number of profiles per call: 100" (every revision)
IMPORT_MAX_PROFILES = 10_000   # "Accepts up to 10,000 profiles per request."
IMPORT_MAX_BYTES = 5_000_000   # "The maximum allowed payload size is 5MB." (read as 5,000,000 bytes)
IMPORT_MAX_PROFILE_BYTES = 100_000  # "The maximum allowed payload size per-profile is 100KB."
OTHER_MAX_BYTES = 1024 * 1024  # every other route: aiohttp's default cap, as before
#: aiohttp's body cap (its default of 1 MiB refused a 10,000-profile job with a bare 413)
CLIENT_MAX_SIZE = IMPORT_MAX_BYTES
#: how many profiles of a bulk import the processor applies before letting requests in
CHUNK = 500

BULK_IMPORT = "profile-bulk-import-job"
SUBSCRIBE = "profile-subscription-bulk-create-job"
UNSUBSCRIBE = "profile-subscription-bulk-delete-job"
CONSENT_KINDS = (SUBSCRIBE, UNSUBSCRIBE)
PENDING = ("queued", "processing")
IMPORT_PATH = "/api/profile-bulk-import-jobs"
FIVE_MB_PATHS = (IMPORT_PATH, "/api/event-bulk-create-jobs")


def payload_too_large(limit: int = IMPORT_MAX_BYTES) -> SandboxApiError:
    """413 for a body over the route's limit (Klaviyo's 5 MB text; the error code is the sandbox's choice)."""
    text = "5MB" if limit == IMPORT_MAX_BYTES else f"{limit // 1048576} MiB"
    return SandboxApiError(413, "payload_too_large", "Payload too large.",
                           f"The maximum allowed payload size is {text}.", pointer="/data")


def too_many(limit: int, what: str) -> SandboxApiError:
    """400 for a job naming more profiles than Klaviyo takes in one call."""
    return invalid(f"The maximum number of profiles that can be submitted for {what} is {limit}.",
                   pointer="/data/attributes/profiles/data")


def subscribe_limit(revision: str) -> int:
    """Profiles one subscribe job may name at ``revision`` (100, or 1,000 from 2024-07-15)."""
    return SUBSCRIBE_MAX_LATER if rev.date_of(revision) >= SUBSCRIBE_1000_FROM else SUBSCRIBE_MAX


def body_limit(path: str) -> int:
    """The largest body a route takes: 5 MB for the bulk jobs (Klaviyo's documented limit), else the
    1 MiB the sandbox has always taken (aiohttp's default cap; Klaviyo documents no other limit)."""
    return IMPORT_MAX_BYTES if path.rstrip("/") in FIVE_MB_PATHS else OTHER_MAX_BYTES


@web.middleware
async def payload_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost middleware: a body over its route's limit gets a JSON:API 413 before it is read.

    A body without ``Content-Length`` is cut at :data:`CLIENT_MAX_SIZE` by aiohttp; its bare
    413 is turned into the same answer.
    """
    from engine.sandbox._server import error_body

    limit = body_limit(request.path)
    if request.path.startswith("/api/") and (request.content_length or 0) > limit:
        return body_response(error_body(payload_too_large(limit)), 413)
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return body_response(error_body(payload_too_large(limit)), 413)


# -- consent jobs: checked now, applied later ----------------------------------------


def _channels(attrs: dict[str, Any]) -> list[str]:
    """The channels a consent entry names: its ``subscriptions``, else those it has an identifier for."""
    subs = attrs.get("subscriptions")
    if isinstance(subs, dict) and subs:
        return [ch for ch in ("email", "sms") if ch in subs]
    return [ch for ch, ident in (("email", "email"), ("sms", "phone_number")) if attrs.get(ident)]


def _profiles_of(data: Any) -> list[dict[str, Any]]:
    """``data.attributes.profiles.data`` as a list of objects, else Klaviyo's 400 naming where it breaks.

    The spec check already guarantees this where the revision's spec has the route; the sandbox
    may run without it (``validate=False``, or a bulk import at 2023-12-15, absent from the
    stored 2023-10-15 spec), and a job must never fail later on a shape it accepted.
    """
    pointer = "/data/attributes/profiles/data"
    attrs = data.get("attributes") if isinstance(data, dict) else None
    profiles = ((attrs or {}).get("profiles") or {}).get("data") if isinstance(attrs, dict) else None
    if not isinstance(profiles, list):
        raise invalid("'data' is a required field.", pointer=pointer)
    for i, entry in enumerate(profiles):
        if not isinstance(entry, dict) or not isinstance(entry.get("attributes", {}), dict):
            raise invalid("Each profile must be an object with 'attributes'.", pointer=f"{pointer}/{i}")
    return profiles


def _list_id(data: dict[str, Any]) -> str | None:
    return (((data.get("relationships") or {}).get("list") or {}).get("data") or {}).get("id")


def _enqueue(request: web.Request, job: dict[str, Any]) -> dict[str, Any]:
    state = request_state(request)
    with state.lock:
        job["id"] = state.new_id()
        job["revision"] = request[REVISION_KEY]
        job["next"] = 0
        state.jobs[job["id"]] = job
        state.dirty = True
    runner = request.app.get(RUNNER_KEY)
    if runner is not None:
        runner.notify(job["id"], state)
    return job


def _consent_job(kind: str, request: web.Request, limit: int, what: str) -> dict[str, Any]:
    state = request_state(request)
    data = body_data(request)
    profiles = _profiles_of(data)
    attrs = data["attributes"]
    if len(profiles) > limit:
        raise too_many(limit, what)
    list_id = _list_id(data)
    if list_id:
        state.get_list(list_id)
    for i, entry in enumerate(profiles):
        pattrs = entry.get("attributes") or {}
        for ch, ident in (("email", "email"), ("sms", "phone_number")):
            if ch in _channels(pattrs) and not pattrs.get(ident):
                verb = "subscribe" if kind == SUBSCRIBE else "unsubscribe"
                raise invalid(f"A {ident} is required to {verb} to {ch}.",
                              pointer=f"/data/attributes/profiles/data/{i}/attributes/{ident}")
    now = iso(state.clock())
    return {"type": kind, "attributes": {"status": "queued", "created_at": now, "total_count": len(profiles),
                                         "completed_count": 0, "failed_count": 0},
            "profiles": profiles, "list_id": list_id, "custom_source": attrs.get("custom_source"), "skipped": []}


async def subscribe(request: web.Request) -> web.Response:
    """``POST /api/profile-subscription-bulk-create-jobs``: 202 with no body, consent given later."""
    revision = request[REVISION_KEY]
    _enqueue(request, _consent_job(SUBSCRIBE, request, subscribe_limit(revision), "subscription"))
    return web.Response(status=202)


async def unsubscribe(request: web.Request) -> web.Response:
    """``POST /api/profile-subscription-bulk-delete-jobs``: 202 with no body, consent withdrawn later."""
    _enqueue(request, _consent_job(UNSUBSCRIBE, request, UNSUBSCRIBE_MAX, "unsubscription"))
    return web.Response(status=202)


def _email_marketing(p: dict[str, Any]) -> dict[str, Any]:
    m: dict[str, Any] = p["subscriptions"]["email"]["marketing"]
    if not isinstance(m.get("list_suppressions"), list):
        m["list_suppressions"] = []
    return m


def _apply_subscribe(state: SandboxState, job: dict[str, Any], entry: dict[str, Any]) -> None:
    pattrs = dict(entry.get("attributes") or {})
    ident = {k: v for k, v in pattrs.items() if k in ("email", "phone_number", "external_id")}
    p = state.resolve_profile(entry.get("id"), ident)
    for ch in _channels(pattrs):
        state.set_consent(p, ch, "SUBSCRIBED", job.get("custom_source"))
    lid = job.get("list_id")
    if lid:
        state.change_members(lid, [p["id"]], add=True)
        m = _email_marketing(p)
        m["list_suppressions"] = [s for s in m["list_suppressions"] if s.get("list_id") != lid]


def _apply_unsubscribe(state: SandboxState, job: dict[str, Any], entry: dict[str, Any]) -> None:
    """From the job's list only when the profile is on it (a list suppression); else globally.

    Klaviyo: "Profiles not in the specified list will be globally unsubscribed"; a profile that
    does not exist yet is created and then unsubscribed (2023-10-15 spec).
    """
    pattrs = dict(entry.get("attributes") or {})
    ident = {k: v for k, v in pattrs.items() if k in ("email", "phone_number")}
    p = state.resolve_profile(None, ident)
    chans = _channels(pattrs)
    lid = job.get("list_id")
    lst = state.lists.get(lid) if lid else None
    if lid and lst is not None and p["id"] in lst["members"]:
        state.change_members(lid, [p["id"]], add=False)
        if "email" in chans:
            now = state.clock()
            m = _email_marketing(p)
            m["list_suppressions"] = [s for s in m["list_suppressions"] if s.get("list_id") != lid]
            m["list_suppressions"].append({"list_id": lid, "reason": "USER_SUPPRESSED", "timestamp": iso(now)})
            m["last_updated"] = iso(now)
            p["updated"] = now
            state.dirty = True
        return
    for ch in chans:
        state.set_consent(p, ch, "UNSUBSCRIBED", None)


# -- bulk profile import -------------------------------------------------------------


async def bulk_import_profiles(request: web.Request) -> web.Response:
    """``POST /api/profile-bulk-import-jobs``: 202 with the ``queued`` job."""
    state = request_state(request)
    raw = await request.read()  # already read (and cached) by the pipeline
    if len(raw) > IMPORT_MAX_BYTES:
        raise payload_too_large()
    data = body_data(request)
    profiles = _profiles_of(data)
    if len(profiles) > IMPORT_MAX_PROFILES:
        raise too_many(IMPORT_MAX_PROFILES, "a bulk profile import")
    if len(raw) > IMPORT_MAX_PROFILE_BYTES:  # no single profile can be larger than the whole body
        for i, entry in enumerate(profiles):
            if len(json.dumps(entry, separators=(",", ":"))) > IMPORT_MAX_PROFILE_BYTES:
                raise invalid("The maximum allowed payload size per-profile is 100KB.",
                              pointer=f"/data/attributes/profiles/data/{i}")
    list_ids = [x["id"] for x in (((data.get("relationships") or {}).get("lists") or {}).get("data") or [])]
    for lid in list_ids:
        state.get_list(lid)
    now = iso(state.clock())
    job = _enqueue(request, {
        "type": BULK_IMPORT,
        "attributes": {"status": "queued", "created_at": now, "total_count": len(profiles), "completed_count": 0,
                       "failed_count": 0, "started_at": None, "completed_at": None, "expires_at": None},
        "profiles": profiles, "list_ids": list_ids, "profile_ids": [], "errors": [],
    })
    return body_response({"data": _job_resource(request, job)}, status=202)


def _apply_import(state: SandboxState, job: dict[str, Any], index: int, entry: dict[str, Any],
                  joined: list[str]) -> None:
    attrs, patch = attributes_and_patch(entry, job["revision"])
    try:
        p, _ = state.import_profile(attrs, entry.get("id"), patch)
    except SandboxApiError as exc:
        _record_import_error(state, job, index, entry, exc)
        return
    except (TypeError, ValueError, AttributeError, KeyError) as bug:  # a shape the checks let through
        log.warning("bulk import job %s: profile %d could not be applied: %r", job["id"], index, bug)
        _record_import_error(state, job, index, entry,
                             invalid("The profile could not be imported.", pointer="/data/attributes"))
        return
    job["profile_ids"].append(p["id"])
    joined.append(p["id"])
    job["attributes"]["completed_count"] += 1


def _record_import_error(state: SandboxState, job: dict[str, Any], index: int, entry: dict[str, Any],
                         exc: SandboxApiError) -> None:
    """One ``import-error``: Klaviyo's error fields, the pointer into the job's body, the profile sent."""
    pointer = f"/data/attributes/profiles/data/{index}"
    if exc.pointer and exc.pointer.startswith("/data/") and exc.pointer != "/data/":
        pointer += exc.pointer[len("/data"):]
    job["errors"].append({"id": state.new_id(), "code": exc.code, "title": exc.title, "detail": exc.detail,
                          "source": {"pointer": pointer}, "original_payload": entry})
    job["attributes"]["failed_count"] += 1


# -- the processor -------------------------------------------------------------------


def _pending(state: SandboxState) -> dict[str, Any] | None:
    """The next job to work on: consent jobs first (they are small), then imports, oldest first."""
    first_import = None
    for job in state.jobs.values():
        if job.get("attributes", {}).get("status") not in PENDING:
            continue
        if job.get("type") in CONSENT_KINDS:
            return job
        if first_import is None and job.get("type") == BULK_IMPORT:
            first_import = job
    return first_import


def step(state: SandboxState, job: dict[str, Any], budget: int | None = None) -> int:
    """Apply up to ``budget`` more profiles of ``job`` (all when ``None``); returns how many."""
    with state.lock:
        attrs = job["attributes"]
        if attrs["status"] not in PENDING:
            return 0
        now = iso(state.clock())
        if attrs["status"] == "queued":
            attrs["status"] = "processing"
            if job["type"] == BULK_IMPORT:
                attrs["started_at"] = now
        profiles = job["profiles"]
        start: int = job["next"]
        end = len(profiles) if budget is None else min(len(profiles), start + max(budget, 1))
        joined: list[str] = []
        for i in range(start, end):
            entry = profiles[i]
            if job["type"] == BULK_IMPORT:
                _apply_import(state, job, i, entry, joined)
                continue
            try:
                (_apply_subscribe if job["type"] == SUBSCRIBE else _apply_unsubscribe)(state, job, entry)
                attrs["completed_count"] += 1
            except SandboxApiError as exc:  # Klaviyo skips the profile; the job goes on
                attrs["failed_count"] += 1
                job["skipped"].append({"index": i, "code": exc.code, "detail": exc.detail})
            except (TypeError, ValueError, AttributeError, KeyError) as bug:  # a shape the checks let through
                log.warning("%s %s: profile %d could not be applied: %r", job["type"], job["id"], i, bug)
                attrs["failed_count"] += 1
                job["skipped"].append({"index": i, "code": "error", "detail": repr(bug)[:200]})
        for lid in job.get("list_ids") or []:
            if joined and lid in state.lists:
                state.change_members(lid, joined, add=True)
        job["next"] = end
        if end >= len(profiles):
            _finish(state, job, now)
        state.dirty = True
        return end - start


def _finish(state: SandboxState, job: dict[str, Any], now: str | None) -> None:
    attrs = job["attributes"]
    attrs["status"] = "complete"
    job["profiles"] = []  # the payload is not needed any more (errors keep their original_payload)
    if job["type"] == BULK_IMPORT:
        attrs["completed_at"] = now
    else:
        state.jobs.pop(job["id"], None)  # consent jobs cannot be read back: nothing to keep


def drain(state: SandboxState, limit: int | None = None) -> int:
    """Apply pending jobs now, from any thread; ``limit`` caps the profiles applied.  Returns the count."""
    done = 0
    while limit is None or done < limit:
        with state.lock:
            job = _pending(state)
            if job is None:
                break
            done += step(state, job, None if limit is None else limit - done)
    return done


class JobRunner:
    """The background processor, one task in the server's event loop, for every account.

    It works on the accounts that may have pending jobs (every account at start, for jobs a
    state file brought back; then each account a job is queued in), taking them in turn: one
    step of the first account whose next job is due, which then goes to the back of the line.
    An account without pending jobs leaves the line, so the cost per step does not grow with
    idle accounts.
    """

    def __init__(self, accounts: Accounts, options: SandboxOptions) -> None:
        self.accounts, self.options = accounts, options
        self.state = accounts.default
        #: (account state's id(), job id) -> monotonic time it was queued
        self.enqueued: dict[tuple[int, str], float] = {}
        self._active: dict[int, SandboxState] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def notify(self, job_id: str, state: SandboxState | None = None) -> None:
        """A job was queued in ``state`` (default: the default account's), called in the loop by the handler."""
        state = state if state is not None else self.state
        self._active[id(state)] = state
        self.enqueued[(id(state), job_id)] = time.monotonic()
        if self._wake is not None:
            self._wake.set()

    def _next(self) -> tuple[SandboxState, dict[str, Any], float] | None:
        """The first account (in turn) whose pending job is due, its job, 0; else the soonest one's wait."""
        soonest: tuple[SandboxState, dict[str, Any], float] | None = None
        for key, state in list(self._active.items()):
            with state.lock:
                job = _pending(state)
            if job is None:
                del self._active[key]
                continue
            wait = 0.0
            if job["attributes"]["status"] == "queued":
                queued = self.enqueued.setdefault((key, job["id"]), time.monotonic())
                wait = queued + self._delay() - time.monotonic()
            if wait <= 0:
                return state, job, 0.0
            if soonest is None or wait < soonest[2]:
                soonest = (state, job, wait)
        return soonest

    def _delay(self) -> float:
        d = getattr(self.options, "job_delay_s", 0.0)
        return d if isinstance(d, (int, float)) and math.isfinite(d) and d > 0 else 0.0

    async def run(self) -> None:
        assert self._wake is not None
        for state in self.accounts.states():  # jobs a state file brought back
            self._active[id(state)] = state
        while True:
            found = self._next()
            if found is None:
                self.enqueued.clear()
                await self._wake.wait()
                self._wake.clear()
                continue
            state, job, wait = found
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # a job queued meanwhile may be due sooner
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            # A consent job (at most 1,000 profiles) goes in one step, so a read that follows
            # its 202 sees it applied; an import lets requests in between chunks.
            try:
                step(state, job, CHUNK if job["type"] == BULK_IMPORT else None)
            except Exception:  # noqa: BLE001 - one broken job must not stop the processor
                log.exception("sandbox job %s could not be processed; it is cancelled", job.get("id"))
                with state.lock:
                    job["attributes"]["status"] = "cancelled"
                    state.dirty = True
            if job["attributes"]["status"] not in PENDING:
                self.enqueued.pop((id(state), job["id"]), None)
            key = id(state)  # to the back of the line: accounts take turns
            if self._active.pop(key, None) is not None:
                self._active[key] = state
            await asyncio.sleep(0)

    async def start(self, _app: web.Application) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.run(), name="sandbox-jobs")

    async def stop(self, _app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


RUNNER_KEY: web.AppKey[JobRunner] = web.AppKey("job_runner", JobRunner)


def mount(app: web.Application, accounts: Accounts | SandboxState, options: SandboxOptions) -> JobRunner:
    """Register the background processor with the app (started and stopped with it).

    ``accounts`` is the app's :class:`~engine.sandbox._accounts.Accounts` (a bare state: one shared account).
    """
    delay = getattr(options, "job_delay_s", 0.0)
    if not (isinstance(delay, (int, float)) and 0 <= delay <= 86_400):  # NaN fails both comparisons
        raise ValueError(f"job_delay_s must be between 0 and 86400 seconds, got {delay}")
    if isinstance(accounts, SandboxState):
        accounts = Accounts(accounts, separate=False)
    runner = JobRunner(accounts, options)
    app[RUNNER_KEY] = runner
    app.on_startup.append(runner.start)
    app.on_cleanup.append(runner.stop)
    return runner


# -- reading bulk import jobs back ---------------------------------------------------


def _import_job(request: web.Request, key: str = "id") -> dict[str, Any]:
    job_id = request.match_info[key]
    job = request_state(request).jobs.get(job_id)
    if job is None or job.get("type") != BULK_IMPORT:
        raise not_found(f"A profile bulk import job with id {job_id} does not exist.")
    return job


def _job_resource(request: web.Request, job: dict[str, Any]) -> dict[str, Any]:
    jid = job["id"]
    base = ("profile-bulk-import-jobs", jid)
    return {
        "type": BULK_IMPORT, "id": jid, "attributes": dict(job["attributes"]),
        "relationships": {
            "lists": {"data": [{"type": "list", "id": lid} for lid in job.get("list_ids") or []],
                      "links": {"self": link(request, *base, "relationships", "lists"),
                                "related": link(request, *base, "lists")}},
            "profiles": {"links": {"self": link(request, *base, "relationships", "profiles"),
                                   "related": link(request, *base, "profiles")}},
            "import-errors": {"links": {"related": link(request, *base, "import-errors")}},
        },
        "links": {"self": link(request, *base)},
    }


async def get_bulk_import_jobs(request: web.Request) -> web.Response:
    """``GET /api/profile-bulk-import-jobs``: filter ``status`` (any / equals), sort ``created_at``."""
    state = request_state(request)
    conds = filter_conditions(request, {"status": {"any", "equals"}})
    sort = request.query.get("sort", "created_at")
    if sort.lstrip("-") != "created_at":
        raise invalid(f"'{sort}' is not a valid sort for profile-bulk-import-jobs. "
                      "Valid choices: created_at, -created_at.",
                      parameter="sort")
    size = page_size(request, 20, 100)
    with state.lock:
        jobs = [j for j in state.jobs.values() if j.get("type") == BULK_IMPORT
                and flt.matches(conds, j["attributes"].get)]
        page, links = paginate(request, jobs, sort_value=lambda j: j["attributes"]["created_at"],
                               descending=sort.startswith("-"), page_size=size)
        return body_response({"data": [_job_resource(request, j) for j in page], "links": _links(links)})


async def get_bulk_import_job(request: web.Request) -> web.Response:
    """``GET /api/profile-bulk-import-jobs/{job_id}`` (``include=lists`` adds the lists)."""
    state = request_state(request)
    with state.lock:
        job = _import_job(request, "job_id")
        body: dict[str, Any] = {"data": _job_resource(request, job)}
        if "lists" in request.query.get("include", "").split(","):
            body["included"] = [list_resource(request, state.lists[lid]) for lid in job.get("list_ids") or []
                                if lid in state.lists]
        return body_response(body)


def _links(links: dict[str, Any]) -> dict[str, Any]:
    """Collection links without the empty ones (the spec types them as strings, not nullable)."""
    return {k: v for k, v in links.items() if v is not None}


def _job_profiles(state: SandboxState, job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    for pid in job.get("profile_ids") or []:
        if pid not in seen and pid in state.profiles:
            seen.add(pid)
            yield state.profiles[pid]


def _job_profile_page(request: web.Request, render: Any) -> web.Response:
    """One page of the profiles the job created or updated, each rendered by ``render(profile)``."""
    state = request_state(request)
    with state.lock:
        job = _import_job(request)
        page, links = paginate(request, list(_job_profiles(state, job)), sort_value=lambda p: p["id"],
                               descending=False, page_size=page_size(request, 20, 100))
        return body_response({"data": [render(p) for p in page], "links": _links(links)})


async def get_bulk_import_job_profiles(request: web.Request) -> web.Response:
    """``GET …/{id}/profiles``: the profiles the job created or updated."""
    extra = additional_fields(request)
    return _job_profile_page(request, lambda p: profile_resource(request, p, extra))


async def get_bulk_import_job_profile_ids(request: web.Request) -> web.Response:
    """``GET …/{id}/relationships/profiles``."""
    return _job_profile_page(request, lambda p: {"type": "profile", "id": p["id"]})


async def get_bulk_import_job_lists(request: web.Request) -> web.Response:
    """``GET …/{id}/lists``: the lists the job adds its profiles to."""
    state = request_state(request)
    with state.lock:
        job = _import_job(request)
        data = [list_resource(request, state.lists[lid]) for lid in job.get("list_ids") or [] if lid in state.lists]
        return body_response({"data": data, "links": {"self": str(request.url)}})


async def get_bulk_import_job_list_ids(request: web.Request) -> web.Response:
    """``GET …/{id}/relationships/lists``."""
    state = request_state(request)
    with state.lock:
        job = _import_job(request)
        data = [{"type": "list", "id": lid} for lid in job.get("list_ids") or []]
        return body_response({"data": data, "links": {"self": str(request.url)}})


async def get_bulk_import_job_errors(request: web.Request) -> web.Response:
    """``GET …/{id}/import-errors``: one ``import-error`` per profile the job could not import."""
    state = request_state(request)
    with state.lock:
        job = _import_job(request)
        errors = [{"type": "import-error", "id": e.get("id") or f"{job['id']}-{n}",
                   "attributes": {"code": e.get("code", "invalid"), "title": e.get("title", "Invalid input."),
                                  "detail": e.get("detail", ""), "source": e.get("source") or {"pointer": "/data"},
                                  "original_payload": e.get("original_payload")}}
                  for n, e in enumerate(job.get("errors") or [])]
        page, links = paginate(request, errors, sort_value=lambda e: e["id"], descending=False,
                               page_size=page_size(request, 20, 100))
        return body_response({"data": page, "links": _links(links)})


_IMPORT = "bulk_profile_import"

# (method, template without trailing slash, handler, tier, capability needed or None)
ROUTES: list[tuple[str, str, Handler, str, str | None]] = [
    ("POST", "/api/profile-subscription-bulk-create-jobs", subscribe, "L", None),
    ("POST", "/api/profile-subscription-bulk-delete-jobs", unsubscribe, "L", None),
    ("GET", IMPORT_PATH, get_bulk_import_jobs, "M", _IMPORT),
    ("POST", IMPORT_PATH, bulk_import_profiles, "M", _IMPORT),
    ("GET", IMPORT_PATH + "/{job_id}", get_bulk_import_job, "M", _IMPORT),
    ("GET", IMPORT_PATH + "/{id}/import-errors", get_bulk_import_job_errors, "M", _IMPORT),
    ("GET", IMPORT_PATH + "/{id}/profiles", get_bulk_import_job_profiles, "M", _IMPORT),
    ("GET", IMPORT_PATH + "/{id}/relationships/profiles", get_bulk_import_job_profile_ids, "M", _IMPORT),
    ("GET", IMPORT_PATH + "/{id}/lists", get_bulk_import_job_lists, "M", _IMPORT),
    ("GET", IMPORT_PATH + "/{id}/relationships/lists", get_bulk_import_job_list_ids, "M", _IMPORT),
]

__all__ = ["ROUTES", "mount", "drain", "step", "payload_limit", "CLIENT_MAX_SIZE", "JobRunner", "STATE_KEY"]
