"""The Klaviyo client against the local sandbox over real HTTP, at both supported revisions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from engine.catalog import ERROR_CALLING_KLAVIYO
from engine.errors import KlaviyoApiError
from engine.klaviyo import KlaviyoClient
from engine.sandbox import SandboxHandle

REVISIONS = ["2023-10-15", "2026-07-15"]


@pytest.fixture(params=REVISIONS)
async def kl(request: pytest.FixtureRequest, sandbox: SandboxHandle, sandbox_api_key: str) -> AsyncIterator[KlaviyoClient]:
    async with KlaviyoClient(base_url=sandbox.url, api_key=sandbox_api_key, revision=request.param,
                             backoff_base=0.01) as client:
        yield client


async def test_create_profile_returns_new_id_then_existing_id_on_409(kl: KlaviyoClient) -> None:
    """A second create with the same email resolves the 409 duplicate to the first id."""
    pid, created = await kl.create_profile({"email": "ann@example.com", "first_name": "Ann"})
    again, created_again = await kl.create_profile({"email": "ANN@example.com"})
    assert (pid, True) == (again and pid, created)
    assert (pid, False) == (again, created_again)


async def test_get_profile_reads_attributes_and_none_for_unknown(kl: KlaviyoClient) -> None:
    """get_profile returns the stored attributes, and None for an id Klaviyo does not know."""
    pid, _ = await kl.create_profile({"email": "bo@example.com", "location": {"city": "Oslo"}})
    got = await kl.get_profile(pid)
    assert got is not None
    assert ("bo@example.com", "Oslo") == (got["attributes"]["email"], got["attributes"]["location"]["city"])
    assert None is await kl.get_profile("01NOTAPROFILE0000000000000")


async def test_update_profile_changes_only_what_it_mentions(kl: KlaviyoClient) -> None:
    """PATCH leaves unmentioned fields alone and clears a field sent as null."""
    pid, _ = await kl.create_profile({"email": "cy@example.com", "first_name": "Cy", "title": "Chef",
                                      "properties": {"a": 1, "b": 2}})
    await kl.update_profile(pid, {"first_name": None, "last_name": "Ray", "properties": {"b": 3}}, unset=["a"])
    attrs = (await kl.get_profile(pid) or {})["attributes"]
    assert (None, "Ray", "Chef", {"b": 3}) == (attrs["first_name"], attrs["last_name"], attrs["title"], attrs["properties"])


async def test_create_or_update_profile_follows_the_revision(kl: KlaviyoClient) -> None:
    """profile-import upserts at 2026-07-15; at 2023-10-15 it is absent and upsert_profile falls back."""
    pid, _ = await kl.create_profile({"email": "di@example.com"})
    result = await kl.create_or_update_profile({"email": "di@example.com", "title": "Boss"})
    if kl.supports("profile_import"):
        assert (pid, False) == result
    else:
        assert None is result
    assert (pid, False) == await kl.upsert_profile({"email": "di@example.com", "organization": "Acme"})
    attrs = (await kl.get_profile(pid) or {})["attributes"]
    assert "Acme" == attrs["organization"]


async def test_find_profiles_by_email_and_phone(kl: KlaviyoClient) -> None:
    """find_profiles matches email case-insensitively and a phone number with its plus sign."""
    pid, _ = await kl.create_profile({"email": "ed@example.com", "phone_number": "+14155550100"})
    await kl.create_profile({"email": "other@example.com"})
    assert [pid] == [p["id"] for p in await kl.find_profiles(email="Ed@Example.com")]
    assert [pid] == [p["id"] for p in await kl.find_profiles(phone_number="+14155550100")]
    assert [] == await kl.find_profiles(email="nobody@example.com")


async def test_iter_profile_pages_follows_next_links_in_updated_order(kl: KlaviyoClient, sandbox: SandboxHandle) -> None:
    """Polling with greater-than(updated) and sort=updated pages through every profile once."""
    ids = {sandbox.state.add_profile(email=f"p{i}@example.com") for i in range(7)}
    pages = [page async for page in kl.iter_profile_pages(
        filter="greater-than(updated,2020-01-01T00:00:00Z)", sort="updated", page_size=3,
        additional_fields=["subscriptions"])]
    seen = [p["id"] for page in pages for p in page]
    assert [3, 3, 1] == [len(p) for p in pages]
    assert ids == set(seen) and len(seen) == 7
    assert "subscriptions" in pages[0][0]["attributes"]
    assert [] == [p async for p in kl.iter_profiles(filter="greater-than(updated,2999-01-01T00:00:00Z)")]


async def test_list_lookup_and_membership(kl: KlaviyoClient, sandbox: SandboxHandle) -> None:
    """A list is found by name, and profiles are added to and removed from it."""
    lid = sandbox.state.add_list("VIP")
    a, _ = await kl.create_profile({"email": "fa@example.com"})
    b, _ = await kl.create_profile({"email": "fb@example.com"})
    found = await kl.find_list_by_name("VIP")
    assert lid == (found or {}).get("id")
    assert None is await kl.find_list_by_name("No such list")
    await kl.add_profiles_to_list(lid, [a, b])
    assert {a, b} == {p["id"] for p in await kl.get_list_profiles(lid)}
    await kl.remove_profiles_from_list(lid, [a])
    assert [b] == [p["id"] for p in await kl.get_list_profiles(lid)]


async def test_subscribe_and_unsubscribe_change_consent(kl: KlaviyoClient, sandbox: SandboxHandle) -> None:
    """Subscription jobs set SUBSCRIBED on email and SMS; unsubscribing from the list takes the profile off
    that list with a list suppression; unsubscribing without a list withdraws email consent."""
    lid = sandbox.state.add_list("Newsletter")
    pid, _ = await kl.create_profile({"email": "gi@example.com", "phone_number": "+14155550111"})
    await kl.subscribe_profiles([{"email": "gi@example.com", "phone_number": "+14155550111"}], list_id=lid)
    subs = (await kl.get_profile(pid, additional_fields=["subscriptions"]) or {})["attributes"]["subscriptions"]
    assert ("SUBSCRIBED", "SUBSCRIBED") == (subs["email"]["marketing"]["consent"], subs["sms"]["marketing"]["consent"])
    assert [pid] == [p["id"] for p in await kl.get_list_profiles(lid)]
    await kl.unsubscribe_profiles([{"email": "gi@example.com"}], list_id=lid, channels=("email",))
    subs = (await kl.get_profile(pid, additional_fields=["subscriptions"]) or {})["attributes"]["subscriptions"]
    assert ("SUBSCRIBED", [lid]) == (subs["email"]["marketing"]["consent"],
                                     [s["list_id"] for s in subs["email"]["marketing"]["list_suppressions"]])
    assert [] == await kl.get_list_profiles(lid)
    await kl.unsubscribe_profiles([{"email": "gi@example.com"}], channels=("email",))
    subs = (await kl.get_profile(pid, additional_fields=["subscriptions"]) or {})["attributes"]["subscriptions"]
    assert ("UNSUBSCRIBED", False) == (subs["email"]["marketing"]["consent"],
                                       subs["email"]["marketing"]["can_receive_email_marketing"])
    assert "SUBSCRIBED" == subs["sms"]["marketing"]["consent"]


async def test_create_event_is_recorded_once_per_unique_id(kl: KlaviyoClient) -> None:
    """An event repeated with the same unique_id is recorded once; a new unique_id adds one."""
    pid, _ = await kl.create_profile({"email": "ha@example.com"})
    for _ in range(2):
        await kl.create_event("Placed Order", pid, {"OrderId": "1"}, value=12.5, unique_id="order-1",
                              time="2024-05-01T10:00:00+00:00")
    await kl.create_event("Placed Order", {"email": "ha@example.com"}, {"OrderId": "2"}, unique_id="order-2")
    events = await kl.get_events(filter=f'equals(profile_id,"{pid}")')
    assert ["order-1", "order-2"] == sorted(e["attributes"]["event_properties"]["$event_id"] for e in events)
    assert {"Placed Order"} == {e["included"]["metric"]["attributes"]["name"] for e in events}
    first = next(e for e in events if e["attributes"]["event_properties"]["OrderId"] == "1")
    assert (12.5, "2024-05-01T10:00:00+00:00") == (first["attributes"]["event_properties"]["$value"],
                                                   first["attributes"]["datetime"])


async def test_event_for_new_identifiers_creates_the_profile(kl: KlaviyoClient) -> None:
    """An event naming an unknown email creates that profile."""
    await kl.create_event("Ordered Product", {"email": "new@example.com", "first_name": "Nu"}, {"SKU": "A1"})
    found = await kl.find_profiles(email="new@example.com")
    assert ["Nu"] == [p["attributes"]["first_name"] for p in found]


async def test_rejected_request_gives_catalog_message_with_status_detail_and_pointer(kl: KlaviyoClient) -> None:
    """An invalid email comes back as 'Error calling Klaviyo (HTTP 400): ... [source: pointer]'."""
    with pytest.raises(KlaviyoApiError) as info:
        await kl.create_profile({"email": "not-an-email"})
    err = info.value
    assert (400, "invalid", "/data/attributes/email") == (err.status, err.klaviyo_code, err.pointer)
    assert (f"{ERROR_CALLING_KLAVIYO} (HTTP 400): Invalid email address: not-an-email "
            "[source: /data/attributes/email]") == err.message


async def test_unknown_key_gets_the_authentication_error(sandbox_factory, sandbox_api_key: str) -> None:
    """A key the sandbox was not given is refused with HTTP 401 and the key is not echoed."""
    handle = sandbox_factory(api_keys=(sandbox_api_key,))
    async with KlaviyoClient(base_url=handle.url, api_key="pk_wrong_key_123") as client:
        with pytest.raises(KlaviyoApiError) as info:
            await client.get_profile("x")
    assert 401 == info.value.status
    assert "not_authenticated" == info.value.klaviyo_code
    assert "pk_wrong_key_123" not in str(info.value)


async def test_bulk_profile_import_job_where_the_revision_has_it(kl: KlaviyoClient, sandbox: SandboxHandle) -> None:
    """A bulk import job creates profiles and joins the list (2026-07-15); 2023-10-15 answers 404."""
    lid = sandbox.state.add_list("Imported")
    profiles = [{"email": f"bulk{i}@example.com"} for i in range(3)]
    if not kl.supports("bulk_profile_import"):
        with pytest.raises(KlaviyoApiError) as info:
            await kl.bulk_import_profiles(profiles)
        assert 404 == info.value.status
        return
    job_id = await kl.bulk_import_profiles(profiles, list_ids=[lid])
    job = await kl.get_bulk_import_job(job_id)
    assert ("complete", 3, 0) == (job["attributes"]["status"], job["attributes"]["completed_count"],
                                  job["attributes"]["failed_count"])
    assert 3 == len(await kl.get_list_profiles(lid))
