"""Emails that differ only in letter case, in both directions: never a silent duplicate, never a silent
move of a link; and the hub refuses an invalid email on every write, saying where.

The choice (docs/hub.md, "Emails and letter case"): the hub's email match stays exact, as the
specification says (seed 002: "Because email matching is exact, addresses that differ only in letter
case or formatting may not match"), and every such case is logged for review with both values:
inbound, a new Customer is added with "Could Not Link to Existing Customer"; outbound, a Customer
whose case twin is already linked is not sent (Klaviyo matches emails ignoring case, so it would
overwrite the twin's profile) and "Could Not Link to Existing Profile" is logged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import catalog
from engine.errors import HubRecordError

ROOT = Path(__file__).resolve().parent.parent


async def test_inbound_profile_lowercased_by_klaviyo_warns_with_both_values(inbound) -> None:
    """Hub 'Mixed.Case@Example.com', Klaviyo 'mixed.case@example.com': a new Customer and the warning."""
    old = inbound.hub.add_customer({"EmailAddress": "Mixed.Case@Example.com", "CustomerNumber": "C-1"})
    pid = inbound.sandbox.state.add_profile(email="Mixed.Case@Example.com")  # Klaviyo lowercases it
    await inbound.poll()
    emails = sorted(c["EmailAddress"] for c in inbound.customers())
    assert ["Mixed.Case@Example.com", "mixed.case@example.com"] == emails
    [entry] = inbound.errors()
    assert ("warning", catalog.CUSTOMER_LINK_WARNING, pid) == (entry["Level"], entry["Message"], entry["KlaviyoId"])
    assert f"Customer {old['Id']} has the email 'Mixed.Case@Example.com'" in entry["Detail"]
    assert "'mixed.case@example.com'" in entry["Detail"]


async def test_inbound_exact_match_links_without_a_warning(inbound) -> None:
    inbound.hub.add_customer({"EmailAddress": "lower@example.com", "CustomerNumber": "C-2"})
    inbound.sandbox.state.add_profile(email="lower@example.com")
    await inbound.poll()
    assert 1 == len(inbound.customers())
    assert [] == inbound.errors()


def test_outbound_case_twin_of_a_linked_customer_is_not_sent(outbound) -> None:
    """Customer 2's email differs from linked Customer 1's only in case: nothing sent, warning, links kept."""
    first = outbound.hub.add_customer({"EmailAddress": "Ann@Example.com", "CustomerNumber": "C-1", "FirstName": "Ann"})
    outbound.dispatch()
    pid = outbound.hub.get_klaviyo_id("Customer", first["Id"])
    second = outbound.hub.add_customer({"EmailAddress": "ann@example.com", "CustomerNumber": "C-2",
                                        "FirstName": "Imposter"})
    report = outbound.dispatch()
    assert {"Add Klaviyo Profile FROM Hub": {"skipped": 1}} == report.summary.to_dict()["flows"]
    assert (pid, None) == (outbound.hub.get_klaviyo_id("Customer", first["Id"]),
                           outbound.hub.get_klaviyo_id("Customer", second["Id"]))
    assert "Ann" == outbound.profile(pid)["attributes"]["first_name"]
    [warning] = outbound.hub.errors.list(level="warning")
    assert (catalog.PROFILE_LINK_WARNING, second["Id"], pid) == (warning["Message"], warning["HubId"],
                                                                 warning["KlaviyoId"])
    assert "'Ann@Example.com'" in warning["Detail"] and "'ann@example.com'" in warning["Detail"]
    assert 0 == outbound.hub.queue_length()


def test_outbound_mixed_case_customer_links_to_klaviyos_lowercased_profile(outbound) -> None:
    """Klaviyo holds the email lowercased; an unlinked Customer with capitals links to it (Klaviyo's match)."""
    pid = outbound.sandbox.state.add_profile(email="bob@example.com")
    c = outbound.hub.add_customer({"EmailAddress": "Bob@Example.com", "CustomerNumber": "C-3"})
    report = outbound.dispatch()
    assert {"Update Klaviyo Profile FROM Hub": {"linked": 1}} == report.summary.to_dict()["flows"]
    assert pid == outbound.hub.get_klaviyo_id("Customer", c["Id"])
    assert [pid] == [p["id"] for p in outbound.all_profiles()]


@pytest.mark.parametrize("email", ["bad-email", "a@b", "two..dots@example.com", "spaces in@example.com"])
def test_hub_writes_refuse_an_invalid_email(hub_factory, email: str) -> None:
    hub = hub_factory()
    with pytest.raises(HubRecordError) as info:
        hub.add_customer({"EmailAddress": email, "CustomerNumber": "C-9"})
    assert catalog.EMAIL_REQUIRED == info.value.message
    assert f"Customer.EmailAddress {email!r} is not a valid email address" in (info.value.detail or "")
    good = hub.add_customer({"EmailAddress": "good@example.com", "CustomerNumber": "C-10"})
    with pytest.raises(HubRecordError):
        hub.update_customer(good["Id"], {"EmailAddress": email})
    with pytest.raises(HubRecordError):
        hub.upsert_transaction({"TransactionNumber": "T-1", "EmailAddress": email})
    assert "good@example.com" == hub.get_customer(good["Id"])["EmailAddress"]


def test_hub_import_names_the_line_of_an_invalid_email_and_keeps_the_rest(tmp_path: Path) -> None:
    lines = [{"EmailAddress": "ok1@example.com", "CustomerNumber": "C-1"},
             {"EmailAddress": "bad-email", "CustomerNumber": "C-2"},
             {"EmailAddress": "ok3@example.com", "CustomerNumber": "C-3"}]
    (tmp_path / "customers.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    env = {k: v for k, v in os.environ.items() if k not in ("KLAVIYO_SYNC_CONFIG", "KLAVIYO_SYNC_HUB")}
    env["PYTHONPATH"] = str(ROOT)
    run = subprocess.run([sys.executable, "-m", "engine", "hub", "import", "customers", "customers.jsonl",
                          "--hub", "hub.db"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    out = run.stdout + run.stderr
    assert "customers.jsonl:2" in out and "An email address is required" in out and "'bad-email'" in out, out
    assert "Traceback" not in out
    listed = subprocess.run([sys.executable, "-m", "engine", "hub", "export", "customers", "--hub", "hub.db"],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert ["ok1@example.com", "ok3@example.com"] == sorted(
        json.loads(x)["EmailAddress"] for x in listed.stdout.splitlines() if x.strip())


@pytest.mark.parametrize("email", [
    "a@example.com", "first.last+tag@sub.example.co.uk", "x@localhost", "y@host.test", "z@a.invalid",
    "o'brien@example.ie", "a..b@example.com", ".a@example.com", "a@-bad.com", "a@b", "ü@example.com",
    "a@exa_mple.com", "a@example.c0m", "a" * 65 + "@example.com", "a@" + "b" * 64 + ".com", "a@xn--bcher-kva.example",
])
def test_the_fast_path_agrees_with_email_validator(email: str) -> None:
    """The hub's quick accept for plain ASCII addresses never accepts what email-validator refuses."""
    from email_validator import EmailNotValidError, validate_email

    from engine.hub._records import _plain_email

    try:
        validate_email(email, check_deliverability=False)
        library = True
    except EmailNotValidError:
        library = False
    assert not (_plain_email(email) and not library), email
