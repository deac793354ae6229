"""The one E.164 rule: the record's country, the default_phone_region setting, linear cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.collection import load_collections
from engine.errors import SettingsErrors
from engine.formula.helpers import MAX_PHONE_LENGTH, e164, phone_region
from engine.hub import SqliteHub
from engine.runner import OK, Runner
from engine.settings import load_settings

ADD_PROFILE = "Add Klaviyo Profile FROM Hub"


def _customer(phone: str, country: str | None) -> dict[str, object]:
    address: dict[str, object] = {"Id": 7, "Address1": "1 High St", "City": "London", "IsPrimaryBilling": True}
    if country is not None:
        address["Country"] = country
    return {"Id": 42, "EmailAddress": "ada@example.com", "CustomerNumber": "C42", "Phone": phone,
            "Addresses": [address]}


@pytest.fixture(scope="module")
def shipped():
    """The shipped collections."""
    report = load_collections()
    assert [] == report.errors
    return report.collections


@pytest.mark.parametrize("country", ["GB", "gb", "GBR", "United Kingdom"])
def test_national_number_uses_the_billing_country(shipped, country: str) -> None:
    """'020 7946 0018' with a GB primary billing address becomes +442079460018 in the profile."""
    out = Runner(shipped).run(ADD_PROFILE, _customer("020 7946 0018", country), with_children=False)
    assert OK == out.status
    assert "+442079460018" == out.payload["phone_number"]


def test_without_a_country_the_setting_decides(shipped) -> None:
    """A national number and no billing country is read in the default_phone_region setting."""
    record = _customer("020 7946 0018", None)
    assert "phone_number" not in Runner(shipped).run(ADD_PROFILE, record, with_children=False).payload
    out = Runner(shipped, settings={"default_phone_region": "GB"}).run(ADD_PROFILE, record, with_children=False)
    assert "+442079460018" == out.payload["phone_number"]


def test_a_plus_number_ignores_the_country(shipped) -> None:
    """A number written with + is read as written, whatever the billing country."""
    out = Runner(shipped).run(ADD_PROFILE, _customer("+1 415 555 2671", "GB"), with_children=False)
    assert "+14155552671" == out.payload["phone_number"]


def test_an_oversized_phone_is_refused_with_a_warning(shipped) -> None:
    """A 20,000-character Phone is refused before parsing: phone_number is left out, the profile
    still maps, and the outcome carries warning W010 at the row."""
    out = Runner(shipped).run(ADD_PROFILE, _customer("1" * 20_000, "US"), with_children=False)
    assert OK == out.status
    assert "phone_number" not in out.payload
    [warning] = out.warnings
    assert "W010" == warning.code
    assert "20000 characters is longer than 64" in warning.message
    assert warning.location.file.endswith("add-profile-from-hub.yaml") and warning.location.line


@pytest.mark.parametrize("phone", ["1" * (MAX_PHONE_LENGTH + 1), "(" * 30_000 + "1", "1 " * 40_000])
def test_e164_refuses_long_or_crafted_input(phone: str) -> None:
    """Inputs longer than the bound are None without reaching the parser."""
    assert None is e164(phone)


@pytest.mark.parametrize("phone,country,default,expected", [
    ("(415) 555-2671", None, None, "+14155552671"),
    ("020 7946 0018", "GB", None, "+442079460018"),
    ("020 7946 0018", None, "GB", "+442079460018"),
    ("020 7946 0018", "Atlantis", "GB", "+442079460018"),
    ("030 901820", "Germany", None, "+4930901820"),
    ("N/A", "GB", None, None),
    ("C-1001", None, None, None),
    (4155552671, None, None, "+14155552671"),
    (["+14155552671"], None, None, None),
])
def test_e164_reads_the_country_then_the_default(phone, country, default, expected) -> None:
    """e164() uses the country (code or name), then the default region, then US."""
    assert expected == e164(phone, country, default)


def test_phone_region_accepts_codes_and_names() -> None:
    """Country codes and names resolve to phonenumbers regions; unknown text is None."""
    assert ("GB", "GB", "DE", None, None) == (phone_region("gb"), phone_region("United Kingdom"),
                                             phone_region("DEU"), phone_region("Atlantis"), phone_region("x" * 100))


def test_hub_phone_matching_uses_the_same_rule(tmp_path: Path) -> None:
    """A Customer stored with a national number and a GB billing address is found by the E.164
    number, and a national number is matched in the country it is given with."""
    hub = SqliteHub(tmp_path / "hub.db")
    try:
        stored, _ = hub.upsert_customer(_customer("020 7946 0018", "GB"))
        assert stored["Id"] == hub.find_customer_by_phone("+442079460018")["Id"]
        assert stored["Id"] == hub.find_customer_by_phone("020 7946 0018", "United Kingdom")["Id"]
        assert None is hub.find_customer_by_phone("020 7946 0018")
    finally:
        hub.close()


def test_default_phone_region_setting(tmp_path: Path) -> None:
    """default_phone_region defaults to US, is what formulas see, and must be a known region."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text("name: x\n")
    assert "US" == load_settings(path).default_phone_region
    path.write_text("default_phone_region: gb\n")
    settings = load_settings(path)
    assert "GB" == settings.default_phone_region
    assert "GB" == settings.for_formulas()["default_phone_region"]
    path.write_text("default_phone_region: XX\n")
    with pytest.raises(SettingsErrors) as info:
        load_settings(path)
    assert "default_phone_region" in str(info.value) and "US or GB" in str(info.value)
