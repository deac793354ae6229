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
   answers ``get_external_id`` / ``get_customer_id_by_email`` from step 2.
   Missing required values -> the collection's ``required_message`` ("Could not
   Create Transaction: Mapping field is missing / not complete").
4. **Send** the Placed Order event, then the Ordered Product events (one per
   line, concurrently).  Unique ids come from the collections (Transaction Id;
   ``<Transaction Id>-<Line Id>``), so a re-send -- a retry, a crash and rerun, a
   manual push -- records nothing twice (limitation 2).
5. The unique ids are saved as the Transaction's and lines' external ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine import catalog
from engine.collection import Collection
from engine.errors import KlaviyoSyncError
from engine.flows._outbound_records import (
    CODE_CUSTOMER_PREREQ,
    CODE_EVENT_PAYLOAD,
    CODE_PROFILE_UNRESOLVED,
    RecordResult,
)
from engine.klaviyo import KlaviyoClient
from engine.mapper import Problem
from engine.payloads import PayloadError, event_request, strip_nulls
from engine.runner import OK, Outcome, Runner


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


def log_problems(result: RecordResult, flow: str, problems: list[Problem], *, entity: str | None = None,
                 hub_id: int | None = None) -> None:
    """Log each mapping problem with its catalog text, code and where it happened."""
    result.log_problems(flow, problems, entity=entity, hub_id=hub_id)


#: The event values seed 003 requires: "A transaction will not produce a Placed Order event unless
#: the ProfileId, EventProperties, MetricName, and UniqueId mappings all resolve to values."  The
#: Ordered Product collection requires the same four.  Checked on the mapped payload, so a row that
#: was deleted from a collection counts as missing just like a row that resolved to nothing.
REQUIRED_EVENT_VALUES = ("ProfileId", "EventProperties", "MetricName", "UniqueId")
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

    def __init__(self, client: KlaviyoClient, runner: Runner, resolver: AnswerResolver, placed: Collection,
                 hub: Any, ensure_customer: EnsureCustomer, generate_events: bool) -> None:
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
            resolved = await self._resolve_profile(result, tx, customer)
            if resolved is None:
                return result
            self.resolver.set(*resolved)
            outcome = self.runner.run(self.placed, with_customer(tx, customer), record_id=str(result.hub_id))
            if outcome.status != OK:
                result.outcome = "invalid" if outcome.status == "invalid" else "skipped"
                log_problems(result, self.placed.title, outcome.problems)
                return result
            await self._send_events(result, outcome)
        except KlaviyoSyncError as exc:
            result.outcome = "failed"
            result.log_exception(self.placed.title, exc)
        except Exception as exc:  # noqa: BLE001 - an answer of the wrong shape fails this record only
            result.outcome = "failed"
            result.log_unexpected(self.placed.title, exc)
        return result

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

    async def _send_events(self, result: RecordResult, outcome: Outcome) -> None:
        message = self.placed.required_message or catalog.ORDER_EVENT_NOT_CREATED
        missing = missing_event_values(outcome.payload or {})
        if missing:
            result.outcome = "invalid"
            result.log(self.placed.title, message, code=CODE_REQUIRED_MISSING,
                       detail=missing_detail(missing, self.placed))
            return
        try:
            parent = event_request(outcome.payload or {})
        except PayloadError as exc:
            result.outcome = "invalid"
            result.log(self.placed.title, message, code=CODE_EVENT_PAYLOAD, detail=str(exc))
            return
        await self.client.create_event(**parent.client_kwargs())
        result.outcome, result.klaviyo_id = "created", parent.unique_id
        result.links.append(("Transaction", result.hub_id, parent.unique_id))
        result.note(f"{parent.metric_name} event {parent.unique_id} on profile {parent.profile_id}")
        children = [c for c in outcome.children]
        sent = await asyncio.gather(*(self._send_line(result, c) for c in children))
        if children:
            result.note(f"{sum(sent)}/{len(children)} line event(s) sent")

    async def _send_line(self, result: RecordResult, child: Outcome) -> bool:
        line_id = _line_id(child)
        flow = child.collection
        if child.status != OK:
            if child.status == "invalid":
                log_problems(result, flow, child.problems, entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "invalid" if child.status == "invalid" else "skipped"))
            return False
        missing = missing_event_values(child.payload or {})
        if missing:
            coll = self.runner.collections.collections.get(flow)
            result.log(flow, catalog.PRODUCT_EVENT_NOT_CREATED, code=CODE_REQUIRED_MISSING,
                       detail=missing_detail(missing, coll), entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "invalid"))
            return False
        try:
            line = event_request(child.payload or {})
        except PayloadError as exc:
            result.log(flow, catalog.PRODUCT_EVENT_NOT_CREATED, code=CODE_EVENT_PAYLOAD, detail=str(exc),
                       entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "invalid"))
            return False
        try:
            await self.client.create_event(**line.client_kwargs())
        except KlaviyoSyncError as exc:
            result.log_exception(flow, exc, entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "failed"))
            return False
        except Exception as exc:  # noqa: BLE001 - an answer of the wrong shape fails this line only
            result.log_unexpected(flow, exc, entity="TransactionLine", hub_id=line_id)
            result.counts.append((flow, "failed"))
            return False
        if line_id is not None:
            result.links.append(("TransactionLine", line_id, line.unique_id))
        result.counts.append((flow, "created"))
        return True


__all__ = ["AnswerResolver", "OrderFlow", "log_problems"]
