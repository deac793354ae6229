"""A record's failure is that record's alone, through the real CLI in real processes.

One batch holds a record whose mapping builds a 5,000-deep value (from the record's own data, as
an upstream system could send it) and a record with a 20,000-character phone number (the input
that once made ``e164()`` backtrack for seconds). ``dispatch --dry-run``, ``dispatch``, ``map`` and
``poll`` each end that record with its own located error or warning and keep every other record's
result.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.hub import SqliteHub
from engine.klaviyo import KlaviyoClient

ROOT = Path(__file__).resolve().parents[1]
KEY = "pk_isolation_000000000001"

# The remapped organization row: nests Company as deep as the record's own Depth value says.
DEEP_OUTBOUND = """\
  - type: formula
    destination: organization
    formula: |
      x = Company
      for i in range(to_int(get(CustomFields, "Depth", 0))):
          x = [x]
      return x
"""
DEEP_INBOUND = """\
  - type: formula
    destination: Company
    formula: |
      x = organization
      for i in range(to_int(get(properties, "Depth", 0))):
          x = [x]
      return x
"""


def _collections(folder: Path) -> Path:
    target = folder / "collections"
    target.mkdir()
    for f in (ROOT / "collections").glob("*.yaml"):
        (target / f.name).write_text(f.read_text())
    out = target / "add-profile-from-hub.yaml"
    text = out.read_text()
    old = "  - type: field\n    source: Company\n    destination: organization\n"
    assert old in text, "the shipped organization row changed: update this test's edit"
    out.write_text(text.replace(old, DEEP_OUTBOUND))
    inbound = target / "add-profile-to-hub.yaml"
    text = inbound.read_text()
    old = "  - type: formula\n    destination: Company\n    formula: organization\n"
    assert old in text, "the shipped Company row changed: update this test's edit"
    inbound.write_text(text.replace(old, DEEP_INBOUND))
    return target


def _settings(folder: Path, url: str) -> Path:
    path = folder / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {url}\napi_key: {KEY}\nhub: hub.db\ngenerate_events: TRUE\n"
                    f"collections: {_collections(folder)}\n"
                    "outbound_triggers: {customer: true, transaction: false}\n")
    return path


def _cli(settings: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings), "KLAVIYO_API_KEY": ""}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=settings.parent, env=env, text=True,
                          capture_output=True, input=stdin, timeout=180)


def _profiles(url: str) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        async with KlaviyoClient(base_url=url, api_key=KEY, timeout=10.0) as kl:
            return [p async for p in kl.iter_profiles(page_size=100)]

    return asyncio.run(main())


CUSTOMERS = [
    {"EmailAddress": "first@example.com", "CustomerNumber": "1", "Company": "First Co"},
    {"EmailAddress": "deep@example.com", "CustomerNumber": "2", "Company": "Deep Co",
     "CustomFields": {"Depth": 5000}},
    {"EmailAddress": "phone@example.com", "CustomerNumber": "3", "Company": "Phone Co", "Phone": "1" * 20_000},
    {"EmailAddress": "last@example.com", "CustomerNumber": "4", "Company": "Last Co",
     "Phone": "020 7946 0018", "Addresses": [{"Address1": "1 High St", "City": "London", "Country": "GB",
                                               "IsPrimaryBilling": True}]},
]


def _assert_deep_error(text: str) -> None:
    assert "F205" in text and "nested too deeply" in text
    assert "add-profile-from-hub.yaml:5" in text          # file:line of the formula's block
    assert "Traceback" not in text


def test_dispatch_dry_run_and_dispatch_keep_every_other_record(sandbox_factory, tmp_path: Path) -> None:
    sb = sandbox_factory()
    settings = _settings(tmp_path, sb.url)
    records = tmp_path / "customers.jsonl"
    records.write_text("\n".join(json.dumps(c) for c in CUSTOMERS) + "\n")
    imported = _cli(settings, "hub", "import", "customers", str(records))
    assert 0 == imported.returncode, imported.stderr

    dry = _cli(settings, "dispatch", "--dry-run", "--json")
    assert "Traceback" not in dry.stderr
    report = json.loads(dry.stdout)
    flow = report["flows"]["Add Klaviyo Profile FROM Hub"]
    assert 3 == flow.get("created", 0), report            # first, phone, last
    assert 1 == flow.get("invalid", 0) + flow.get("failed", 0), report
    assert [] == _profiles(sb.url), "a dry run wrote to Klaviyo"

    run = _cli(settings, "dispatch", "--json")
    assert "Traceback" not in run.stderr
    profiles = {p["attributes"]["email"]: p["attributes"] for p in _profiles(sb.url)}
    assert {"first@example.com", "phone@example.com", "last@example.com"} == set(profiles)
    assert "First Co" == profiles["first@example.com"]["organization"]
    assert profiles["phone@example.com"].get("phone_number") is None       # omitted, with a warning
    assert "+442079460018" == profiles["last@example.com"]["phone_number"]  # national number, GB billing

    hub = SqliteHub(tmp_path / "hub.db")
    try:
        assert 0 == hub.queue_length()
        log = hub.errors.list(limit=100)
        deep_id = hub.find_customer_by_email("deep@example.com")["Id"]
        deep = [e for e in log if e["HubId"] == deep_id]
        assert deep, log
        _assert_deep_error(" ".join(str(e[k] or "") for e in deep for k in ("Code", "Message", "Detail", "Location")
                                    if k in e))
        assert len(deep[0]["Message"]) < 600
        phone_id = hub.find_customer_by_email("phone@example.com")["Id"]
        warned = [e for e in log if e["HubId"] == phone_id]
        assert warned and "longer than 64" in json.dumps(warned)
        assert hub.get_klaviyo_id("Customer", deep_id) is None
    finally:
        hub.close()


def test_map_ends_the_deep_record_with_its_error_and_maps_the_huge_phone(sandbox_factory, tmp_path: Path) -> None:
    sb = sandbox_factory()
    settings = _settings(tmp_path, sb.url)
    collections = str(tmp_path / "collections")
    deep = _cli(settings, "map", "--collections", collections, "--no-children", "add-profile-from-hub", "-",
                stdin=json.dumps(CUSTOMERS[1]))
    assert 1 == deep.returncode
    assert "Traceback" not in deep.stderr
    [problem] = json.loads(deep.stdout)["problems"]
    assert "F205" == problem["code"] and "nested too deeply" in problem["message"]
    assert problem["file"].endswith("add-profile-from-hub.yaml") and problem["line"] > 50
    assert len(deep.stdout + deep.stderr) < 5000

    phone = _cli(settings, "map", "--collections", collections, "--no-children", "add-profile-from-hub", "-",
                 stdin=json.dumps(CUSTOMERS[2]))
    assert 0 == phone.returncode, phone.stdout + phone.stderr
    assert "longer than 64" in phone.stdout + phone.stderr
    assert "phone@example.com" in phone.stdout
    assert "1" * 100 not in phone.stdout + phone.stderr


def test_poll_stores_every_other_profile_and_moves_on(sandbox_factory, tmp_path: Path) -> None:
    sb = sandbox_factory()
    settings = _settings(tmp_path, sb.url)
    sb.state.add_profile(email="in-first@example.org", organization="A")
    deep_id = sb.state.add_profile(email="in-deep@example.org", organization="B", properties={"Depth": 5000})
    sb.state.add_profile(email="in-last@example.org", organization="C")
    polled = _cli(settings, "poll", "--json")
    assert "Traceback" not in polled.stderr
    hub = SqliteHub(tmp_path / "hub.db")
    try:
        emails = {c["EmailAddress"]: c for c in hub.iter_customers()}
        assert {"in-first@example.org", "in-last@example.org"} <= set(emails)
        assert "in-deep@example.org" not in emails
        assert "A" == emails["in-first@example.org"]["Company"]
        log = hub.errors.list(limit=100)
        assert any(deep_id in json.dumps(e) and "F205" in json.dumps(e) for e in log), log
    finally:
        hub.close()
    again = _cli(settings, "poll", "--json")          # the cursor moved past all three
    assert 0 == again.returncode, again.stderr
    assert "in-first@example.org" not in again.stdout
