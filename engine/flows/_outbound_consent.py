"""List membership and consent for outbound profiles, batched across a dispatch batch.

A profile write is one call; the ``LIST_`` / ``UCLIST_`` / ``SubscribeProfile``
flags would cost one or more calls *each* per profile if sent one by one.  Klaviyo's
consent jobs take 100 profiles and list relationships 1,000, so the flows
:meth:`ConsentBatch.add` each profile's wishes and :meth:`ConsentBatch.flush` them
once per batch: with the shipped flags, about 1.02 calls per profile instead of 3.

Rules (seed 000, "List and subscription template flags"):

* ``SubscribeProfile`` true: subscribe (email and SMS, for the identifiers the
  profile has) to every ``LIST_`` list; with no ``LIST_`` list, subscribe without a
  list where the revision allows it (2023-12-15 on), else log O003.
* ``SubscribeProfile`` false or unmapped: unsubscribe fully (no list).  ``LIST_``
  lists are then only joined (membership without consent): a list flag cannot
  re-subscribe a profile the same record unsubscribes.
* ``UCLIST_`` true: join the list without any consent change.
* A list name no Klaviyo list has: O001 logged on the record; the profile write
  (already done) stands, and the record's other lists still apply.

A batch call Klaviyo rejects is retried one profile at a time, so one bad profile
cannot fail its 99 neighbours; each failure is logged on its own record.  A 401/403
is no profile's fault: it fails the chunk and every later one without a call (the
dispatcher then stops the run and gives the changes back untouched).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from engine.errors import KlaviyoApiError, KlaviyoSyncError
from engine.flows._failures import is_auth_failure
from engine.flows._outbound_records import (
    CODE_LIST_MISSING,
    CODE_SUBSCRIBE_NEEDS_LIST,
    RecordResult,
)
from engine.klaviyo import KlaviyoApi
from engine.payloads import SUBSCRIBE, UNSUBSCRIBE, ProfileRequest
from engine.vocab import LIST_PREFIX, UCLIST_PREFIX

SUBSCRIBE_BATCH = 100
LIST_BATCH = 1000


class ListResolver:
    """List names -> Klaviyo list ids, remembered for the run (misses too, so a missing list
    costs one lookup per run, not one per profile)."""

    def __init__(self, client: KlaviyoApi) -> None:
        self.client = client
        self._lookups: dict[str, asyncio.Task[str | None]] = {}

    async def _lookup(self, name: str) -> str | None:
        found = await self.client.find_list_by_name(name)
        return None if found is None else str(found["id"])

    async def resolve(self, name: str) -> str | None:
        """The id of the first list named ``name``, or None. Raises Klaviyo errors.

        Concurrent records asking for the same name share one lookup; a failed lookup is
        forgotten so the next record tries again.
        """
        task = self._lookups.get(name)
        if task is None:
            task = self._lookups[name] = asyncio.ensure_future(self._lookup(name))
        try:
            return await asyncio.shield(task)
        except Exception:
            if self._lookups.get(name) is task:
                del self._lookups[name]
            raise


Item = tuple[RecordResult, str, dict[str, Any]]  # (record, flow title, profile {"id", "email"?, "phone_number"?})


class ConsentBatch:
    """Collects list and consent wishes of many profiles; :meth:`flush` sends them batched."""

    def __init__(self, client: KlaviyoApi, lists: ListResolver, *, subscribe_batch: int = SUBSCRIBE_BATCH) -> None:
        self.client = client
        self.lists = lists
        self.subscribe_batch = subscribe_batch
        self._subscribe: dict[str | None, list[Item]] = defaultdict(list)
        self._unsubscribe: list[Item] = []
        self._join: dict[str, list[Item]] = defaultdict(list)
        self.auth_error: KlaviyoSyncError | None = None

    def __len__(self) -> int:
        return (sum(len(v) for v in self._subscribe.values()) + len(self._unsubscribe)
                + sum(len(v) for v in self._join.values()))

    async def _list_ids(self, result: RecordResult, flow: str, names: Sequence[str], flag: str) -> list[str]:
        ids = []
        for name in names:
            try:
                list_id = await self.lists.resolve(name)
            except KlaviyoSyncError as exc:
                result.log_exception(flow, exc, detail=f"looking up the Klaviyo list {name!r} for {flag}{name}")
                continue
            if list_id is None:
                result.log(flow, f"Klaviyo list {name!r} does not exist: the profile was written but not "
                           f"added to this list", code=CODE_LIST_MISSING,
                           detail=f"row {flag}{name}: create the list in Klaviyo or change the row's list name")
            else:
                ids.append(list_id)
        return ids

    async def add(self, result: RecordResult, flow: str, profile_id: str, request: ProfileRequest) -> None:
        """Record one profile's list and consent wishes (list names resolved now)."""
        ident = {"id": profile_id, **request.identifiers()}
        item: Item = (result, flow, ident)
        subscribe_ids = await self._list_ids(result, flow, request.subscribe_lists, LIST_PREFIX)
        join_ids = await self._list_ids(result, flow, request.add_lists, UCLIST_PREFIX)
        if request.consent == UNSUBSCRIBE:
            if len(ident) > 1:
                self._unsubscribe.append(item)
            join_ids = subscribe_ids + join_ids
        elif request.consent == SUBSCRIBE or subscribe_ids:
            if len(ident) == 1:
                result.log(flow, "The profile cannot be subscribed: it has no email address or phone number",
                           code=CODE_SUBSCRIBE_NEEDS_LIST)
            elif subscribe_ids:
                for list_id in subscribe_ids:
                    self._subscribe[list_id].append(item)
            elif request.subscribe_lists:
                pass  # every LIST_ list was missing: already logged, nothing to subscribe to
            elif self.client.supports("optional_subscribe_list"):
                self._subscribe[None].append(item)
            else:
                result.log(flow, f"SubscribeProfile is true but no LIST_ list is mapped: Klaviyo revision "
                           f"{self.client.revision} can only subscribe a profile to a list",
                           code=CODE_SUBSCRIBE_NEEDS_LIST,
                           detail="map a LIST_<list name> row, or use API revision 2023-12-15 or later")
        for list_id in dict.fromkeys(join_ids):
            self._join[list_id].append(item)

    async def flush(self) -> None:
        """Send everything collected, in as few calls as Klaviyo allows; then start empty."""
        subscribe, unsubscribe, join = self._subscribe, self._unsubscribe, self._join
        self._subscribe, self._unsubscribe, self._join = defaultdict(list), [], defaultdict(list)
        for list_id, items in subscribe.items():
            def subscribe_chunk(chunk: list[Item], lid: str | None = list_id) -> Awaitable[None]:
                return self.client.subscribe_profiles([i[2] for i in chunk], list_id=lid, batch=self.subscribe_batch)
            await self._send(items, self.subscribe_batch, subscribe_chunk,
                             "subscribing the profile" + (f" to list {list_id}" if list_id else ""))
        await self._send(unsubscribe, SUBSCRIBE_BATCH, lambda chunk: self.client.unsubscribe_profiles(
            [{k: v for k, v in i[2].items() if k != "id"} for i in chunk]), "unsubscribing the profile")
        for join_id, members in join.items():
            def join_chunk(chunk: list[Item], lid: str = join_id) -> Awaitable[None]:
                return self.client.add_profiles_to_list(lid, [i[2]["id"] for i in chunk])
            await self._send(members, LIST_BATCH, join_chunk, f"adding the profile to list {join_id}")

    async def _send(self, items: list[Item], size: int, call: Callable[[list[Item]], Awaitable[None]],
                    what: str) -> None:
        for start in range(0, len(items), size):
            chunk = items[start:start + size]
            if self.auth_error is not None:  # the credentials were refused: call nothing more
                self._fail(chunk, self.auth_error, what)
                continue
            try:
                await call(chunk)
            except KlaviyoApiError as exc:
                if is_auth_failure(exc):
                    self.auth_error = exc
                elif len(chunk) > 1 and not (exc.status in (403, 429) or exc.status >= 500):
                    for one in chunk:  # isolate the profile Klaviyo refuses
                        await self._send([one], 1, call, what)
                    continue
                self._fail(chunk, exc, what)
            except KlaviyoSyncError as exc:
                if is_auth_failure(exc):
                    self.auth_error = exc
                self._fail(chunk, exc, what)
            except Exception as exc:  # noqa: BLE001 - a wrong-shaped answer fails its chunk, not the batch
                self._fail(chunk, exc, what)

    @staticmethod
    def _fail(chunk: list[Item], exc: Exception, what: str) -> None:
        for result, flow, ident in chunk:
            if isinstance(exc, KlaviyoSyncError):
                result.log_exception(flow, exc, detail=f"{what} (profile {ident['id']})")
            elif isinstance(exc, ValueError) and not isinstance(exc, (UnicodeError, json.JSONDecodeError)):
                # the client refused the arguments (a profile with neither email nor phone): final
                result.log(flow, str(exc), detail=f"{what} (profile {ident['id']})")
            else:
                result.log_unexpected(flow, exc)


__all__ = ["ConsentBatch", "ListResolver"]
