"""Hub Transaction -> Klaviyo Placed Order event + one Ordered Product event per line (seed 003).

Order of work for one Transaction:

1. **Generate Events** is FALSE -> nothing is sent (outcome ``skipped``; the run
   summary says so).
2. **Resolve the profile** before mapping (formulas are synchronous, lookups are
   not): the Customer's external-id link; else a Klaviyo profile with the
   transaction's email (one ``GET``); else the Customer is **transferred first**
   through the profile flow.  If that transfer fails: "The customer needed for
   this order could not be created, which prevented the order from
   transferring." and no event.  With no Customer to transfer at all: "Profile
   could not be resolved".
3. **Map** through "Add Klaviyo Placed Order Event FROM Hub" with a resolver that
   answers ``get_external_id`` / ``get_customer_id_by_email`` from step 2, the hub
   Customer beside the Transaction as ``Customer``.  No event unless ProfileId,
   EventProperties, MetricName and UniqueId all resolve (seed 003), a deleted row
   included: the catalog's "The Klaviyo order event could not be created ..." (the
   error log adds the Placed Order article's wording to the detail).
4. **Versions** (seed 000 limitation 2 with seed 003's UniqueId): the hub keeps every version of
   the order it sent (``transaction_versions``: version, unique id, payload digest, profile,
   complete, sent at).  The digest covers what the events say (metric, properties, value, time,
   mapped unique ids; not the profile).  The same digest as the last complete version ->
   ``unchanged``: no call at all (the profile comes from the Customer's link or the last
   version's profile, so nothing needs resolving).  A different digest -> version n+1: a new
   Placed Order event and new Ordered Product events for every line, under ``<id>-v<n>``
   (version 1 keeps the mapped ids, the Transaction Id and ``<Transaction Id>-<Line Id>``, as
   before versions were kept), so Klaviyo keeps both and the newest is the current record.  A
   version whose line events were not all accepted is sent again under the same ids while the
   content is the same (a retry records nothing twice).
5. **Send** the Placed Order event, then the Ordered Product events (one per line, concurrently).
6. The (versioned) unique ids are saved as the Transaction's and lines' external ids: Klaviyo
   answers ``POST /api/events`` with 202 and no body, and ``GET /api/events`` cannot filter on
   the unique id, so Klaviyo's own event id is not known (docs/outbound.md, "Transaction
   external id").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine import catalog
from engine.collection import Collection
from engine.errors import KlaviyoSyncError, PayloadError
from engine.flows._outbound_records import (
    CODE_CUSTOMER_PREREQ,
    CODE_EVENT_PAYLOAD,
    CODE_PROFILE_UNRESOLVED,
    RecordResult,
)
from engine.hub import HubStore
from engine.klaviyo import KlaviyoApi
from engine.payloads import EventRequest, event_request, strip_nulls
from engine.runner import OK, Outcome, Runner
from engine.vocab import REQUIRED_EVENT_KEYS


class AnswerResolver:
    """The Runner's :class:`~engine.formula.helpers.Resolver`: answers only from what the flow resolved.

    The flow calls :meth:`set` with one record's answers and maps that record at once
    (no ``await`` in between), so concurrent records never see each other's answers.
    """

    def __init__(self) -> None:
        self.links: dict[tuple[str, str], str] = {}
        self.emails: dict[str, str] = {}

    def set(self, links: dict[tuple[str, str], str], emails: dict[str, str]) -> None:
        self.links, self.emails = links, emails

    def get_external_id(self, entity: str, hub_id: Any) -> str | None:
        return self.links.get((entity, str(hub_id)))

    def get_customer_id_by_email(self, email: str) -> str | None:
        return self.emails.get(email)


EnsureCustomer = Callable[[dict[str, Any]], Awaitable[tuple[RecordResult, bool]]]


def log_problems(result: RecordResult, flow: str, problems: list[KlaviyoSyncError], *, entity: str | None = None,
                 hub_id: int | None = None) -> None:
    """Log each mapping problem with its catalog text, code and where it happened."""
    result.log_problems(flow, problems, entity=entity, hub_id=hub_id)


#: The event values seed 003 requires: "A transaction will not produce a Placed Order event unless
#: the ProfileId, EventProperties, MetricName, and UniqueId mappings all resolve to values."  The
#: Ordered Product collection requires the same four.  Checked on the mapped payload, so a row that
#: was deleted from a collection counts as missing just like a row that resolved to nothing.
REQUIRED_EVENT_VALUES: tuple[str, ...] = REQUIRED_EVENT_KEYS
#: The mapper's code for a required value that is missing (the same code when the row is gone).
CODE_REQUIRED_MISSING = "M002"


def missing_event_values(payload: Mapping[str, Any]) -> list[str]:
    """The required event values the payload lacks: absent, None or blank; EventProperties also
    when it holds no value at all (every entry None)."""
    missing = []
    for key in REQUIRED_EVENT_VALUES:
        value = payload.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            missing.append(key)
        elif key == "EventProperties" and isinstance(value, Mapping) and not strip_nulls(value):
            missing.append(key)
    return missing


def missing_detail(missing: list[str], collection: Collection | None) -> str:
    """The detail of a missing-value entry: which values, and the collection file when known."""
    where = f" (collection {collection.file})" if collection is not None and collection.file else ""
    names = ", ".join(missing)
    return f"{names} did not resolve to a value: no event was sent{where}"


def with_customer(tx: Mapping[str, Any], customer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Transaction as the collections map it: its fields plus ``Customer``, its hub Customer
    (or None), so a formula can fall back to the Customer's values (the shipped EventProperties
    takes the Customer's email when the Transaction has none)."""
    return {**tx, "Customer": dict(customer) if customer is not None else None}


def _line_id(outcome: Outcome) -> int | None:
    tail = (outcome.record_id or "").rsplit("/", 1)[-1]
    try:
        return int(tail)
    except ValueError:
        return None


@dataclass
class LinePlan:
    """One mapped line: the event to send, or why there is none."""

    child: Outcome
    line_id: int | None
    request: EventRequest | None = None
    missing: list[str] = field(default_factory=list)
    error: str | None = None

    def digest_part(self) -> dict[str, Any]:
        if self.request is not None:
            return _event_part(self.request)
        return {"line": self.child.record_id, "status": self.child.status, "source": self.child.source}


@dataclass
class OrderPlan:
    """A mapped Transaction: its Placed Order event and its lines, before any version is applied."""

    parent: EventRequest
    lines: list[LinePlan]

    def digest(self) -> str:
        """The payload digest the hub keeps per sent version: the events' metric, properties, value,
        time and (unversioned) unique id, lines in order of their unique id. The profile is not part
        of it: the same order attributed anew is still the same order."""
        lines = sorted((p.digest_part() for p in self.lines), key=lambda d: dumps(d))
        return hashlib.sha256(dumps({"order": _event_part(self.parent), "lines": lines}).encode()).hexdigest()


def _event_part(request: EventRequest) -> dict[str, Any]:
    return {"metric": request.metric_name, "properties": request.properties, "value": request.value,
            "time": request.time, "unique_id": request.unique_id}


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def versioned(unique_id: str, version: int) -> str:
    """The unique id of one version of an order's event: version 1 keeps the mapped id (the
    Transaction Id; ``<Transaction Id>-<Line Id>``), later versions append ``-v<n>``."""
    return unique_id if version <= 1 else f"{unique_id}-v{version}"


def plan_line(child: Outcome) -> LinePlan:
    """A line's event request, or why it has none (no I/O, nothing logged)."""
    plan = LinePlan(child, _line_id(child))
    if child.status != OK:
        return plan
    plan.missing = missing_event_values(child.payload or {})
    if plan.missing:
        return plan
    try:
        plan.request = event_request(child.payload or {})
    except PayloadError as exc:
        plan.error = exc.message
    return plan


class OrderFlow:
    """Sends hub Transactions as order events (see the module docstring).

    Args:
        client: the Klaviyo client.
        runner: a runner whose helper functions are bound to ``resolver``.
        resolver: the runner's resolver.
        placed: the enabled "Add Klaviyo Placed Order Event FROM Hub" collection.
        hub: read access to links and Customers.
        ensure_customer: transfers a Customer (memoised per batch by the dispatcher);
            returns its result and whether this caller owns it (commits it).
        generate_events: the subscription's Generate Events setting.
    """

    # Plain attribute assignments: alike the formula and klaviyo/_transport.py constructors in shape only.
    def __init__(self, client: KlaviyoApi, runner: Runner, resolver: AnswerResolver, placed: Collection,
                 hub: HubStore, ensure_customer: EnsureCustomer, generate_events: bool) -> None:
        self.client = client
        self.runner = runner
        self.resolver = resolver
        self.placed = placed
        self.hub = hub
        self.ensure_customer = ensure_customer
        self.generate_events = generate_events

    async def send(self, tx: dict[str, Any]) -> RecordResult:
        """Transfer one Transaction. Never raises (Klaviyo, data or unexpected problems): see the result."""
        result = RecordResult("Transaction", int(tx["Id"]), self.placed.title)
        if not self.generate_events:
            result.outcome = "skipped"
            result.note("Generate Events is FALSE: no event sent")
            return result
        try:
            cid = tx.get("CustomerId")
            customer = self.hub.get_customer(int(cid)) if cid is not None else None
            latest = self.hub.latest_transaction_version(result.hub_id)
            if latest is not None and self._unchanged_without_calls(result, tx, customer, latest):
                return result
            resolved = await self._resolve_profile(result, tx, customer)
            if resolved is None:
                return result
            self.resolver.set(*resolved)
            outcome = self.runner.run(self.placed, with_customer(tx, customer), record_id=str(result.hub_id))
            if outcome.status != OK:
                result.outcome = "invalid" if outcome.status == "invalid" else "skipped"
                log_problems(result, self.placed.title, outcome.problems)
                return result
            await self._send_events(result, outcome, tx, latest)
        except KlaviyoSyncError as exc:
            result.outcome = "failed"
            result.log_exception(self.placed.title, exc)
        except Exception as exc:  # noqa: BLE001 - an answer of the wrong shape fails this record only
            result.outcome = "failed"
            result.log_unexpected(self.placed.title, exc)
        return result

    def _plan(self, outcome: Outcome) -> OrderPlan | list[str] | PayloadError:
        """The order's events (no I/O), or the missing required values, or the payload's problem."""
        missing = missing_event_values(outcome.payload or {})
        if missing:
            return missing
        try:
            parent = event_request(outcome.payload or {})
        except PayloadError as exc:
            return exc
        return OrderPlan(parent, [plan_line(c) for c in outcome.children])

    def _unchanged_without_calls(self, result: RecordResult, tx: dict[str, Any], customer: dict[str, Any] | None,
                                 latest: dict[str, Any]) -> bool:
        """Whether the order is the one last sent, decided without calling Klaviyo (then ``result``
        says ``unchanged``).  The profile comes from the Customer's link, else the profile the last
        version went to; when neither is known the usual resolution runs first."""
        if not latest["Complete"]:
            return False
        cid, email = tx.get("CustomerId"), tx.get("EmailAddress")
        link = self.hub.get_klaviyo_id("Customer", int(cid)) if cid is not None else None
        profile = link or latest["ProfileId"]
        if profile is None:
            return False
        self.resolver.set({("Customer", str(cid)): profile} if cid is not None else {},
                          {email: profile} if isinstance(email, str) and email.strip() else {})
        outcome = self.runner.run(self.placed, with_customer(tx, customer), record_id=str(result.hub_id))
        plan = self._plan(outcome) if outcome.status == OK else None
        if not isinstance(plan, OrderPlan):
            return False
        return self._same_as_sent(result, tx, plan, latest)

    def _same_as_sent(self, result: RecordResult, tx: dict[str, Any], plan: OrderPlan,
                      latest: dict[str, Any]) -> bool:
        """True (and ``result`` is ``unchanged``) when ``plan`` is what the complete version ``latest`` sent."""
        digest = plan.digest()
        if not latest["Complete"]:
            return False
        if latest["Digest"] is None:
            # Sent before the hub kept versions: unchanged unless the Transaction changed since.
            if str(tx.get("UpdatedAt") or "") > str(latest["SentAt"]):
                return False
            result.versions.append({"transaction_id": result.hub_id, "version": latest["Version"],
                                    "unique_id": latest["UniqueId"], "digest": digest,
                                    "profile_id": plan.parent.profile_id, "complete": True,
                                    "sent_at": latest["SentAt"]})
        elif latest["Digest"] != digest:
            return False
        result.outcome, result.klaviyo_id = "unchanged", latest["UniqueId"]
        result.note(f"unchanged since version {latest['Version']} (event {latest['UniqueId']}, sent "
                    f"{latest['SentAt']}): nothing sent")
        result.counts.extend((p.child.collection, "unchanged") for p in plan.lines)
        return True

    async def _resolve_profile(self, result: RecordResult, tx: dict[str, Any], customer: dict[str, Any] | None
                               ) -> tuple[dict[tuple[str, str], str], dict[str, str]] | None:
        """Links and email answers for the ProfileId formula, or None (logged) when unresolvable."""
        cid, email = tx.get("CustomerId"), tx.get("EmailAddress")
        if cid is not None:
            link = self.hub.get_klaviyo_id("Customer", int(cid))
            if link:
                result.note(f"profile {link} from Customer {cid}'s link")
                return {("Customer", str(cid)): link}, {}
        if isinstance(email, str) and email.strip():
            found = await self.client.find_profiles(email=email)
            if found:
                pid = str(found[0]["id"])
                result.note(f"Customer not linked; profile {pid} found by email")
                return {}, {email: pid}
        if customer is None:
            result.outcome = "failed"
            why = "the Transaction has no CustomerId" if cid is None else f"Customer {cid} is not in the hub"
            result.log(self.placed.title, catalog.PROFILE_NOT_RESOLVED, code=CODE_PROFILE_UNRESOLVED,
                       detail=f"{why}, and no Klaviyo profile has the email {email!r}")
            return None
        prereq, owned = await self.ensure_customer(customer)
        if owned:
            result.prerequisites.append(prereq)
        if prereq.klaviyo_id is None or prereq.outcome in ("failed", "invalid", "skipped"):
            result.outcome = "failed"
            result.transient = prereq.transient
            result.auth_error = prereq.stopped_by
            first = next((e.message for e in prereq.logs if e.level == "error"), prereq.decision or prereq.outcome)
            result.log(self.placed.title, catalog.ORDER_CUSTOMER_NOT_CREATED, code=CODE_CUSTOMER_PREREQ,
                       detail=f"Customer {cid} ({prereq.flow}): {first}")
            return None
        result.note(f"Customer {cid} transferred first ({prereq.outcome} profile {prereq.klaviyo_id})")
        return {("Customer", str(cid)): prereq.klaviyo_id}, {}

    async def _send_events(self, result: RecordResult, outcome: Outcome, tx: dict[str, Any],
                           latest: dict[str, Any] | None) -> None:
        message = self.placed.required_message or catalog.ORDER_EVENT_NOT_CREATED
        plan = self._plan(outcome)
        if isinstance(plan, list):
            result.outcome = "invalid"
            result.log(self.placed.title, message, code=CODE_REQUIRED_MISSING, detail=missing_detail(plan, self.placed))
            return
        if isinstance(plan, PayloadError):
            result.outcome = "invalid"
            result.log(self.placed.title, message, code=CODE_EVENT_PAYLOAD, detail=plan.message)
            return
        digest = plan.digest()
        if latest is None:
            version = 1
        elif latest["Digest"] == digest and not latest["Complete"]:
            version = latest["Version"]  # the same content, some lines not yet accepted: the same ids again
        elif self._same_as_sent(result, tx, plan, latest):
            return
        else:
            version = latest["Version"] + 1
        parent = replace(plan.parent, unique_id=versioned(plan.parent.unique_id, version))
        await self.client.create_event(**parent.client_kwargs())
        result.outcome, result.klaviyo_id = "created", parent.unique_id
        result.links.append(("Transaction", result.hub_id, parent.unique_id))
        result.note(f"{parent.metric_name} event {parent.unique_id} on profile {parent.profile_id}"
                    + (f" (version {version}: the order changed since version {latest['Version']})"
                       if latest is not None and version > latest["Version"] else ""))
        sent = await asyncio.gather(*(self._send_line(result, p, version) for p in plan.lines))
        if plan.lines:
            result.note(f"{sum(1 for s in sent if s is True)}/{len(plan.lines)} line event(s) sent")
        result.versions.append({"transaction_id": result.hub_id, "version": version, "unique_id": parent.unique_id,
                                "digest": digest, "profile_id": parent.profile_id,
                                "complete": all(s is not None for s in sent)})

    async def _send_line(self, result: RecordResult, plan: LinePlan, version: int) -> bool | None:
        """Send one line's event: True when sent, False when it has none (logged), None when Klaviyo
        did not take it (the version stays incomplete, so a re-send tries the same ids again)."""
        child, line_id = plan.child, plan.line_id
        flow = child.collection
        if child.status != OK:
            if child.status == "invalid":
                log_problems(result, flow, child.problems, entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "invalid" if child.status == "invalid" else "skipped"))
            return False
        if plan.missing:
            coll = self.runner.collections.collections.get(flow)
            result.log(flow, catalog.PRODUCT_EVENT_NOT_CREATED, code=CODE_REQUIRED_MISSING,
                       detail=missing_detail(plan.missing, coll), entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "invalid"))
            return False
        if plan.request is None:
            result.log(flow, catalog.PRODUCT_EVENT_NOT_CREATED, code=CODE_EVENT_PAYLOAD, detail=plan.error,
                       entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "invalid"))
            return False
        line = replace(plan.request, unique_id=versioned(plan.request.unique_id, version))
        try:
            await self.client.create_event(**line.client_kwargs())
        except KlaviyoSyncError as exc:
            result.log_exception(flow, exc, entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "failed"))
            return None
        except Exception as exc:  # noqa: BLE001 - an answer of the wrong shape fails this line only
            result.log_unexpected(flow, exc, entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "failed"))
            return None
        if line_id is not None:
            result.links.append(("TransactionLine", line_id, line.unique_id))
        result.counts.append((flow, "created"))
        return True


__all__ = ["AnswerResolver", "LinePlan", "OrderFlow", "OrderPlan", "log_problems", "missing_event_values",
           "plan_line", "versioned", "with_customer"]
