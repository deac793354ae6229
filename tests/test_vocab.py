"""The vocabulary module agrees with the schema, the hub and both readers of the destination table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from engine import vocab
from engine.collection import load_collections
from engine.collection.load import SCHEMA_PATH
from engine.hub import _records
from engine.payloads import event_request, profile_request

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


KEYS = [
    (vocab.Direction, ("properties", "direction")),
    (vocab.HubEntity, ("properties", "hub_entity")),
    (vocab.KlaviyoResource, ("properties", "klaviyo_resource")),
    (vocab.Action, ("properties", "action")),
    (vocab.CollectionStatus, ("properties", "status")),
    (vocab.OnMissing, ("properties", "on_missing")),
    (vocab.RowType, ("$defs", "row", "properties", "type")),
    (vocab.Importance, ("$defs", "row", "properties", "importance")),
    (vocab.ExpectedType, ("$defs", "row", "properties", "expect")),
]


@pytest.mark.parametrize(("literal", "where"), KEYS, ids=[where[-1] for _, where in KEYS])
def test_collection_keys_are_the_schema_enums(literal: object, where: tuple[str, ...]) -> None:
    """Each Literal holds exactly the values the collection schema allows for its key, in order."""
    node = SCHEMA
    for step in where:
        node = node[step]
    assert node["enum"] == list(get_args(literal))


@pytest.mark.parametrize(("entity", "table"), [
    ("Customer", _records.CUSTOMER_FIELDS), ("CustomerAddress", _records.ADDRESS_FIELDS),
    ("Transaction", _records.TRANSACTION_FIELDS), ("TransactionLine", _records.LINE_FIELDS),
])
def test_hub_records_have_the_hub_fields(entity: str, table: dict) -> None:
    """Each hub record TypedDict has the fields the hub's own checks accept, no more."""
    assert list(table) == list(vocab.HUB_RECORDS[entity].__annotations__)


def _event_collection(tmp_path: Path, extra_rows: str) -> Path:
    text = (ROOT / "collections" / "add-placed-order-event-from-hub.yaml").read_text(encoding="utf-8")
    (tmp_path / "order.yaml").write_text(text + extra_rows, encoding="utf-8")
    return tmp_path / "order.yaml"


def test_value_currency_is_an_event_property_to_the_compiler_and_the_payload_builder(tmp_path: Path) -> None:
    """ValueCurrency has no meaning of its own: the compiler accepts it as a property name and the
    payload builder sends it among the event properties."""
    report = load_collections([_event_collection(tmp_path, "  - type: static\n    destination: ValueCurrency\n"
                                                           "    value: USD\n")])
    assert [] == report.errors
    assert "ValueCurrency" not in vocab.EVENT_KEYS
    request = event_request({"ProfileId": "P", "MetricName": "M", "UniqueId": "1", "ValueCurrency": "USD"})
    assert {"ValueCurrency": "USD"} == request.properties


def test_a_dotted_event_destination_names_the_event_keys_of_the_table(tmp_path: Path) -> None:
    """The compiler's message lists the event keys the payload builder gives a meaning, and only those."""
    report = load_collections([_event_collection(tmp_path, "  - type: static\n    destination: Order.Currency\n"
                                                           "    value: USD\n")])
    (error,) = report.errors
    assert ("C011", "unknown destination 'Order.Currency'; event destinations are single names: "
            + ", ".join(sorted(vocab.EVENT_KEYS)) + " or a property name") == (error.code, error.message)


def test_every_profile_destination_of_the_table_validates_and_reaches_the_request(tmp_path: Path) -> None:
    """Each profile attribute and location field is a valid destination and a request attribute; the
    flags become lists and consent."""
    text = (ROOT / "collections" / "add-profile-from-hub.yaml").read_text(encoding="utf-8")
    text = text[:text.index("rows:\n") + len("rows:\n")]
    dests = ([*sorted(vocab.PROFILE_ATTRIBUTES)] + [f"location.{f}" for f in sorted(vocab.LOCATION_FIELDS)]
             + ["properties.Custom", "LIST_Newsletter", "UCLIST_Preview", "SubscribeProfile"])
    text += "".join(f"  - type: static\n    destination: {d}\n    value: false\n" for d in dests)
    (tmp_path / "profile.yaml").write_text(text, encoding="utf-8")
    report = load_collections([tmp_path])
    assert [] == report.errors
    payload = {d: "x" for d in vocab.PROFILE_ATTRIBUTES}
    payload.update({"location": {"city": "Boston"}, "LIST_Newsletter": True, "UCLIST_Preview": True,
                    "SubscribeProfile": True})
    request = profile_request(payload)
    assert set(vocab.PROFILE_ATTRIBUTES) | {"location"} == set(request.attributes)
    assert (("Newsletter",), ("Preview",), "subscribe") == (request.subscribe_lists, request.add_lists,
                                                            request.consent)


@pytest.mark.parametrize(("destination", "expected"), [
    ("LIST_VIP", ("LIST_", "VIP")), ("UCLIST_Preview List", ("UCLIST_", "Preview List")), ("LIST_", ("LIST_", "")),
    ("SubscribeProfile", None), ("email", None), ("ULIST_x", None),
])
def test_list_flag_splits_a_list_destination(destination: str, expected: tuple[str, str] | None) -> None:
    """LIST_ / UCLIST_ destinations split into their prefix and list name; others are not list flags."""
    assert expected == vocab.list_flag(destination)
