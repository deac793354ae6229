"""One Klaviyo profile into the hub: match, choose the collection, map, write, link, address.

:class:`ProfileTransfer` is the per-profile core both inbound commands share (the
poll and Manual Sync).  It does no Klaviyo I/O: it is given the profile resource.

For each profile:

1. **Match** (limitation 3: matched, not merged): the Customer linked to this
   profile id; else the Customer whose email is exactly the profile's (the hub keeps
   one Customer per email); else the Customer whose phone number (or customer
   number) is the same E.164 number.
2. **Choose**: a match goes through the enabled *Update* collection (with the matched
   Customer as ``existing``), no match through the enabled *Add* collection.  A
   disabled collection does not run: the profile is skipped.
3. **Map** with the :class:`~engine.runner.Runner`.  An invalid record (e.g. "An email
   address is required") is logged and nothing is written.
4. **Write**, all in ONE ``hub.transaction(enqueue=False)`` (what came from Klaviyo is
   not queued back to it, and a crash leaves nothing half-written): add or update the
   Customer; "Email address already exists" is the expected link (the Update
   collection is applied to that Customer instead); save the link Customer <->
   profile id; then the address child: filtered -> nothing, ok -> the Customer's
   address from Klaviyo, invalid -> logged after the commit, the Customer kept.

**One address from Klaviyo.** Klaviyo holds one address per profile (limitation 5),
so the hub remembers which Customer Address came from Klaviyo (sync state
``inbound:address:<customer id>``).  The Add child adds it unless an identical
address exists.  The Update child, when the profile's address changed, updates that
same address in place (fields no longer in Klaviyo are cleared) rather than adding a
second one; if the new address is identical to another address the Customer already
has, that one becomes the Klaviyo address and nothing is written.

**Warnings** (``catalog.CUSTOMER_LINK_WARNING``, level ``warning``): a profile whose
email matches no Customer exactly but one with other letter case, found with the hub's
case-insensitive index in either direction (a new Customer is added, as the hub's email
match is exact; the detail names both emails), and a profile linked by phone number alone
(its email was absent or matched nobody), since both may mean duplicate Customers.

Every problem is logged in the hub's error log with the flow (collection title), the
profile id and the hub id, and counted in the :class:`~engine.flows.summary.RunSummary`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine import catalog
from engine.collection import Collection, CollectionSet
from engine.errors import EmailExistsError, HubLockedError, HubRecordError, KlaviyoSyncError
from engine.flows.summary import RunSummary
from engine.formula.helpers import bind_helpers
from engine.hub import HubStore, Level
from engine.hub._db import DB_ERRORS, describe
from engine.runner import FILTERED, INVALID, OK, Outcome, Runner, flatten_jsonapi

#: Flow name in the error log for problems before a collection was chosen.
INBOUND_FLOW = "Klaviyo Profile TO Hub"
ADDRESS_FIELDS = ("Address1", "Address2", "City", "Region", "PostalCode", "Country")

#: what writing one profile to the hub may fail with, beside a refused record
_FAILURES: tuple[type[Exception], ...] = (KlaviyoSyncError, *DB_ERRORS, OSError)


@dataclass
class ProfileResult:
    """What happened to one profile.

    Attributes:
        profile_id: the Klaviyo profile id.
        outcome: created, updated, linked, skipped, invalid or failed.
        flow: the collection title that ran (None when none could).
        customer_id: the hub Customer written or matched.
        matched_by: "link", "email", "phone" or None.
        address: created, updated, skipped (filtered or identical), invalid, or None.
        messages: the error/warning messages logged for it.
        retry: the failure may pass on a later attempt (it goes on the poll's retry list).
    """

    profile_id: str
    outcome: str
    flow: str | None = None
    customer_id: int | None = None
    matched_by: str | None = None
    address: str | None = None
    messages: list[str] = field(default_factory=list)
    retry: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class HubResolver:
    """Answers the formula helpers ``get_external_id``/``get_customer_id_by_email`` from the hub."""

    def __init__(self, hub: HubStore) -> None:
        self.hub = hub

    def get_external_id(self, entity: str, hub_id: Any) -> str | None:
        try:
            link: str | None = self.hub.get_klaviyo_id(entity, int(hub_id))
        except (TypeError, ValueError):
            return None
        return link

    def get_customer_id_by_email(self, email: str) -> str | None:
        customer = self.hub.find_customer_by_email(email)
        return None if customer is None else self.hub.get_klaviyo_id("Customer", customer["Id"])


def inbound_collection(collections: CollectionSet, action: str) -> Collection | None:
    """The top-level to-hub Customer collection of ``action`` (add/update) from Klaviyo profiles.

    Found by its declared shape, not its title, so a renamed copy works; the first in
    load order wins.  Returns it even when disabled (the caller checks ``enabled``).
    """
    for c in collections:
        if (c.direction == "to_hub" and c.hub_entity == "Customer" and c.klaviyo_resource == "profile"
                and c.action == action and c.parent is None):
            return c
    return None


@dataclass(frozen=True)
class _Pending:
    """An error to log after the profile's transaction commits."""

    flow: str
    message: str
    code: str | None
    detail: str | None


class _Invalid(Exception):
    """A mapping inside the write step refused the record (rolls the transaction back)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.collection)
        self.outcome = outcome


class ProfileTransfer:
    """Transfers Klaviyo profile resources into the hub through the inbound collections.

    Args:
        hub: the hub store (:class:`~engine.hub.HubStore`).
        collections: the loaded collections (the Add/Update Customer collections and their
            address children are found in it).
        summary: counts go here (a fresh one when omitted).
        formula_settings: the plain, secret-free ``settings`` dict formulas see.
    """

    def __init__(self, hub: HubStore, collections: CollectionSet, *, summary: RunSummary | None = None,
                 formula_settings: Mapping[str, Any] | None = None) -> None:
        self.hub = hub
        self.collections = collections
        self.summary = summary or RunSummary("inbound")
        self.add = inbound_collection(collections, "add")
        self.update = inbound_collection(collections, "update")
        self.runner = Runner(collections, functions=bind_helpers(HubResolver(hub)),
                             settings=dict(formula_settings or {}))

    # -- entry point -------------------------------------------------------------------

    def transfer(self, resource: Mapping[str, Any]) -> ProfileResult:
        """Transfer one profile resource (JSON:API or already flat). Never raises for bad data.

        Raises:
            HubLockedError: the hub stayed locked past its busy timeout (nothing of the
                profile was written; the caller stops, as every write would wait the same).
        """
        record = flatten_jsonapi(resource)
        pid = str(record.get("id") or "")
        try:
            return self._transfer(record, pid)
        except HubLockedError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad profile never stops the run
            flow = self.add.title if self.add else INBOUND_FLOW
            if isinstance(exc, KlaviyoSyncError):
                message, code, detail = exc.message, exc.code, exc.detail
            else:
                message, code, detail = f"{type(exc).__name__}: {exc}", "I001", None
            self._log(flow, message, pid, None, code=code, detail=detail)
            self.summary.count(flow, "failed")
            return ProfileResult(pid, "failed", flow=flow, messages=[message], retry=True)

    # -- steps -------------------------------------------------------------------------

    def match(self, record: Mapping[str, Any], pid: str) -> tuple[dict[str, Any] | None, str | None]:
        """The Customer this profile corresponds to and how it was found (link, email, phone)."""
        hub = self.hub
        if pid:
            hub_id = hub.get_hub_id("Customer", pid)
            if hub_id is not None:
                customer = hub.get_customer(hub_id)
                if customer is not None:
                    return customer, "link"
        email = record.get("email")
        if isinstance(email, str) and email.strip():
            customer = hub.find_customer_by_email(email)
            if customer is not None:
                return customer, "email"
        phone = record.get("phone_number")
        if isinstance(phone, str) and phone.strip():
            location = record.get("location")
            country = location.get("country") if isinstance(location, Mapping) else None
            # a number without "+" is read in the profile's own country (the one e164 rule)
            customer = hub.find_customer_by_phone(phone, country if isinstance(country, str) else None)
            if customer is not None:
                return customer, "phone"
        return None, None

    def _case_variant(self, email: Any) -> dict[str, Any] | None:
        """A Customer whose email equals this one except for letter case or surrounding spaces."""
        if not isinstance(email, str) or not email.strip():
            return None
        found = self.hub.find_customers_by_email_ignoring_case(email)
        return found[0] if found else None

    def _transfer(self, record: dict[str, Any], pid: str) -> ProfileResult:
        customer, matched_by = self.match(record, pid)
        coll = self.update if customer is not None else self.add
        if coll is None or not coll.enabled:
            flow = coll.title if coll else INBOUND_FLOW
            action = "Update" if customer is not None else "Add"
            self.summary.count(flow, "skipped")
            self.summary.note(f"the inbound {action} collection is disabled or missing: matching profiles are skipped")
            return ProfileResult(pid, "skipped", flow=flow, customer_id=customer["Id"] if customer else None,
                                 matched_by=matched_by)
        result = ProfileResult(pid, "invalid", flow=coll.title, matched_by=matched_by,
                               customer_id=customer["Id"] if customer else None)
        warnings: list[tuple[str, str]] = []
        if matched_by == "phone":
            email = record.get("email")
            why = "the profile has no email address" if not email else f"no Customer has the email {email}"
            warnings.append((coll.title, f"linked to Customer {customer['Id']} by phone number only: {why}"))  # type: ignore[index]
        elif customer is None:
            variant = self._case_variant(record.get("email"))
            if variant is not None:
                warnings.append((coll.title, f"Customer {variant['Id']} has the email {variant['EmailAddress']!r}, "
                                 f"which differs from the profile's {record.get('email')!r} only in letter case "
                                 "or spaces; email matching is exact, so a new Customer is added"))

        outcome = self.runner.run(coll, record, existing=customer, record_id=pid)
        if outcome.status == FILTERED:
            self.summary.count(coll.title, "skipped")
            result.outcome = "skipped"
            return result
        if outcome.status == INVALID:
            self._log_problems(outcome, pid, result.customer_id, result)
            self.summary.count(coll.title, "invalid")
            return result

        child_counts: list[tuple[str, str]] = []
        pending: list[_Pending] = []
        try:
            with self.hub.transaction(enqueue=False):
                cid, kind, used = self._write(coll, outcome, customer, matched_by, record, pid)
                self.hub.set_link("Customer", cid, pid)
                result.address, child_counts, pending = self._children(used, cid)
        except HubLockedError:
            raise
        except _Invalid as bad:
            self._log_problems(bad.outcome, pid, result.customer_id, result)
            self.summary.count(bad.outcome.collection, "invalid")
            result.flow = bad.outcome.collection
            return result
        except HubRecordError as exc:
            # The hub refused the mapped record (a required field, a wrong type): data, not a failure.
            self._log(coll.title, exc.message, pid, result.customer_id, code=exc.code, detail=exc.detail, result=result)
            self.summary.count(coll.title, "invalid")
            return result
        except _FAILURES as exc:
            message = exc.message if isinstance(exc, KlaviyoSyncError) else describe(exc)
            code = exc.code if isinstance(exc, KlaviyoSyncError) else "I001"
            self._log(coll.title, message, pid, result.customer_id, code=code, result=result)
            self.summary.count(coll.title, "failed")
            result.outcome, result.retry = "failed", True
            return result

        result.customer_id, result.outcome = cid, kind
        result.flow = used.collection if used is not None else coll.title
        self.summary.count(result.flow, kind)
        for flow, detail in warnings:
            self._log(flow, catalog.CUSTOMER_LINK_WARNING, pid, cid, level="warning", detail=detail, result=result)
        for flow, what in child_counts:
            self.summary.count(flow, what)
        for p in pending:
            self._log(p.flow, p.message, pid, cid, code=p.code, detail=p.detail, result=result)
        return result

    def _write(self, coll: Collection, outcome: Outcome, customer: dict[str, Any] | None,
               matched_by: str | None, record: dict[str, Any], pid: str) -> tuple[int, str, Outcome | None]:
        """Add or update the Customer; returns (customer id, outcome, the Outcome whose children apply)."""
        payload = dict(outcome.payload or {})
        if customer is None:
            try:
                stored = self.hub.add_customer(payload)
                return int(stored["Id"]), "created", outcome
            except EmailExistsError as exc:
                return self._link_existing(exc.existing_id, record, pid)
        try:
            self.hub.update_customer(customer["Id"], payload)
        except EmailExistsError as exc:
            # The Update collection's (remapped) email belongs to another Customer: per the
            # seeds, the Customer the Update collection writes to is the one matched by email.
            return self._link_existing(exc.existing_id, record, pid)
        return int(customer["Id"]), "updated" if matched_by == "link" else "linked", outcome

    def _link_existing(self, customer_id: int, record: dict[str, Any], pid: str) -> tuple[int, str, Outcome | None]:
        """"Email address already exists": link that Customer and apply the Update collection to it."""
        upd = self.update
        if upd is None or not upd.enabled:
            return customer_id, "linked", None
        existing = self.hub.get_customer(customer_id)
        outcome = self.runner.run(upd, record, existing=existing, record_id=pid)
        if outcome.status == INVALID:
            raise _Invalid(outcome)
        if outcome.status != OK:
            return customer_id, "linked", None
        self.hub.update_customer(customer_id, dict(outcome.payload or {}))
        return customer_id, "linked", outcome

    # -- the address child ---------------------------------------------------------------

    def _children(self, outcome: Outcome | None,
                  customer_id: int) -> tuple[str | None, list[tuple[str, str]], list[_Pending]]:
        """Apply the parent's child outcomes inside the profile's transaction.

        Returns the address result, the (flow, outcome) counts and the problems to log
        once the transaction has committed (a bad address never undoes the Customer).
        """
        if outcome is None:
            return None, [], []
        address: str | None = None
        counts: list[tuple[str, str]] = []
        pending: list[_Pending] = []
        for child in outcome.children:
            coll = self.collections[child.collection]
            if child.status == FILTERED:
                counts.append((coll.title, "skipped"))
                address = address or "skipped"
            elif child.status == INVALID:
                counts.append((coll.title, "invalid"))
                pending.extend(_Pending(coll.title, p.message, p.code, p.format("inbound-log")) for p in child.problems)
                address = "invalid"
            elif child.status == OK and coll.hub_entity == "CustomerAddress":
                try:
                    with self.hub.transaction(enqueue=False):  # a savepoint: only the address is undone
                        address = self._write_address(coll, customer_id, dict(child.payload or {}))
                except HubRecordError as exc:
                    address = "invalid"
                    pending.append(_Pending(coll.title, exc.message, exc.code, exc.detail))
                counts.append((coll.title, address))
        return address, counts, pending

    def _write_address(self, coll: Collection, customer_id: int, payload: dict[str, Any]) -> str:
        """The Customer's one address from Klaviyo: add it, or update it in place; created/updated/skipped."""
        hub = self.hub
        key = f"inbound:address:{customer_id}"
        fields = tuple((coll.duplicate_check or {}).get("fields") or ADDRESS_FIELDS)
        tracked = hub.get_state(key)
        addresses = hub.list_addresses(customer_id)

        def same(a: Mapping[str, Any]) -> bool:
            return all((a.get(f) or "") == (payload.get(f) or "") for f in fields)

        identical = next((a for a in addresses if same(a)), None)
        if identical is not None:
            if identical["Id"] != tracked:
                hub.set_state(key, identical["Id"])
            return "skipped"
        if coll.action == "update" and any(a["Id"] == tracked for a in addresses):
            change = {f: payload.get(f) for f in ADDRESS_FIELDS}
            change.update(payload)
            hub.update_customer(customer_id, {"Addresses": [{**change, "Id": tracked}]})
            return "updated"
        stored, added = hub.add_address_if_new(customer_id, payload)
        hub.set_state(key, stored["Id"])
        return "created" if added else "skipped"

    # -- logging -------------------------------------------------------------------------

    def _log(self, flow: str, message: str, pid: str, hub_id: int | None, *, level: Level = "error",
             code: str | None = None, detail: str | None = None, result: ProfileResult | None = None) -> None:
        self.hub.errors.log(flow, message, level=level, entity="Customer", hub_id=hub_id,
                            klaviyo_id=pid or None, detail=detail, code=code)
        if level == "warning":
            self.summary.warnings += 1
        else:
            self.summary.errors += 1
        if result is not None:
            result.messages.append(message)

    def _log_problems(self, outcome: Outcome, pid: str, hub_id: int | None, result: ProfileResult) -> None:
        """Log every problem of an invalid outcome (and of its invalid children)."""
        for p in outcome.problems:
            self._log(outcome.collection, p.message, pid, hub_id, code=p.code, detail=p.format("inbound-log"),
                      result=result)
        for child in outcome.children:
            if child.status == INVALID:
                self._log_problems(child, pid, hub_id, result)


__all__ = ["INBOUND_FLOW", "HubResolver", "ProfileResult", "ProfileTransfer", "inbound_collection"]
