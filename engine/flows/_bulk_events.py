"""Bulk event jobs for ``backfill transactions``: many ``create_event`` calls, one request.

:class:`BulkEventClient` stands in for the Klaviyo client inside the order flow.  Its
``create_event`` does not send: it adds the event to the open batch and waits for the
batch's answer, so the order flow (its unique ids, versions, line results) runs unchanged.
A batch goes to ``POST /api/event-bulk-create-jobs`` (revision 2024-05-15 and later, tier
M) when it holds 1,000 events or nearly 5 MB, or when no event has joined it for
``linger`` seconds (every order of the dispatcher's batch has had its turn).

Klaviyo checks a bulk job whole: one event it refuses fails the request (400) and nothing
of it is recorded.  The events of a refused batch are then sent one per call
(``POST /api/events``), so each refusal is logged on its own record with Klaviyo's detail
and the others are recorded.  A failure that may pass (Klaviyo unreachable, throttled past
the client's retries) fails every event of the batch with that error: the backfill stops
before the first of them and the next run sends them again, under the same unique ids.

After the 202 Klaviyo processes the job later and reports nothing per event: an event it
drops then is not seen here (the order's version is recorded as sent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from engine.errors import KlaviyoApiError
from engine.klaviyo import KlaviyoApi
from engine.klaviyo.client import event_attributes, json_size

#: Klaviyo's limits for one bulk event job
MAX_EVENTS = 1000
MAX_BYTES = 5 * 1024 * 1024
#: room left under MAX_BYTES for the job's envelope and each entry's profile
ENVELOPE_BYTES = 64 * 1024
#: seconds without a new event before an open batch is sent
LINGER = 0.02


class _Pending:
    __slots__ = ("event", "future", "size")

    def __init__(self, event: dict[str, Any], size: int, future: asyncio.Future[str]) -> None:
        self.event, self.size, self.future = event, size, future


class BulkEventClient:
    """A Klaviyo client whose ``create_event`` joins a bulk event job (see the module docstring).

    Every other method is the wrapped client's.  ``aclose()`` sends what is still open.
    """

    def __init__(self, client: KlaviyoApi, *, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES,
                 linger: float = LINGER) -> None:
        self._client = client
        self.max_events = max_events
        self.max_bytes = max_bytes - ENVELOPE_BYTES
        self.linger = linger
        self._open: list[_Pending] = []
        self._open_bytes = 0
        self._last_added = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.jobs_sent = 0
        self.events_sent = 0
        self.batches_refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create_event(self, metric_name: str, profile: str | Mapping[str, Any],
                           properties: Mapping[str, Any] | None = None, *, value: float | None = None,
                           unique_id: str | None = None, time: datetime | str | None = None) -> str:
        """Add one event to the open batch; returns its ``unique_id`` once Klaviyo took the batch.

        Raises what the batch's request raised (or, in a refused batch, this event's own call).
        """
        uid = unique_id or str(uuid.uuid4())
        event = {"metric_name": metric_name, "profile": profile, "properties": properties, "value": value,
                 "unique_id": uid, "time": time}
        size = json_size(event_attributes(metric_name, profile, properties, value=value, unique_id=uid, time=time))
        if self._open and (len(self._open) >= self.max_events or self._open_bytes + size > self.max_bytes):
            self._send_open()
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._open.append(_Pending(event, size, future))
        self._open_bytes += size
        self._last_added = _now()
        if len(self._open) >= self.max_events:
            self._send_open()
        elif self._timer is None:
            self._arm(self.linger)
        return await future

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._ring)

    def _ring(self) -> None:
        self._timer = None
        if not self._open:
            return
        quiet = _now() - self._last_added
        if quiet < self.linger:
            self._arm(self.linger - quiet)
        else:
            self._send_open()

    def _send_open(self) -> None:
        batch, self._open, self._open_bytes = self._open, [], 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            await self._client.bulk_create_events([p.event for p in batch])
        except KlaviyoApiError as exc:
            if exc.status != 400:
                _fail(batch, exc)
                return
            self.batches_refused += 1
            await asyncio.gather(*(self._one_by_one(p) for p in batch))
            return
        except asyncio.CancelledError:
            for p in batch:
                p.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to each event's caller, never lost
            _fail(batch, exc)
            return
        self.jobs_sent += 1
        self.events_sent += len(batch)
        for p in batch:
            if not p.future.done():
                p.future.set_result(str(p.event["unique_id"]))

    async def _one_by_one(self, p: _Pending) -> None:
        """A refused batch's event sent alone, so a refusal is this event's own."""
        ev = p.event
        try:
            uid = await self._client.create_event(ev["metric_name"], ev["profile"], ev["properties"],
                                                  value=ev["value"], unique_id=ev["unique_id"], time=ev["time"])
        except Exception as exc:  # noqa: BLE001 - the event's caller logs it on its record
            if not p.future.done():
                p.future.set_exception(exc)
            return
        if not p.future.done():
            p.future.set_result(uid)

    async def flush(self) -> None:
        """Send the open batch now and wait for every batch in flight."""
        if self._open:
            self._send_open()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)


def _now() -> float:
    return time.monotonic()


__all__ = ["BulkEventClient", "LINGER", "MAX_BYTES", "MAX_EVENTS"]
