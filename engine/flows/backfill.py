"""Backfill: load hub Customers into Klaviyo through bulk profile import jobs (``klaviyo-sync backfill``).

Dispatch sends one profile per call (L tier: 700 calls a minute).  An initial load of
a large hub goes much faster through Klaviyo's **bulk profile import jobs** (revision
2023-12-15 on): up to 10,000 profiles and 5 MB per job, processed by Klaviyo in the
background.  :func:`backfill_customers`:

* **streams** the Customers not yet linked (all of them with ``include_linked``) from
  the hub by id, never holding more than the jobs being packed;
* **maps** each through the same *Add* (unlinked) or *Update* (linked) Klaviyo Profile
  FROM Hub collection dispatch uses (:meth:`ProfileFlow.map_customer
  <engine.flows._outbound_profiles.ProfileFlow.map_customer>`, :func:`engine.payloads.profile_request`):
  the same partial rules, no nulls sent.  A linked Customer's entry carries its profile id;
  the others are matched by Klaviyo on their identifiers (email first);
* **packs** the entries into jobs of at most 10,000 profiles and 5 MB (split by size),
  one job per set of ``LIST_`` / ``UCLIST_`` lists (the job's ``lists``, membership only);
* **submits** each job and keeps it in the hub, then sees every job through
  (:mod:`engine.flows._backfill_jobs`): polled with backoff, each Customer linked to the
  profile the job reports, each import error logged on its record, then
  ``SubscribeProfile`` sent through subscribe / unsubscribe jobs.

**Resumable.**  The run's progress lives in the hub (``sync_state``): the id of the last
Customer handled (``cursor``), the jobs submitted and not finished, and, while a job's
``POST`` is on the wire, the job about to be submitted (``pending``).  A rerun after a
crash first adopts the pending job if Klaviyo has it (a job of the same size created since
then, found in Klaviyo's job list), finishes every stored job, and goes on after the
cursor, skipping the Customers a stored job carries: no Customer goes into two jobs.

``dry_run``: the same streaming, mapping and packing; the jobs are shown (profiles, bytes,
lists, first records) and nothing is sent to Klaviyo or written to the hub.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine._iter import chunks
from engine.collection import CollectionSet
from engine.errors import BackfillRevisionError, KlaviyoApiError, KlaviyoSyncError
from engine.flows._backfill_jobs import CODE_PROFILE_TOO_LARGE, JOB_KEY, JobFinisher, JobOutcome
from engine.flows._failures import is_auth_failure
from engine.flows._outbound_consent import ListResolver
from engine.flows._outbound_orders import AnswerResolver
from engine.flows._outbound_profiles import ProfileFlow
from engine.flows._outbound_records import CODE_LIST_MISSING, RecordResult, is_transient
from engine.flows.outbound import calls_of, outbound_collection
from engine.flows.summary import RunSummary
from engine.formula.helpers import bind_helpers
from engine.hub import HubStore
from engine.klaviyo import KlaviyoApi, revision as rev
from engine.klaviyo.client import (
    BULK_IMPORT_MAX_BYTES,
    BULK_IMPORT_MAX_PROFILE_BYTES,
    BULK_IMPORT_MAX_PROFILES,
    bulk_import_body,
    bulk_import_entry,
    json_size,
)
from engine.runner import Runner
from engine.settings import Settings

STATE_KEY = "backfill:customers"
PENDING_KEY = "backfill:customers:pending"
#: a job's body around its profiles: the envelope and up to a few dozen list ids
ENVELOPE_BYTES = 4_096
#: records of each job shown by a dry run and the report
FIRST_RECORDS = 3
#: a pending job found in Klaviyo's list was created at most this long before it was recorded
CLOCK_SLACK = datetime.timedelta(minutes=10)
#: submitted jobs followed to the end at once, while later jobs are packed and submitted
FINISHING_AT_ONCE = 4
#: Code of the error that stops a backfill on a revision without bulk import
CODE_REVISION = BackfillRevisionError.code
#: What the progress display is told: ``(records done, counts by name)``.
OnProgress = Callable[[int, dict[str, int]], None]


def revision_error(settings: Settings) -> BackfillRevisionError:
    """The backfill cannot run at ``settings.api_revision`` (no bulk profile import before 2023-12-15)."""
    since = rev.CAPABILITIES["bulk_profile_import"]
    where = str(settings.source) if settings.source else "the settings"
    return BackfillRevisionError(
        f"backfill needs Klaviyo's bulk profile import jobs, which start at API revision {since}; "
        f"api_revision is {settings.api_revision}",
        detail=f"set api_revision to {since} or later in {where} (for example {rev.LATEST_REVISION}); "
               "dispatch sends profiles one by one at any revision")


@dataclass
class _Job:
    """A job being packed: its entries and, per entry, what the hub keeps about it."""

    lists: tuple[str, ...]
    entries: list[dict[str, Any]] = field(default_factory=list)
    records: list[list[Any]] = field(default_factory=list)
    logs: list[RecordResult] = field(default_factory=list)
    size: int = 0

    def fits(self, size: int) -> bool:
        return (len(self.entries) < BULK_IMPORT_MAX_PROFILES
                and self.size + size + 1 <= BULK_IMPORT_MAX_BYTES - ENVELOPE_BYTES)

    def add(self, entry: dict[str, Any], size: int, record: list[Any], result: RecordResult) -> None:
        self.entries.append(entry)
        self.records.append(record)
        self.size += size + 1
        if result.logs:
            self.logs.append(result)

    def describe(self) -> dict[str, Any]:
        return {"profiles": len(self.entries), "bytes": json_size(bulk_import_body(self.entries, ())),
                "lists": list(self.lists), "hub_ids": [self.records[0][0], self.records[-1][0]],
                "first_records": [{"hub_id": r[0], "email": r[1], "profile": e}
                                  for r, e in zip(self.records[:FIRST_RECORDS], self.entries, strict=False)]}


@dataclass
class BackfillReport:
    """What a backfill did (or, for a dry run, would do)."""

    summary: RunSummary
    dry_run: bool = False
    jobs: list[dict[str, Any]] = field(default_factory=list)
    resumed: bool = False
    error: KlaviyoSyncError | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {**self.summary.to_dict(), "dry_run": self.dry_run, "resumed": self.resumed,
               "jobs": list(self.jobs)}
        if self.error is not None:
            out["error"] = self.error.to_dict()
        return out


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _parse_time(text: Any) -> datetime.datetime | None:
    try:
        value = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


class Backfill:
    """One backfill run (see the module docstring); :meth:`run` does it all."""

    def __init__(self, settings: Settings, hub: HubStore, client: KlaviyoApi | None, collections: CollectionSet, *,
                 include_linked: bool = False, dry_run: bool = False, on_progress: OnProgress | None = None,
                 poll_initial: float = 1.0, poll_max: float = 30.0) -> None:
        self.settings, self.hub, self.client = settings, hub, client
        self.dry_run = dry_run
        self.on_progress = on_progress
        self.runner = Runner(collections, functions=bind_helpers(AnswerResolver()), settings=settings.for_formulas())
        self.add = outbound_collection(collections, "Customer", "add")
        self.update = outbound_collection(collections, "Customer", "update")
        self.mapper = ProfileFlow(client, self.runner, self.add, self.update, None)  # type: ignore[arg-type]
        self.lists = ListResolver(client) if client is not None else None
        self.summary = RunSummary("backfill customers (dry run)" if dry_run else "backfill customers")
        self.report = BackfillReport(self.summary, dry_run=dry_run)
        self.state: dict[str, Any] = {"all": include_linked, "cursor": 0, "jobs": []}
        self.done = 0
        self.progress: dict[str, int] = {}
        self.finisher = None if client is None or dry_run else JobFinisher(
            client, hub, lists=self.lists, poll_initial=poll_initial, poll_max=poll_max, on_poll=self._polled)
        # Jobs are finished while later ones are packed and submitted (a few at once).
        self._finishing: dict[str, asyncio.Task[None]] = {}
        self._finish_slots = asyncio.Semaphore(FINISHING_AT_ONCE)
        self._finish_failed: BaseException | None = None

    # -- progress and counting ------------------------------------------------------------

    def _tick(self, name: str | None = None, n: int = 1, *, records: int = 0) -> None:
        if name:
            self.progress[name] = self.progress.get(name, 0) + n
        self.done += records
        if self.on_progress is not None:
            self.on_progress(self.done, dict(self.progress))

    def _polled(self, job_id: str, attrs: dict[str, Any]) -> None:
        self._tick()

    def _count(self, title: str, outcome: str, result: RecordResult | None = None) -> None:
        self.summary.count(title, outcome)
        if result is not None:
            self.summary.warnings += sum(1 for e in result.logs if e.level == "warning")
            self.summary.errors += sum(1 for e in result.logs if e.level == "error")
        self._tick(outcome, records=1)

    def _write_logs(self, result: RecordResult) -> None:
        if self.dry_run:
            return
        for e in result.logs:
            self.hub.errors.log(e.flow, e.message, level=e.level, entity=e.entity, hub_id=e.hub_id,
                                klaviyo_id=e.klaviyo_id, detail=e.detail, code=e.code)

    def _save(self) -> None:
        if not self.dry_run:
            self.hub.set_state(STATE_KEY, self.state)

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> BackfillReport:
        if not rev.supports(self.settings.api_revision, "bulk_profile_import"):
            raise revision_error(self.settings)
        if self.add is None and self.update is None:
            self.summary.note("no enabled Add or Update Klaviyo Profile FROM Hub collection: nothing to send")
            return self._finish()
        try:
            if not self.dry_run:
                await self._resume()
                for job_id in list(self.state["jobs"]):
                    self._start_finishing(job_id)
            await self._stream()
            if not self.dry_run:
                await self._all_finished()
                for job_id in list(self.state["jobs"]):  # none left, unless a task ended without finishing
                    await self._finish_job(job_id)
                self.hub.set_state(STATE_KEY, None)
        except KlaviyoSyncError as exc:
            if not (is_auth_failure(exc) or is_transient(exc)):
                raise
            self.report.error = exc
            self.summary.errors += 1
            self.summary.note("stopped: the jobs submitted so far are kept in the hub; run backfill again to resume")
        finally:
            await self._stop_finishing()  # none is left after a run that went to its end
        return self._finish()

    def _finish(self) -> BackfillReport:
        if self.dry_run:
            packed = sum(j["profiles"] for j in self.report.jobs)
            self.summary.note(f"dry run: {len(self.report.jobs)} bulk import job(s) of {packed} profile(s) would be "
                              "submitted; nothing was sent to Klaviyo or written to the hub")
        self.summary.finish(calls=calls_of(self.client) if self.client is not None else None)
        return self.report

    async def _resume(self) -> None:
        stored = self.hub.get_state(STATE_KEY)
        if stored:
            self.state = stored
            self.report.resumed = True
            self.summary.note(f"resumed an interrupted backfill after Customer {stored['cursor']} with "
                              f"{len(stored['jobs'])} job(s) still to finish"
                              + (" (every Customer, as that run was started with --all)" if stored["all"] else ""))
        pending = self.hub.get_state(PENDING_KEY)
        if pending:
            self.report.resumed = True
            job_id = await self._find_pending(pending)
            with self.hub.transaction():
                if job_id is not None:
                    self._store_job(job_id, pending["lists"], pending["records"], pending["cursor"],
                                    int(pending.get("bytes") or 0))
                self.hub.set_state(PENDING_KEY, None)

    async def _find_pending(self, pending: dict[str, Any]) -> str | None:
        """The job a killed run submitted but did not record: the newest job Klaviyo holds of the
        same size, created after the run was about to submit it, that no stored job is."""
        assert self.client is not None
        since = (_parse_time(pending["at"]) or _now()) - CLOCK_SLACK
        known = set(self.state["jobs"])
        async for page in self.client.iter_bulk_import_jobs():
            for job in page:
                attrs = job.get("attributes") or {}
                created = _parse_time(attrs.get("created_at"))
                if created is not None and created < since:
                    return None
                if attrs.get("total_count") == len(pending["records"]) and job.get("id") not in known:
                    return str(job["id"])
        return None

    def _store_job(self, job_id: str, lists: list[str], records: list[list[Any]], cursor: int, size: int) -> None:
        self.hub.set_state(JOB_KEY + job_id, {"phase": "submitted", "lists": lists, "records": records,
                                              "bytes": size})
        self.state["jobs"].append(job_id)
        self.state["cursor"] = max(int(self.state["cursor"]), cursor)
        self.hub.set_state(STATE_KEY, self.state)

    def _in_stored_jobs(self) -> set[int]:
        """Hub ids carried by stored jobs past the cursor (a job packed beside an earlier one)."""
        ids: set[int] = set()
        for job_id in self.state["jobs"]:
            stored = self.hub.get_state(JOB_KEY + job_id) or {}
            ids.update(int(r[0]) for r in stored.get("records") or [] if int(r[0]) > int(self.state["cursor"]))
        return ids

    # -- streaming and packing -------------------------------------------------------------

    async def _stream(self) -> None:
        skip = set() if self.dry_run else self._in_stored_jobs()
        open_jobs: dict[tuple[str, ...], _Job] = {}
        last = int(self.state["cursor"])
        for chunk in chunks(self.hub.iter_customers(after=last), 500):
            if self._finish_failed is not None:  # a job being finished met a failure that stops the run
                raise self._finish_failed
            links = self.hub.klaviyo_ids("Customer", [int(c["Id"]) for c in chunk])
            for customer in chunk:
                cid = int(customer["Id"])
                link = links.get(cid)
                if cid in skip or (link is not None and not self.state["all"]):
                    continue
                await self._one(customer, link, open_jobs)
                last = cid
                if not open_jobs:
                    self._advance(last)
        for key in list(open_jobs):
            await self._flush(open_jobs, key, last)
        self._advance(last)

    def _advance(self, cursor: int) -> None:
        """Every Customer up to ``cursor`` is in a stored job or done with."""
        if cursor > int(self.state["cursor"]) and not self.dry_run:
            self.state["cursor"] = cursor
            if cursor % 1000 == 0:
                self._save()

    async def _one(self, customer: dict[str, Any], link: str | None, open_jobs: dict[tuple[str, ...], _Job]) -> None:
        cid = int(customer["Id"])
        coll = self.update if link is not None and self.update is not None else self.add
        if coll is None:
            result = RecordResult("Customer", cid, self.update.title if self.update else "backfill",
                                  outcome="skipped")
            self._count(result.flow, "skipped")
            return
        result = RecordResult("Customer", cid, coll.title)
        request = self.mapper.map_customer(result, coll, customer)
        if request is None:
            self._write_logs(result)
            self._count(coll.title, result.outcome, result)
            return
        entry = bulk_import_entry(request.attributes, link)
        size = json_size(entry)
        if size > BULK_IMPORT_MAX_PROFILE_BYTES:
            result.log(coll.title, f"the mapped profile takes {size:,} bytes, more than the 100KB Klaviyo's bulk "
                       "import takes per profile: it was not sent", code=CODE_PROFILE_TOO_LARGE,
                       detail="shorten the mapped values (custom properties especially)")
            self._write_logs(result)
            self._count(coll.title, "failed", result)
            return
        key = tuple(sorted(set(request.subscribe_lists) | set(request.add_lists)))
        job = open_jobs.get(key)
        if job is not None and not job.fits(size):
            await self._flush(open_jobs, key, cid - 1)
            job = None
        if job is None:
            job = open_jobs[key] = _Job(key)
        job.add(entry, size, [cid, request.email, request.phone_number, request.consent,
                              list(request.subscribe_lists), coll.title], result)

    async def _flush(self, open_jobs: dict[tuple[str, ...], _Job], key: tuple[str, ...], last: int) -> None:
        """Submit one packed job; afterwards every Customer up to the returned cursor is taken care of."""
        job = open_jobs.pop(key)
        others = [j.records[0][0] for j in open_jobs.values() if j.records]
        cursor = min([last, *(o - 1 for o in others)])
        described = job.describe()
        if self.dry_run:
            self.report.jobs.append(described)
            self._tick("profiles packed", len(job.records), records=len(job.records))
            return
        assert self.client is not None and self.lists is not None
        list_ids = await self._list_ids(job)
        self.hub.set_state(PENDING_KEY, {"at": _now().isoformat(), "lists": list_ids, "records": job.records,
                                         "cursor": cursor, "bytes": described["bytes"]})
        try:
            answer = await self.client.start_bulk_import(job.entries, list_ids=list_ids)
        except KlaviyoApiError as exc:
            if is_auth_failure(exc) or is_transient(exc):
                raise
            self._refused(job, exc, cursor)
            return
        job_id = str(answer["id"])
        with self.hub.transaction():
            self._store_job(job_id, list_ids, job.records, cursor, described["bytes"])
            self.hub.set_state(PENDING_KEY, None)
            for result in job.logs:
                self._write_logs(result)
        self.report.jobs.append({"id": job_id, **{k: v for k, v in described.items() if k != "first_records"}})
        self._tick("jobs submitted")
        self._start_finishing(job_id)

    async def _list_ids(self, job: _Job) -> list[str]:
        assert self.lists is not None
        ids = []
        for name in job.lists:
            list_id = await self.lists.resolve(name)
            if list_id is None:
                self.hub.errors.log(job.records[0][5], f"Klaviyo list {name!r} does not exist: the job's "
                                    f"{len(job.records)} profile(s) were imported but not added to this list",
                                    code=CODE_LIST_MISSING, detail=f"Customers {job.records[0][0]} to "
                                    f"{job.records[-1][0]}: create the list in Klaviyo or change the LIST_/UCLIST_ row")
                self.summary.errors += 1
            else:
                ids.append(list_id)
        return ids

    def _refused(self, job: _Job, exc: KlaviyoApiError, cursor: int) -> None:
        """Klaviyo refused the whole job (a 4xx): each of its Customers is logged as failed."""
        with self.hub.transaction():
            for rec in job.records:
                result = RecordResult("Customer", int(rec[0]), rec[5])
                result.log_exception(rec[5], exc, detail=f"bulk import job of {len(job.records)} profile(s) "
                                     f"refused as a whole; {exc.detail or ''}".strip())
                self._write_logs(result)
                self._count(rec[5], "failed", result)
            self.state["cursor"] = max(int(self.state["cursor"]), cursor)
            self.hub.set_state(STATE_KEY, self.state)
            self.hub.set_state(PENDING_KEY, None)

    # -- finishing -------------------------------------------------------------------------------

    def _start_finishing(self, job_id: str) -> None:
        """Finish a submitted job in the background (at most FINISHING_AT_ONCE at a time)."""
        if job_id in self._finishing:
            return

        async def finish() -> None:
            async with self._finish_slots:
                if self._finish_failed is not None:
                    return
                try:
                    await self._finish_job(job_id)
                except Exception as exc:  # noqa: BLE001 - raised again by the run, which reports it
                    if self._finish_failed is None:
                        self._finish_failed = exc

        self._finishing[job_id] = asyncio.get_running_loop().create_task(finish())

    async def _all_finished(self) -> None:
        """Wait for every job being finished; raise the first failure one of them met."""
        while self._finishing:
            tasks = list(self._finishing.values())
            await asyncio.gather(*tasks)
            self._finishing = {k: t for k, t in self._finishing.items() if not t.done()}
        if self._finish_failed is not None:
            raise self._finish_failed

    async def _stop_finishing(self) -> None:
        for task in self._finishing.values():
            task.cancel()
        await asyncio.gather(*self._finishing.values(), return_exceptions=True)
        self._finishing = {}

    async def _finish_job(self, job_id: str) -> None:
        assert self.finisher is not None
        stored = self.hub.get_state(JOB_KEY + job_id)
        if stored is None:
            outcome = JobOutcome(job_id)
        else:
            outcome = await self.finisher.finish(job_id, stored)
        for title, what in outcome.counts:
            self.summary.count(title, what)
            self._tick(what, records=1)
        self.summary.warnings += outcome.warnings
        self.summary.errors += outcome.errors
        shown = next((j for j in self.report.jobs if j.get("id") == job_id), None)
        if shown is None:  # submitted by an earlier, interrupted run
            records = (stored or {}).get("records") or [[0]]
            shown = {"id": job_id, "profiles": len((stored or {}).get("records") or []),
                     "bytes": int((stored or {}).get("bytes") or 0), "lists": (stored or {}).get("lists") or [],
                     "hub_ids": [records[0][0], records[-1][0]]}
            self.report.jobs.append(shown)
        shown.update(status=outcome.status, linked=outcome.linked, updated=outcome.updated, failed=outcome.failed)
        with self.hub.transaction():
            self.state["jobs"] = [j for j in self.state["jobs"] if j != job_id]
            self.hub.set_state(STATE_KEY, self.state)
            self.hub.set_state(JOB_KEY + job_id, None)
        self._tick("jobs done")


async def backfill_customers(settings: Settings, hub: HubStore, client: KlaviyoApi | None, collections: CollectionSet,
                             *, include_linked: bool = False, dry_run: bool = False,
                             on_progress: OnProgress | None = None, poll_initial: float = 1.0,
                             poll_max: float = 30.0) -> BackfillReport:
    """Load hub Customers into Klaviyo through bulk profile import jobs (see the module docstring).

    Args:
        include_linked: every Customer, not only those without a link (``--all``).
        dry_run: pack the jobs and report them; send nothing, write nothing (``client`` may be None).
        on_progress: called with ``(records done, counts)`` as the run goes (a progress display).
        poll_initial / poll_max: the first wait between two polls of a job, and the longest.

    Raises:
        BackfillRevisionError: the revision has no bulk profile import (:func:`revision_error`).
    """
    run = Backfill(settings, hub, client, collections, include_linked=include_linked, dry_run=dry_run,
                   on_progress=on_progress, poll_initial=poll_initial, poll_max=poll_max)
    return await run.run()


__all__ = ["BackfillReport", "CODE_REVISION", "backfill_customers", "revision_error"]
