"""The hub's error log: entries, filters, resolution, and secrets never stored."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from engine import catalog
from engine.errors import HubNotFoundError, HubRecordError
from engine.hub import SqliteHub, redact

OUT = "Add/Update Klaviyo Profile FROM Hub"
IN = "Add Klaviyo Profile TO Hub"


def test_an_entry_keeps_every_part(hub: SqliteHub) -> None:
    """log() stores flow, level, code, message, detail and the ids on both sides."""
    entry_id = hub.errors.log(OUT, catalog.PROFILE_LINK_WARNING, level="warning", entity="Customer",
                              hub_id=7, klaviyo_id="01HXYZ", detail="email bob@example.com", code="K001")
    [entry] = hub.errors.list()
    assert {"Id": entry_id, "Flow": OUT, "Level": "warning", "Code": "K001",
            "Message": catalog.PROFILE_LINK_WARNING, "Detail": "email bob@example.com",
            "Entity": "Customer", "HubId": 7, "KlaviyoId": "01HXYZ", "ResolvedAt": None} == {
        k: v for k, v in entry.items() if k != "At"}


def test_entries_filter_by_flow_level_and_resolution(hub: SqliteHub) -> None:
    """list() filters by flow, level and unresolved, newest first."""
    a = hub.errors.log(OUT, catalog.ERROR_CALLING_KLAVIYO)
    b = hub.errors.log(IN, catalog.EMAIL_REQUIRED)
    c = hub.errors.log(IN, catalog.CUSTOMER_LINK_WARNING, level="warning")
    hub.errors.resolve(b)
    ids = lambda entries: [e["Id"] for e in entries]  # noqa: E731
    assert [c, b, a] == ids(hub.errors.list())
    assert [c, b] == ids(hub.errors.list(flow=IN))
    assert [c] == ids(hub.errors.list(flow=IN, unresolved_only=True))
    assert [b, a] == ids(hub.errors.list(level="error"))
    assert [c] == ids(hub.errors.list(limit=1))


def test_entries_filter_by_code_record_and_text_with_paging(hub: SqliteHub) -> None:
    """The Error Logs page's filters: code, record (hub id or Klaviyo id), text in the message or
    the detail (LIKE wildcards taken literally), with a count and an offset for paging."""
    for i in range(5):
        hub.errors.log("F", f"m{i}", code="K001" if i % 2 else "M001", entity="Customer", hub_id=i,
                       klaviyo_id=f"01K{i}", detail="100% off_sale" if i == 3 else None)
    assert 3 == hub.errors.count(code="M001")
    assert ["m4", "m2", "m0"] == [e["Message"] for e in hub.errors.list(code="M001")]
    assert ["m2"] == [e["Message"] for e in hub.errors.list(code="M001", offset=1, limit=1)]
    assert ["m3"] == [e["Message"] for e in hub.errors.list(record="3")]
    assert ["m1"] == [e["Message"] for e in hub.errors.list(record="01K1")]
    assert ["m3"] == [e["Message"] for e in hub.errors.list(text="% off_")]
    assert 0 == hub.errors.count(text="%x")
    assert {"flows": ["F"], "codes": ["K001", "M001"]} == hub.errors.facets()
    assert ["m2"] == [e["Message"] for e in hub.errors.for_record("Customer", 2)]
    assert ["m4"] == [e["Message"] for e in hub.errors.for_record("Transaction", 99, "01K4")]


def test_resolve_marks_once_and_unknown_ids_fail(hub: SqliteHub) -> None:
    """resolve() stamps the first resolution time; an unknown id raises HubNotFoundError."""
    entry_id = hub.errors.log(OUT, "x")
    first = hub.errors.resolve(entry_id)["ResolvedAt"]
    assert first == hub.errors.resolve(entry_id)["ResolvedAt"]
    with pytest.raises(HubNotFoundError, match="no error log entry with Id 99"):
        hub.errors.resolve(99)


def test_unknown_level_is_refused(hub: SqliteHub) -> None:
    """A level other than error or warning is refused."""
    with pytest.raises(HubRecordError, match="level must be one of error, warning, got 'info'"):
        hub.errors.log(OUT, "x", level="info")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("key pk_0123456789abcdef0123456789abcdef01 rejected", "key ******** rejected"),
        ("Authorization: Bearer eyJhbGciOi.J9.x-y_z", "Authorization: ********"),
        ("header Bearer abc.def", "header Bearer ********"),
        ("Klaviyo-API-Key pk_abc", "Klaviyo-API-Key ********"),
        ('{"refresh_token": "r-123", "ok": 1}', '{"refresh_token": "********", "ok": 1}'),
        ("grant_type=x&client_secret=s3cr3t&code=1", "grant_type=x&client_secret=********&code=1"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact_masks_secret_shapes(text: str, expected: str) -> None:
    """redact() masks API keys, bearer tokens and token fields, and leaves other text alone."""
    assert expected == redact(text)


@pytest.mark.sqlite_only("reads the bytes of the SQLite file")
def test_secrets_never_reach_the_file(hub_factory: Callable[..., SqliteHub]) -> None:
    """Neither a pk_ key nor a configured literal secret is written to the database file."""
    store = hub_factory(secrets=["my-client-secret-value"])
    store.errors.log(OUT, "Error calling Klaviyo with pk_0123456789abcdef",
                     detail="exchange failed for my-client-secret-value")
    path = store.path
    store.close()
    raw = path.read_bytes() + (path.with_name(path.name + "-wal").read_bytes()
                               if path.with_name(path.name + "-wal").exists() else b"")
    assert b"pk_0123456789abcdef" not in raw
    assert b"my-client-secret-value" not in raw
    conn = sqlite3.connect(path)
    assert [("Error calling Klaviyo with ********", "exchange failed for ********")] == conn.execute(
        "SELECT message, detail FROM error_log").fetchall()
    conn.close()
