"""One error, two texts: where two articles of the specification word the same error differently,
the error-log entry carries both -- the error catalog's text (seed 002) as its message, the other
article's in its detail.

``EXPECTED_PAIRS`` is the list of every such pair in the five articles (searched by hand: the
Placed Order article's Error Handling, the Klaviyo Profile TO Hub article's Error Handling, and the
error catalog; the known-limitations and connections articles word no error).  Each pair is then
shown end to end: the real flows against the sandbox over loopback, a real hub file.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from test_outbound_orders import _link_customer, _transaction, order_of_a_customer_klaviyo_refuses
from test_outbound_profiles import _customer, _edit_collections, _with_collections

from engine import catalog
from engine.hub import SqliteHub

PLACED = "Add Klaviyo Placed Order Event FROM Hub"
PRODUCT = "Add Klaviyo Ordered Product Event FROM Hub"

#: (catalog text logged as the message, the other article's text, the flows it applies to)
EXPECTED_PAIRS = [
    ("The Klaviyo order event could not be created because a required mapping field is missing or incomplete.",
     "Could not Create Transaction: Mapping field is missing / not complete", {PLACED}),
    ("The customer needed for this order could not be created, which prevented the order from transferring.",
     "Profile could not be resolved", {PLACED}),
    ("An error occurred while contacting Klaviyo", "Klaviyo API temporarily unavailable", {PLACED, PRODUCT}),
    ("Error calling Klaviyo", "Klaviyo API temporarily unavailable", {PLACED, PRODUCT}),
    ("An error occurred while contacting Klaviyo", "Klaviyo temporarily unavailable", {"* TO Hub"}),
    ("Error calling Klaviyo", "Klaviyo temporarily unavailable", {"* TO Hub"}),
]


def _closed_url() -> str:
    """A loopback URL nothing listens on (the port was bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _flows(pair: catalog.TextPair) -> set[str]:
    return set(pair.flows) if pair.flows is not None else {f"*{pair.flows_suffix}"}


def test_every_pair_of_texts_is_listed() -> None:
    """The catalog's pairs are exactly the ones found in the articles, every text word for word."""
    assert EXPECTED_PAIRS == [(p.message, p.other, _flows(p)) for p in catalog.TEXT_PAIRS]
    texts = {v for k, v in vars(catalog).items() if k.isupper() and isinstance(v, str)}
    assert all(p.message in texts and p.other in texts for p in catalog.TEXT_PAIRS)


@pytest.mark.parametrize("pair", catalog.TEXT_PAIRS, ids=lambda p: f"{p.other}")
def test_the_error_log_keeps_both_texts_of_each_pair(tmp_path: Path, pair: catalog.TextPair) -> None:
    """Logged with the catalog's text, an entry gains the other article's wording in its detail
    (once, however often it is logged again with that detail); on a flow the pair does not cover
    nothing is added."""
    flow = next(iter(pair.flows)) if pair.flows is not None else f"Add Klaviyo Profile{pair.flows_suffix}"
    message = pair.message + (" (HTTP 503): The service is temporarily unavailable." if pair.statuses
                              else ": timed out" if pair.prefix else "")
    with SqliteHub(tmp_path / "hub.db") as hub:
        hub.errors.log(flow, message, detail="Klaviyo's answer")
        hub.errors.log(flow, message, detail=f"Klaviyo's answer; {catalog.other_text(pair)}")
        hub.errors.log("Add Klaviyo Profile FROM Hub", message, detail="Klaviyo's answer")
        first, again, other_flow = sorted(hub.errors.list(), key=lambda e: e["Id"])
    expected = f'Klaviyo\'s answer; the {pair.article} words this error "{pair.other}"'
    assert (message, expected) == (first["Message"], first["Detail"])
    assert expected == again["Detail"]
    assert "Klaviyo's answer" == other_flow["Detail"]


def test_a_4xx_is_not_klaviyo_being_unavailable(tmp_path: Path) -> None:
    """Only a 5xx answer is "temporarily unavailable"; a rejection (4xx) keeps its one text."""
    with SqliteHub(tmp_path / "hub.db") as hub:
        hub.errors.log(PLACED, "Error calling Klaviyo (HTTP 400): bad value", detail="d")
        [entry] = hub.errors.list()
    assert "d" == entry["Detail"]


def test_the_placed_order_articles_text_is_logged_as_the_catalogs(outbound, tmp_path) -> None:
    """A collection whose required_message is the Placed Order article's text still logs the catalog's
    text as the message, the article's in the detail."""
    folder = _edit_collections(tmp_path, {"add-placed-order-event-from-hub.yaml": (
        f'required_message: "{catalog.ORDER_EVENT_NOT_CREATED}"',
        f'required_message: "{catalog.TRANSACTION_MAPPING_INCOMPLETE}"')})
    path = folder / "add-placed-order-event-from-hub.yaml"
    path.write_text(path.read_text().replace("formula: to_str(Id)", 'formula: get(record, "NoSuchId", None)'))
    env = _with_collections(outbound, folder)
    c, _ = _link_customer(env)
    _transaction(env.hub, c["Id"])
    env.dispatch()
    [entry] = env.hub.errors.list()
    assert catalog.ORDER_EVENT_NOT_CREATED == entry["Message"]
    assert f'"{catalog.TRANSACTION_MAPPING_INCOMPLETE}"' in entry["Detail"] and "UniqueId" in entry["Detail"]
    assert [] == env.events()


def test_customer_prerequisite_failure_carries_profile_could_not_be_resolved(outbound) -> None:
    """The order's customer could not be created: the catalog's text, with the Placed Order article's
    "Profile could not be resolved" in the detail beside the Customer's own error."""
    c, _tx = order_of_a_customer_klaviyo_refuses(outbound)
    outbound.dispatch()
    [entry] = [e for e in outbound.hub.errors.list() if e["Flow"] == PLACED]
    assert catalog.ORDER_CUSTOMER_NOT_CREATED == entry["Message"]
    assert entry["Detail"].startswith(f"Customer {c['Id']} (Add Klaviyo Profile FROM Hub): Error calling Klaviyo")
    assert entry["Detail"].endswith(f'the Placed Order event article words this error "{catalog.PROFILE_NOT_RESOLVED}"')


def test_no_customer_at_all_logs_profile_could_not_be_resolved_alone(outbound) -> None:
    """With no Customer to transfer, the Placed Order article's text stands alone (the catalog has
    no text for that case)."""
    _transaction(outbound.hub, None, email="nobody@example.com")
    outbound.dispatch()
    [entry] = outbound.hub.errors.list()
    assert catalog.PROFILE_NOT_RESOLVED == entry["Message"]
    assert "words this error" not in entry["Detail"]


def test_order_with_klaviyo_unreachable_carries_both_texts(outbound) -> None:
    """Klaviyo cannot be reached while an order is sent: the catalog's connection error, with the
    Placed Order article's "Klaviyo API temporarily unavailable" in the detail."""
    c, _ = _link_customer(outbound)
    tx = _transaction(outbound.hub, c["Id"])
    env = outbound.with_settings(api_url=_closed_url())
    report = env.push("Transaction", tx["Id"])
    [entry] = env.hub.errors.list()
    assert (PLACED, "error") == (entry["Flow"], entry["Level"])
    assert entry["Message"].startswith(catalog.KLAVIYO_CONNECTION_ERROR)
    assert entry["Detail"].endswith(f'words this error "{catalog.KLAVIYO_UNAVAILABLE_ORDERS}"')
    assert {"failed": 1} == report.summary.to_dict()["flows"][PLACED]


def test_order_with_klaviyo_answering_503_carries_both_texts(outbound_factory) -> None:
    """Klaviyo answers 503 to every call: "Error calling Klaviyo (HTTP 503)", with the Placed Order
    article's "Klaviyo API temporarily unavailable" in the detail."""
    env = outbound_factory(fault_5xx=1.0)
    c = _customer(env.hub)
    env.hub.set_link("Customer", c["Id"], "01HPROFILE0000000000000000")
    tx = _transaction(env.hub, c["Id"])
    env.push("Transaction", tx["Id"])
    [entry] = env.hub.errors.list()
    assert entry["Message"].startswith(f"{catalog.ERROR_CALLING_KLAVIYO} (HTTP 503)")
    assert entry["Detail"].endswith(f'words this error "{catalog.KLAVIYO_UNAVAILABLE_ORDERS}"')


async def test_poll_with_klaviyo_unreachable_carries_both_texts(inbound) -> None:
    """Klaviyo cannot be reached during a poll: the catalog's connection error, with the Klaviyo
    Profile TO Hub article's "Klaviyo temporarily unavailable" in the detail."""
    flow = await inbound.poll(client_options={"base_url": _closed_url()})
    assert flow.error is not None
    [entry] = inbound.hub.errors.list()
    assert entry["Flow"].endswith(" TO Hub")
    assert entry["Message"].startswith(catalog.KLAVIYO_CONNECTION_ERROR)
    assert entry["Detail"].endswith(f'words this error "{catalog.KLAVIYO_UNAVAILABLE_PROFILES}"')
