"""What one outbound record's transfer produced: the outcome, links and log entries to commit.

The outbound flows do their Klaviyo calls first and write nothing to the hub
while they work.  Each record ends as a :class:`RecordResult` that the
dispatcher commits in **one hub transaction** with the queue acknowledgement:
the external-id links, the error-log entries, and the ack.  A crash before that
transaction leaves the change claimable again after its lease; a crash after it
leaves nothing to redo.  A dry run simply never commits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import KlaviyoApiError, KlaviyoConnectionError, KlaviyoSyncError
from engine.flows._failures import CODE_UNEXPECTED, is_auth_failure, unexpected_failure
from engine.flows._outbound_dryrun import RecordedRequest
from engine.hub import Level

#: Codes of the outbound flows' own log entries (the catalog texts keep their flow's code).
CODE_LIST_MISSING = "O001"        # a LIST_/UCLIST_ list name matches no Klaviyo list
CODE_FLAG_UNREADABLE = "O002"     # a LIST_/UCLIST_/SubscribeProfile value is not a boolean
CODE_SUBSCRIBE_NEEDS_LIST = "O003"  # SubscribeProfile true, no LIST_ list, revision 2023-10-15
CODE_CUSTOMER_PREREQ = "O004"     # the customer an order needs could not be created
CODE_PROFILE_UNRESOLVED = "O005"  # no link, no email match, no customer to transfer
CODE_LINK_WARNING = "O006"        # could not link by email: possible duplicate profile
CODE_NOT_FOUND = "O007"           # the hub record named by push / the queue does not exist
CODE_EVENT_PAYLOAD = "O008"       # a mapped event payload Klaviyo cannot take (e.g. NumericValue)
# O009 (CODE_UNEXPECTED): an exception no layer expected, e.g. a Klaviyo answer of the wrong shape


@dataclass
class LogEntry:
    """One error-log entry to write (see :meth:`engine.hub.ErrorLogStore.log`)."""

    flow: str
    message: str
    level: Level = "error"
    entity: str | None = None
    hub_id: int | None = None
    klaviyo_id: str | None = None
    detail: str | None = None
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is worth retrying later (Klaviyo unreachable, throttled or 5xx)."""
    if isinstance(exc, KlaviyoConnectionError):
        return True
    if not isinstance(exc, KlaviyoApiError):
        return False
    return bool(getattr(exc, "transient", exc.status == 429 or exc.status >= 500))


@dataclass
class RecordResult:
    """One hub record's transfer.

    Attributes:
        entity / hub_id: the hub record (``Customer`` or ``Transaction``).
        flow: the collection title the outcome is counted under.
        outcome: created / updated / unchanged / linked / skipped / invalid / failed (see RunSummary).
        klaviyo_id: the profile id, or the Placed Order event's unique id.
        decision: one line saying how the record was matched and what was done.
        links: ``(entity, hub_id, klaviyo_id)`` to save with the ack.
        logs: error-log entries to write with the ack.
        counts: extra ``(flow, outcome)`` pairs for the summary (child events).
        transient: the failure may pass (Klaviyo unreachable / 5xx / 429 after retries,
            an answer that could not be read): the change is released for a later attempt
            instead of acknowledged.
        auth_error: Klaviyo refused the credentials (401/403, OAuth refresh failed) while
            this record was sent: not the record's fault; the run stops and the change
            goes back to the queue untouched (no attempt counted, nothing logged).
        requests: in a dry run, the requests recorded for this record.
        prerequisites: results committed together with this one (the customer an
            order needed).
        versions: sent order versions to save with the ack (keyword arguments of
            ``hub.record_transaction_version``).
    """

    entity: str
    hub_id: int
    flow: str
    outcome: str = "failed"
    klaviyo_id: str | None = None
    decision: str = ""
    links: list[tuple[str, int, str]] = field(default_factory=list)
    logs: list[LogEntry] = field(default_factory=list)
    counts: list[tuple[str, str]] = field(default_factory=list)
    transient: bool = False
    auth_error: KlaviyoSyncError | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    prerequisites: list[RecordResult] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)

    def log(self, flow: str, message: str, *, level: Level = "error", detail: str | None = None,
            code: str | None = None, klaviyo_id: str | None = None, entity: str | None = None,
            hub_id: int | None = None) -> None:
        """Queue an error-log entry for this record (written at commit)."""
        self.logs.append(LogEntry(flow, message, level, entity or self.entity,
                                  self.hub_id if hub_id is None else hub_id,
                                  klaviyo_id or self.klaviyo_id, detail, code))

    def log_problems(self, flow: str, problems: Iterable[KlaviyoSyncError], *, level: Level = "error",
                     entity: str | None = None, hub_id: int | None = None) -> None:
        """Log each mapping problem (or warning) with its catalog text, code and where it happened
        (row, collection file:line:col)."""
        for p in problems:
            self.log(flow, p.message, level=level, code=p.code, entity=entity, hub_id=hub_id,
                     detail=p.format("outbound-log"))

    def log_exception(self, flow: str, exc: KlaviyoSyncError, *, detail: str | None = None,
                      entity: str | None = None, hub_id: int | None = None) -> None:
        """Log a Klaviyo failure with its own text ("Error calling Klaviyo (HTTP ...)...")."""
        if is_transient(exc):
            self.transient = True
        if is_auth_failure(exc) and self.auth_error is None:
            self.auth_error = exc
        self.log(flow, exc.message, detail=detail or exc.detail, code=exc.code, entity=entity, hub_id=hub_id)

    def log_unexpected(self, flow: str, exc: BaseException, *, entity: str | None = None,
                       hub_id: int | None = None) -> None:
        """Log an exception no layer expected as a failure that may pass (retried, never a crash)."""
        self.transient = True
        self.log(flow, unexpected_failure(exc), code=CODE_UNEXPECTED, entity=entity, hub_id=hub_id)

    @property
    def stopped_by(self) -> KlaviyoSyncError | None:
        """The refused-credentials error that stopped this record or the customer it needed, if any."""
        for r in (self, *self.prerequisites):
            if r.auth_error is not None:
                return r.auth_error
        return None

    def note(self, text: str) -> None:
        self.decision = f"{self.decision}; {text}" if self.decision else text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entity": self.entity, "hub_id": self.hub_id, "flow": self.flow,
                               "outcome": self.outcome, "decision": self.decision}
        if self.klaviyo_id:
            out["klaviyo_id"] = self.klaviyo_id
        if self.links:
            out["links"] = [{"entity": e, "hub_id": h, "klaviyo_id": k} for e, h, k in self.links]
        if self.logs:
            out["log"] = [e.to_dict() for e in self.logs]
        if self.transient:
            out["retry_later"] = True
        if self.auth_error is not None:
            out["not_sent"] = "Klaviyo refused the credentials: the change stays queued"
        if self.requests:
            out["requests"] = [r.to_dict() for r in self.requests]
        if self.versions:
            out["versions"] = [{k: v for k, v in ver.items() if k != "digest"} for ver in self.versions]
        if self.prerequisites:
            out["prerequisites"] = [p.to_dict() for p in self.prerequisites]
        return out


__all__ = ["LogEntry", "RecordResult", "is_transient"]
