"""Hub Customer -> Klaviyo profile: match, write partially, link (seed 000 limitations 3, 5, 6).

Matching, in the seeds' order: the external-id **link**, then **email**, then
**phone** (E.164).  It costs as few calls as the revision allows:

* **Linked** Customer: one ``PATCH /api/profiles/<id>`` with the *Update* collection's
  payload.  A 404 (the profile was deleted in Klaviyo) drops to the unlinked path.
* **Unlinked**, and the batch's email lookup (one ``GET /api/profiles?filter=any(email,[...])``
  per 100 unlinked Customers of a dispatch batch, made before the batch starts) found a
  profile with its email: one ``PATCH`` of that profile with the *Update* payload -- about
  1.01 calls per existing-but-unlinked profile instead of POST -> 409 -> PATCH.
* **Unlinked**, revision >= 2024-02-15 and the Add and Update collections map the
  Customer identically: one ``POST /api/profile-import`` (Klaviyo matches by its
  identifiers, email first).
* **Unlinked** otherwise: ``POST /api/profiles`` with the *Add* payload.  201 ->
  created.  409 ``duplicate_profile`` -> the existing id is patched with the
  *Update* payload.

**Email and phone number on two profiles** (a 409 from ``profile-import``, or from
the PATCH of the profile a 409 named): Klaviyo's 409 names the email's profile
first; the PATCH of it answers 409 naming the phone's profile, and the email's
profile is then patched once more without the phone number -- two calls.  The
phone number stays on its profile, the O006 warning names both profile ids, and
list and consent wishes go to the email's profile by its email only: SMS consent
for a number that profile does not hold is never sent.  Should the 409 have
named the phone's profile, the PATCH without the phone number answers 409 naming
the email's, which is then patched (one call more).  A linked profile is handled
the same way, except that the link always stands.

Every write is partial: only mapped attributes, never a null (see
:mod:`engine.payloads`).  The **"could not automatically link ... by email
address"** warning (O006) is logged when the Customer has no email, so matching
could use the phone number at best, and in the two-profiles case above.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from engine import catalog
from engine.collection import Collection
from engine.errors import KlaviyoApiError, KlaviyoSyncError
from engine.flows._outbound_consent import ConsentBatch
from engine.flows._outbound_records import (
    CODE_FLAG_UNREADABLE,
    CODE_LINK_WARNING,
    RecordResult,
)
from engine.hub import HubStore
from engine.klaviyo import KlaviyoApi
from engine.payloads import ProfileRequest, profile_request
from engine.runner import OK, Runner


def _duplicate_id(exc: KlaviyoApiError) -> str | None:
    """The ``meta.duplicate_profile_id`` of a 409 ``duplicate_profile``, else None."""
    for err in exc.errors[:1]:
        meta = err.get("meta") if isinstance(err, dict) else None
        dup = meta.get("duplicate_profile_id") if isinstance(meta, dict) else None
        if isinstance(dup, (str, int)) and str(dup):
            return str(dup)
    return None


class ProfileFlow:
    """Sends hub Customers to Klaviyo profiles through the Add / Update FROM Hub collections.

    Args:
        client: the Klaviyo client.
        runner: a runner over the loaded collections.
        add / update: the enabled outbound profile collections (either may be None).
        consent: where list and consent wishes are collected (flushed by the caller).
        hub: the hub, read for Customers whose email differs only in letter case (optional).
        known: lowercased email -> Klaviyo profile id, looked up for the whole batch beforehand
            (:meth:`KlaviyoClient.find_profile_ids_by_email`): such a Customer is patched at once.
    """

    def __init__(self, client: KlaviyoApi, runner: Runner, add: Collection | None,
                 update: Collection | None, consent: ConsentBatch, hub: HubStore | None = None,
                 known: Mapping[str, str] | None = None) -> None:
        self.hub = hub
        self.known = known or {}
        self.client = client
        self.runner = runner
        self.add = add
        self.update = update
        self.consent = consent

    def map_customer(self, result: RecordResult, coll: Collection, customer: dict[str, Any]) -> ProfileRequest | None:
        """The collection's request for this Customer, or None (problems logged, outcome set)."""
        out = self.runner.run(coll, customer, record_id=str(result.hub_id))
        if out.status != OK:
            result.flow = coll.title
            result.outcome = "invalid" if out.status == "invalid" else "skipped"
            result.log_problems(coll.title, out.problems)
            if out.status != "invalid":
                result.note(f"{coll.title}: filtered out")
            return None
        result.log_problems(coll.title, out.warnings, level="warning")   # e.g. a phone number refused
        request = profile_request(out.payload or {})
        for text in request.problems:
            result.log(coll.title, text, code=CODE_FLAG_UNREADABLE)
        return request

    async def send(self, customer: dict[str, Any], link: str | None) -> RecordResult:
        """Transfer one Customer. Never raises (Klaviyo, data or unexpected problems): see the result."""
        hub_id = int(customer["Id"])
        named = (self.update or self.add) if link else (self.add or self.update)
        assert named is not None  # the sender is built with an add or an update collection, or both
        result = RecordResult("Customer", hub_id, named.title)
        try:
            if link and self.update is not None:
                done = await self._send_linked(result, customer, link)
                if done:
                    return result
            if self.add is None:
                result.outcome = "skipped"
                result.note("no enabled Add Klaviyo Profile collection: unlinked Customer not sent")
                return result
            await self._send_unlinked(result, customer)
        except KlaviyoSyncError as exc:
            result.outcome = "failed"
            result.log_exception(result.flow, exc)
        except Exception as exc:  # noqa: BLE001 - an answer of the wrong shape fails this record only
            result.outcome = "failed"
            result.log_unexpected(result.flow, exc)
        return result

    async def _send_linked(self, result: RecordResult, customer: dict[str, Any], link: str) -> bool:
        assert self.update is not None
        request = self.map_customer(result, self.update, customer)
        if request is None:
            return True
        try:
            _, request = await self._patch_split(result, link, request, move=False)
        except KlaviyoApiError as exc:
            if exc.status != 404:
                raise
            result.note(f"linked profile {link} no longer exists in Klaviyo: matching again")
            return False
        result.outcome, result.klaviyo_id = "updated", link
        result.note(f"linked profile {link}: partial update")
        await self._finish(result, self.update, link, request)
        return True

    def _case_twin(self, customer: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        """A linked Customer whose email differs from this one's only in letter case or spaces."""
        email = customer.get("EmailAddress")
        if self.hub is None or not isinstance(email, str) or not email.strip():
            return None
        for other in self.hub.find_customers_by_email_ignoring_case(email):
            pid = self.hub.get_klaviyo_id("Customer", int(other["Id"])) if other["Id"] != customer["Id"] else None
            if pid:
                return other, pid
        return None

    async def _send_unlinked(self, result: RecordResult, customer: dict[str, Any]) -> None:
        assert self.add is not None
        twin = self._case_twin(customer)
        if twin is not None:
            # Klaviyo matches emails ignoring case: this Customer would land on the twin's profile
            # and take its link away.  Nothing is sent; the warning asks for a review.
            other, pid = twin
            result.flow, result.outcome = self.add.title, "skipped"
            result.log(self.add.title, catalog.PROFILE_LINK_WARNING, level="warning", code=CODE_LINK_WARNING,
                       klaviyo_id=pid,
                       detail=f"Customer {other['Id']} has the email {other['EmailAddress']!r}, which differs from "
                              f"this Customer's {customer['EmailAddress']!r} only in letter case or spaces, and is "
                              f"linked to Klaviyo profile {pid}. Klaviyo matches emails ignoring case, so this "
                              "Customer would overwrite that profile: nothing was sent. Reconcile the two "
                              "Customers in the hub.")
            return
        add_req = self.map_customer(result, self.add, customer)
        if add_req is None:
            return
        update_req = add_req
        if self.update is not None and self.update is not self.add:
            mapped = self.map_customer(result, self.update, customer)
            if mapped is None:
                return
            update_req = mapped
        result.flow = self.add.title
        known = self.known.get(add_req.email.strip().lower()) if add_req.email else None
        if known is not None:
            try:
                pid, update_req = await self._patch_email_first(result, known, update_req)
            except KlaviyoApiError as exc:
                if exc.status != 404:
                    raise
                result.note(f"profile {known} found by the batch's email lookup is gone: matching again")
            else:
                self._matched(result, pid, False, "email lookup", update_req)
                await self._finish(result, self.update or self.add, pid, update_req)
                return
        same = (add_req.attributes == update_req.attributes)
        if same and self.client.supports("profile_import"):
            try:
                upserted = await self.client.create_or_update_profile(add_req.attributes)
            except KlaviyoApiError as exc:
                if exc.status != 409:
                    raise
                upserted, named = None, _duplicate_id(exc)  # email and phone on two profiles: see below
            if upserted is not None:
                pid, created = upserted
                self._matched(result, pid, created, "profile-import", add_req)
                await self._finish(result, self.add if created else self.update or self.add, pid,
                                   add_req if created else update_req)
                return
            pid, update_req = await self._patch_email_first(result, named, update_req)
        else:
            pid, created = await self.client.create_profile(add_req.attributes)
            if created:
                self._matched(result, pid, True, "create", add_req)
                await self._finish(result, self.add, pid, add_req)
                return
            pid, update_req = await self._patch_email_first(result, pid, update_req)
        self._matched(result, pid, False, "409 duplicate_profile", update_req)
        await self._finish(result, self.update or self.add, pid, update_req)

    async def _patch_email_first(self, result: RecordResult, pid: str | None,
                                 request: ProfileRequest) -> tuple[str, ProfileRequest]:
        """Patch the profile a 409 named -> ``(profile id, the request it holds)``.

        When the email and the phone number belong to two profiles the email's profile
        wins: it is patched without the phone number, which stays where it is (warning
        naming both profiles), and the request returned has no phone number, so no SMS
        consent is attached to a profile that does not hold that number.  Klaviyo names
        the email's profile in its 409, so this costs two PATCHes (the full one, whose 409
        names the phone's profile, then the one without the phone number); a 409 that
        named the phone's profile costs one PATCH more.
        """
        if pid is None:
            email = request.email
            found = await self.client.find_profiles(email=email) if email else []
            if not found:
                raise KlaviyoApiError(f"{catalog.ERROR_CALLING_KLAVIYO} (HTTP 409): the profile's identifiers "
                                      "belong to different Klaviyo profiles", status=409,
                                      klaviyo_code="duplicate_profile")
            pid = str(found[0]["id"])
        return await self._patch_split(result, pid, request, move=True)

    async def _patch_split(self, result: RecordResult, pid: str, request: ProfileRequest, *,
                           move: bool) -> tuple[str, ProfileRequest]:
        """PATCH ``pid``; on a 409 naming another profile while the request has both an email and
        a phone number, keep the phone number where it is (see :meth:`_patch_email_first`).
        ``move``: the profile may turn out to be the phone's, and the email's is patched instead
        (never for a linked profile: the link stands)."""
        try:
            await self.client.update_profile(pid, request.attributes)
            return pid, request
        except KlaviyoApiError as exc:
            other = _duplicate_id(exc)
            if exc.status != 409 or other in (None, pid) or not (request.email and request.phone_number):
                raise
        assert other is not None
        without = replace(request, attributes={k: v for k, v in request.attributes.items() if k != "phone_number"})
        email_pid, phone_pid = pid, other
        try:
            await self.client.update_profile(pid, without.attributes)
        except KlaviyoApiError as exc:
            if not move or exc.status != 409 or _duplicate_id(exc) != other:
                raise
            # ``pid`` holds the phone number and ``other`` the email: the email's profile wins
            email_pid, phone_pid = other, pid
            await self.client.update_profile(other, without.attributes)
        result.log(result.flow, catalog.PROFILE_LINK_WARNING, level="warning", code=CODE_LINK_WARNING,
                   klaviyo_id=email_pid,
                   detail=f"the email address belongs to Klaviyo profile {email_pid} and phone number "
                          f"{request.phone_number} to Klaviyo profile {phone_pid}: profile {email_pid} was "
                          f"updated without the phone number, which stays on profile {phone_pid}; no SMS "
                          "consent was sent for that phone number")
        return email_pid, without

    def _matched(self, result: RecordResult, pid: str, created: bool, how: str, request: ProfileRequest) -> None:
        result.klaviyo_id = pid
        result.outcome = "created" if created else "linked"
        by = "email" if request.email else ("phone number" if request.phone_number else "identifiers")
        result.note(f"no link; {how}: " + (f"created profile {pid}" if created else
                                           f"matched existing profile {pid} by {by}, partial update"))
        if not request.email:
            result.log(result.flow, catalog.PROFILE_LINK_WARNING, level="warning", code=CODE_LINK_WARNING,
                       klaviyo_id=pid,
                       detail="the Customer has no email address, so it could only be matched by phone number"
                              + ("" if created else f" (matched profile {pid})"))

    async def _finish(self, result: RecordResult, coll: Collection, pid: str, request: ProfileRequest) -> None:
        result.flow = coll.title
        result.links.append(("Customer", result.hub_id, pid))
        await self.consent.add(result, coll.title, pid, request)


__all__ = ["ProfileFlow"]
