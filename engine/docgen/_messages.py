"""What a collection can write to the hub's error log: its own texts and the catalog's.

A collection's page lists every message its flow can log, word for word, each with the codes it
is logged under and when.  Two sources:

* the collection itself: the ``required_message`` of its required rows, ``requires_one_of``,
  ``unreadable_message`` for rows with ``on_missing: error``, and the ``expect`` /
  ``max_length`` checks of its rows (the mapper, :mod:`engine.mapper`, logs these);
* the flow that runs it, found by the collection's declared shape as the flows find it (never by
  title): the error catalog's texts (:mod:`engine.catalog`) that flow logs, and Klaviyo's refusals.

Where two articles word one error differently (``catalog.TEXT_PAIRS``), the entry says how the
error log's detail carries the other wording.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from engine import catalog
from engine.collection import ROW_KINDS, Collection
from engine.formula import CompiledFormula
from engine.klaviyo.revision import CAPABILITIES
from engine.payloads import profile_request
from engine.vocab import LIST_PREFIX, REQUIRED_EVENT_KEYS, SUBSCRIBE_FLAG, list_flag

#: What follows a Klaviyo error's text in the log (Klaviyo's own detail, or the transport's).
_HTTP_TAIL = " (HTTP <status>): <Klaviyo's detail>"
_CONNECTION_TAIL = ": <the connection problem>"


@dataclass(frozen=True)
class LoggedMessage:
    """One message a collection's flow can log.

    Attributes:
        message: the text as the error log holds it, word for word.
        tail: what follows ``message`` in the log when it is not the whole text (shown as a
            placeholder, e.g. Klaviyo's detail).
        codes: the codes it is logged under.
        when: what makes the flow log it.
        level: ``error`` or ``warning``.
        also: where another article words the same error differently, how the entry's detail
            carries that wording.
    """

    message: str
    when: str
    codes: tuple[str, ...]
    level: str = "error"
    tail: str = ""
    also: str | None = None

    @property
    def text(self) -> str:
        return self.message + self.tail


class _Messages:
    """Messages in first-seen order; one text seen twice merges its codes and cases."""

    def __init__(self) -> None:
        self._by_text: dict[tuple[str, str], LoggedMessage] = {}

    def add(self, message: str, when: str, *codes: str, level: str = "error", tail: str = "") -> None:
        key = (message + tail, level)
        seen = self._by_text.get(key)
        if seen is None:
            self._by_text[key] = LoggedMessage(message, when, codes, level, tail)
            return
        merged = seen.codes + tuple(c for c in codes if c not in seen.codes)
        self._by_text[key] = LoggedMessage(message, f"{seen.when}; {when}", merged, level, tail)

    def items(self) -> list[LoggedMessage]:
        return list(self._by_text.values())


def _names(rows: list[str]) -> str:
    return ", ".join(rows)


def _calls_get_without_default(formula: CompiledFormula) -> bool:
    """Whether ``formula`` calls ``get(obj, path)`` with no default: it raises when nothing is there."""
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "get"
               and len(node.args) + len(node.keywords) < 3 for node in ast.walk(formula.tree))


def _reads_without_default(c: Collection) -> list[str]:
    """Where ``c`` has a get() without a default: the rows' destinations, ``let`` names, the filter."""
    where = [r.destination for r in c.rows if r.formula is not None and _calls_get_without_default(r.formula)]
    where += [f"let {let.name}" for let in c.lets if _calls_get_without_default(let.formula)]
    if c.filter is not None and _calls_get_without_default(c.filter):
        where.append("the filter")
    return where


def _mapping_messages(c: Collection, out: _Messages) -> None:
    """What the mapper logs for this collection's own rows (engine/mapper.py)."""
    required: dict[str, list[str]] = {}
    for row in c.rows:
        if row.required:
            text = row.required_message or f"a value for required destination {row.destination} is missing"
            required.setdefault(text, []).append(row.destination)
    for text, dests in required.items():
        out.add(text, f"a required row has no value ({_names(dests)})", "M002")
    if c.requires_one_of:
        text = (c.requires_one_of_message or c.required_message
                or f"one of {', '.join(c.requires_one_of)} is required")
        out.add(text, f"none of {_names(list(c.requires_one_of))} has a value", "M005")
    # A required row that is missing is M002 above; on_missing only applies to the others.
    unreadable = [row for row in c.rows if row.on_missing == "error" and not row.required]
    if c.unreadable_message:
        reads = [r.destination for r in unreadable] + _reads_without_default(c)
        when = ("reads something the source record does not have: "
                + _names(reads) if reads else "declared, but no row (on_missing: error, not required) or "
                "get() without a default can log it: not logged as the collection stands")
        out.add(c.unreadable_message, when, "M010")
    else:
        for row in unreadable:
            out.add(f"source {row.source} could not be read",
                    f"the row {row.destination} (on_missing: error) finds nothing", "M010")
    for row in c.rows:
        if ROW_KINDS[row.type].plan(row).step == "constant":
            continue  # a fixed value passes its checks on every record, or fails the load (C016)
        if row.expect:
            out.add(f"{row.destination} must be {row.expect}", f"{row.destination} has a value of another type",
                    "M003", tail=", got <type> <value>")
        if row.max_length is not None:
            out.add(f"{row.destination} is <n> characters; at most {row.max_length} allowed",
                    f"{row.destination} is longer than {row.max_length} characters", "M004")


def _klaviyo_messages(out: _Messages) -> None:
    out.add(catalog.ERROR_CALLING_KLAVIYO, "Klaviyo refused a request (after the client's own retries of "
            "429 and 5xx answers)", "K001", tail=_HTTP_TAIL)
    out.add(catalog.KLAVIYO_CONNECTION_ERROR, "Klaviyo could not be reached (after the client's retries)",
            "K002", tail=_CONNECTION_TAIL)


def _flow_messages(c: Collection, out: _Messages) -> None:
    """The catalog texts the flow running ``c`` logs (engine/flows/)."""
    if c.direction == "to_hub":
        if c.parent is not None:
            return  # a child's problems are its mapping's; the parent's flow talks to Klaviyo
        if c.hub_entity == "Customer":
            out.add(catalog.EMAIL_REQUIRED, "the hub refuses the Customer: no usable email address", "H001")
            out.add(catalog.CUSTOMER_NUMBER_REQUIRED, "the hub refuses the Customer: no customer number", "H001")
            out.add(catalog.CUSTOMER_LINK_WARNING, "the profile was linked by phone number alone, or a Customer "
                    "has its email with other letter case (a possible duplicate)", level="warning")
        _klaviyo_messages(out)
        return
    if c.klaviyo_resource == "profile":
        out.add(catalog.PROFILE_LINK_WARNING, "the Customer could not be linked to an existing profile by "
                "its email (a possible duplicate)", "O006", level="warning")
        _consent_messages(c, out)
    elif c.klaviyo_resource == "event":
        required = f"one of {', '.join(REQUIRED_EVENT_KEYS)} has no value (a row removed counts as none)"
        if c.parent is None:  # the order's own event
            out.add(catalog.PROFILE_NOT_RESOLVED, "no link, no profile with the Transaction's email, and no "
                    "Customer to transfer first", "O005")
            out.add(catalog.ORDER_CUSTOMER_NOT_CREATED, "the Customer transferred first produced no profile",
                    "O004")
            message = c.required_message or catalog.ORDER_EVENT_NOT_CREATED
        else:  # a line's event: the flow logs the catalog's text whatever the child's required_message
            message = catalog.PRODUCT_EVENT_NOT_CREATED
        out.add(message, required, "M002")
        out.add(message, "the mapped event cannot be sent (e.g. NumericValue is not a number)", "O008")
    _klaviyo_messages(out)


class _Shown:
    """A stand-in value whose repr is a placeholder, so the payload builder words its own message."""

    def __repr__(self) -> str:
        return "<value>"


def _consent_messages(c: Collection, out: _Messages) -> None:
    """The list and consent rows' messages (engine/payloads.py words the flag problems itself;
    engine/flows/_outbound_consent.py logs the list ones)."""
    flags = [r.destination for r in c.rows if r.destination == SUBSCRIBE_FLAG
             or ((flag := list_flag(r.destination)) is not None and flag[1])]
    for dest in flags:
        (text,) = profile_request({dest: _Shown()}).problems
        out.add(text, f"{dest} is not true or false", "O002")
        if dest != SUBSCRIBE_FLAG:
            name = dest.split("_", 1)[1]
            out.add(f"Klaviyo list {name!r} does not exist: the profile was written but not added to this list",
                    f"no Klaviyo list is named {name!r}", "O001")
    if SUBSCRIBE_FLAG in flags or any(f.startswith(LIST_PREFIX) for f in flags):
        out.add("The profile cannot be subscribed: it has no email address or phone number",
                "a profile to subscribe has neither", "O003")
    if SUBSCRIBE_FLAG in flags and not any(f.startswith(LIST_PREFIX) for f in flags):
        out.add("SubscribeProfile is true but no LIST_ list is mapped: Klaviyo revision <revision> can only "
                "subscribe a profile to a list",
                f"SubscribeProfile is true at an API revision before {CAPABILITIES['optional_subscribe_list']}", "O003")


def _with_pairs(title: str, entry: LoggedMessage) -> LoggedMessage:
    """The entry as the error log writes it under ``title`` (catalog.pair_texts): the error
    catalog's text as the message, the other article's wording in the detail."""
    for pair in catalog.TEXT_PAIRS:
        if not pair.applies_to(title):
            continue
        message = pair.message if pair.swap and entry.message == pair.other else entry.message
        if message != pair.message:
            continue
        also = f"the detail adds: {catalog.other_text(pair)}"
        if pair.statuses is not None:
            also = f"at HTTP {pair.statuses[0]} to {pair.statuses[1]} {also}"
        return LoggedMessage(message, entry.when, entry.codes, entry.level, entry.tail, also)
    return entry


def logged_messages(c: Collection) -> list[LoggedMessage]:
    """Every message the flow running ``c`` can log under its title, first its mapping's."""
    out = _Messages()
    _mapping_messages(c, out)
    _flow_messages(c, out)
    return [_with_pairs(c.title, m) for m in out.items()]


#: The Authorization and Connection flow (no collection): the catalog's texts, logged by
#: ``auth login`` and the OAuth refresh (engine/oauth/).
AUTH_MESSAGES: tuple[str, ...] = (
    catalog.AUTH_DATA_MISSING,
    catalog.AUTH_CODE_MISSING,
    catalog.AUTH_CLIENT_ID_NOT_CONFIGURED,
    catalog.AUTH_CLIENT_SECRET_NOT_CONFIGURED,
    catalog.AUTH_REDIRECT_URL_NOT_CONFIGURED,
    catalog.AUTH_TOKEN_EXCHANGE_FAILED,
)
