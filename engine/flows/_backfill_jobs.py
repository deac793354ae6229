"""A submitted bulk profile import job, seen through to the end: poll, link, map errors back, consent.

Each job the backfill submits is kept in the hub (``sync_state`` key
``backfill:customers:job:<job id>``) with the hub id, email, phone number and consent
wish of every profile it carries, *in the order sent*, so that a later process can
finish it:

1. **poll** ``GET /api/profile-bulk-import-jobs/<id>`` with backoff until the job is
   ``complete`` (or ``cancelled``);
2. **link** each Customer to the profile Klaviyo reports in the job's ``profiles``
   relationship, matched by email (ignoring letter case, as Klaviyo does);
3. **map each import error back** to its record by the error's pointer
   (``/data/attributes/profiles/data/<index>``) and log it with "Error calling Klaviyo"
   and Klaviyo's detail;
4. write the links and log entries **in one hub transaction** that also moves the job
   to ``linked``; a process killed before that commit redoes steps 1-3 (reads only);
5. send **consent** (``SubscribeProfile``) through Klaviyo's subscribe / unsubscribe jobs,
   batched as dispatch does (:class:`~engine.flows._outbound_consent.ConsentBatch`),
   then forget the job.  A process killed during step 5 sends the consent again, which
   changes nothing in Klaviyo.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine import catalog
from engine.flows._outbound_consent import ConsentBatch, ListResolver
from engine.flows._outbound_records import CODE_LINK_WARNING, RecordResult
from engine.hub import HubStore
from engine.klaviyo import KlaviyoApi
from engine.klaviyo.client import EMAIL_LOOKUP_BATCH
from engine.payloads import SUBSCRIBE, ProfileRequest

JOB_KEY = "backfill:customers:job:"
#: the backfill's own log codes
CODE_NOT_IMPORTED = "B001"     # the job reported neither a profile nor an import error for the record
CODE_PROFILE_TOO_LARGE = "B002"  # a mapped profile over Klaviyo's 100 KB per profile: not sent
CODE_JOB_CANCELLED = "B003"    # Klaviyo cancelled the job
_POINTER = re.compile(r"^/data/attributes/profiles/data/(\d+)(/.*)?$")
DONE = ("complete", "cancelled", "failed")
#: email lookups (tier L) one job's read-back keeps in flight beside its relationship pages
EMAIL_LOOKUPS_AT_ONCE = 4

# One record of a job, as stored: [hub id, email, phone number, consent, LIST_ names, collection title]
Stored = list[Any]


@dataclass
class JobOutcome:
    """What finishing one job produced (counted by the caller)."""

    job_id: str
    status: str = "complete"
    linked: int = 0
    updated: int = 0
    failed: int = 0
    counts: list[tuple[str, str]] = field(default_factory=list)  # (collection title, outcome) per record
    warnings: int = 0
    errors: int = 0


def _email_key(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


class JobFinisher:
    """Sees submitted jobs through to the end (module docstring).

    Args:
        client / hub: Klaviyo and the hub.
        lists: list names -> ids, shared with the run (one lookup per name).
        poll_initial / poll_max: seconds between two polls of a job: the first wait, and the
            ceiling the wait grows to (times 1.5 each poll).
        on_poll: called with ``(job id, job attributes)`` after each poll (a progress display).
    """

    def __init__(self, client: KlaviyoApi, hub: HubStore, *, lists: ListResolver | None = None,
                 poll_initial: float = 1.0, poll_max: float = 30.0,
                 on_poll: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.client, self.hub = client, hub
        self.poll_initial, self.poll_max = poll_initial, poll_max
        self.on_poll = on_poll
        self.lists = lists or ListResolver(client)

    async def wait(self, job_id: str) -> dict[str, Any]:
        """Poll the job until Klaviyo is done with it; returns its attributes."""
        delay = self.poll_initial
        while True:
            attrs = dict((await self.client.get_bulk_import_job(job_id)).get("attributes") or {})
            if self.on_poll is not None:
                self.on_poll(job_id, attrs)
            if attrs.get("status") in DONE:
                return attrs
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.poll_max)

    async def finish(self, job_id: str, stored: dict[str, Any]) -> JobOutcome:
        """Steps 1-5 of the module docstring for one job (steps 1-4 skipped when already linked)."""
        outcome = JobOutcome(job_id)
        records: list[Stored] = stored["records"]
        if stored.get("phase") == "submitted":
            await self._link(job_id, records, outcome)
        await self._consent(records, outcome)
        return outcome

    def _write_logs(self, results: list[RecordResult], outcome: JobOutcome) -> None:
        for r in results:
            for e in r.logs:
                self.hub.errors.log(e.flow, e.message, level=e.level, entity=e.entity, hub_id=e.hub_id,
                                    klaviyo_id=e.klaviyo_id, detail=e.detail, code=e.code)
                outcome.warnings += e.level == "warning"
                outcome.errors += e.level == "error"

    async def _link(self, job_id: str, records: list[Stored], outcome: JobOutcome) -> None:
        attrs = await self.wait(job_id)
        outcome.status = str(attrs.get("status"))
        by_email: dict[str, list[int]] = defaultdict(list)
        for index, rec in enumerate(records):
            key = _email_key(rec[1])
            if key:
                by_email[key].append(index)
        failures: dict[int, list[dict[str, Any]]] = defaultdict(list)
        async for page in self.client.iter_bulk_import_errors(job_id):
            for err in page:
                eattrs = err.get("attributes") or {}
                pointer = str((eattrs.get("source") or {}).get("pointer") or "")
                m = _POINTER.match(pointer)
                if m and int(m.group(1)) < len(records):
                    failures[int(m.group(1))].append(eattrs)
        found = await self._profiles(job_id, records, by_email, failures)
        already = self.hub.klaviyo_ids("Customer", [int(r[0]) for r in records])
        results = [self._result(job_id, index, rec, found.get(index), failures.get(index, []), already,
                                outcome) for index, rec in enumerate(records)]
        with self.hub.transaction():
            self._write_logs(results, outcome)
            for r in results:
                for entity, hub_id, pid in r.links:
                    self.hub.set_link(entity, hub_id, pid)
            stored = self.hub.get_state(JOB_KEY + job_id) or {}
            self.hub.set_state(JOB_KEY + job_id, {**stored, "phase": "linked"})

    async def _profiles(self, job_id: str, records: list[Stored], by_email: dict[str, list[int]],
                        failures: dict[int, list[dict[str, Any]]]) -> dict[int, str]:
        """The profile of each record (by its index in the job), read two ways at once.

        The job's ``profiles`` relationship is read page by page (tier M, shared with the job
        submissions and polls: 150 pages a minute at most); meanwhile the records' emails, from
        the job's last record backwards, are looked up a hundred at a time with
        ``GET /api/profiles?filter=any(email,[...])`` (tier L: 700 a minute).  Both stop once
        every record that has an email and no import error has its profile; a record without an
        email is found by the relationship alone, which is then read to its end.
        """
        found: dict[int, str] = {}
        wanted = {i for i, rec in enumerate(records) if _email_key(rec[1])} - set(failures)
        phone_only = any(not _email_key(rec[1]) for rec in records)

        def complete() -> bool:
            return not phone_only and wanted <= found.keys()

        async def relationship() -> None:
            async for page in self.client.iter_bulk_import_job_profiles(job_id):
                for p in page:
                    for index in by_email.get(_email_key((p.get("attributes") or {}).get("email")) or "", []):
                        found[index] = str(p["id"])
                if complete():
                    return

        async def emails() -> None:
            pending = sorted(wanted, reverse=True)
            chunks = [pending[k:k + EMAIL_LOOKUP_BATCH] for k in range(0, len(pending), EMAIL_LOOKUP_BATCH)]
            lanes = asyncio.Semaphore(EMAIL_LOOKUPS_AT_ONCE)

            async def look(chunk: list[int]) -> None:
                async with lanes:
                    todo = [i for i in chunk if i not in found]
                    if not todo or complete():
                        return
                    ids = await self.client.find_profile_ids_by_email([str(records[i][1]) for i in todo])
                    for i in todo:
                        pid = ids.get(_email_key(records[i][1]) or "")
                        if pid is not None:
                            found.setdefault(i, pid)

            await asyncio.gather(*(look(c) for c in chunks))

        reader = asyncio.ensure_future(relationship())
        looker = asyncio.ensure_future(emails())
        try:
            await reader  # the relationship is authoritative: its end means nothing more will be found
        finally:
            looker.cancel()
            await asyncio.gather(looker, return_exceptions=True)
        return found

    def _result(self, job_id: str, index: int, rec: Stored, pid: str | None, errors: list[dict[str, Any]],
                already: dict[int, str], outcome: JobOutcome) -> RecordResult:
        hub_id, title = int(rec[0]), str(rec[5])
        result = RecordResult("Customer", hub_id, title)
        where = f"bulk import job {job_id}, profile {index}"
        if pid is not None:
            holder = self.hub.get_hub_id("Customer", pid)
            if holder not in (None, hub_id):
                result.outcome = "skipped"
                result.log(title, catalog.PROFILE_LINK_WARNING, level="warning", code=CODE_LINK_WARNING,
                           klaviyo_id=pid, detail=f"{where}: Klaviyo profile {pid} holds this Customer's email "
                           f"and is linked to Customer {holder}; the link stands. Reconcile the two Customers.")
            else:
                result.outcome = "updated" if already.get(hub_id) == pid else "linked"
                result.links.append(("Customer", hub_id, pid))
        for e in errors:
            pointer = (e.get("source") or {}).get("pointer")
            # the row of a Klaviyo failure, not an exception: the code is the one such rows carry (data)
            result.log(title, f"{catalog.ERROR_CALLING_KLAVIYO} ({where}): {e.get('detail') or e.get('title')}"
                       + (f" [source: {pointer}]" if pointer else ""), code="K001",
                       detail=f"Klaviyo code {e.get('code')}: {e.get('title')}")
        if pid is None:
            result.outcome = "failed"
            if outcome.status != "complete":
                result.log(title, f"Klaviyo ended bulk import job {job_id} as {outcome.status!r}: the profile was "
                           "not imported", code=CODE_JOB_CANCELLED, detail=where)
            elif not errors:
                result.log(title, f"bulk import job {job_id} reported neither a profile nor an import error for "
                           "this Customer", code=CODE_NOT_IMPORTED, detail=f"{where}; email {rec[1]!r}")
        outcome.counts.append((title, result.outcome))
        if result.outcome == "linked":
            outcome.linked += 1
        elif result.outcome == "updated":
            outcome.updated += 1
        elif result.outcome == "failed":
            outcome.failed += 1
        return result

    async def _consent(self, records: list[Stored], outcome: JobOutcome) -> None:
        """``SubscribeProfile`` of every linked record, through subscribe / unsubscribe jobs.

        ``LIST_`` lists then get consent (subscribe jobs); their membership, and ``UCLIST_``'s, came
        with the import job's lists.
        """
        batch = ConsentBatch(self.client, self.lists, subscribe_batch=self.client.subscribe_limit())
        links = self.hub.klaviyo_ids("Customer", [int(r[0]) for r in records])
        results: list[RecordResult] = []
        for hub_id, email, phone, consent, names, title in records:
            pid = links.get(int(hub_id))
            if pid is None or consent is None:
                continue
            attrs = {k: v for k, v in (("email", email), ("phone_number", phone)) if v}
            request = ProfileRequest(attrs, tuple(names) if consent == SUBSCRIBE else (), (), consent)
            result = RecordResult("Customer", int(hub_id), title, outcome="linked")
            await batch.add(result, title, pid, request)
            results.append(result)
        await batch.flush()
        if batch.auth_error is not None:
            raise batch.auth_error
        with self.hub.transaction():
            self._write_logs(results, outcome)


__all__ = ["CODE_NOT_IMPORTED", "CODE_PROFILE_TOO_LARGE", "JOB_KEY", "JobFinisher", "JobOutcome"]
