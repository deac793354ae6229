"""Drives Klaviyo's official Python SDK (``klaviyo-api``) against a sandbox; run in a subprocess.

Usage: ``python -S tests/_sdk_driver.py <sandbox url> <api key>`` with ``PYTHONPATH`` set to the
directory the SDK release was installed into (``scripts/setup`` puts them in
``.cache/sdk/<revision>``).  ``-S`` keeps the project's virtualenv out, so the SDK runs
with its own pinned dependencies (6.x needs pydantic 1, 24.x pydantic 2).  Nothing here
imports the engine.

The SDK's own revision decides what is exercised: the operations the engine uses at that
revision.  Each step prints one JSON line ``{"step": ..., "ok": true, "detail": ...}``; a
step whose call raises (the SDK could not build the request or parse the answer) prints
``"ok": false`` with the exception.  The exit status is 0 when every step passed.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from typing import Any


def _plain(value: Any) -> Any:
    """An SDK answer as JSON-able data (pydantic v2 models, v1 dicts)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def main(url: str, key: str) -> int:
    import klaviyo_api
    from klaviyo_api import KlaviyoAPI

    revision = KlaviyoAPI._REVISION
    new = revision >= "2024-10-15"
    kl = KlaviyoAPI(key, max_delay=0.1, max_retries=1, test_host=url)
    failures = 0
    state: dict[str, Any] = {}

    def step(name: str, call: Callable[[], Any], check: Callable[[Any], Any] | None = None) -> None:
        nonlocal failures
        try:
            answer = call()
            detail = check(answer) if check else None
            print(json.dumps({"step": name, "ok": True, "detail": detail}, default=str), flush=True)
        except Exception as exc:  # reported to the test, which fails on it
            failures += 1
            print(json.dumps({"step": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:4000],
                              "trace": traceback.format_exc()[-3000:]}), flush=True)

    def get(obj: Any, *path: str) -> Any:
        for p in path:
            obj = obj[p] if isinstance(obj, dict) else getattr(obj, p)
        return obj

    print(json.dumps({"step": "sdk", "ok": True, "detail": {
        "revision": revision, "version": getattr(klaviyo_api, "__version__", None)}}), flush=True)
    P, L, E, M = kl.Profiles, kl.Lists, kl.Events, kl.Metrics
    profile = {"data": {"type": "profile", "attributes": {
        "email": "sdk@example.com", "first_name": "Sdk", "location": {"city": "Boston"}, "properties": {"tier": "gold"}}}}

    def created(answer: Any) -> Any:
        state["pid"] = get(answer, "data", "id")
        return state["pid"]

    step("create_profile", lambda: P.create_profile(profile), created)
    step("get_profile", lambda: P.get_profile(state["pid"], additional_fields_profile=["subscriptions"]),
         lambda a: get(a, "data", "attributes", "email"))
    step("get_profiles", lambda: P.get_profiles(filter='equals(email,"sdk@example.com")'),
         lambda a: [get(p, "id") for p in get(a, "data")])
    patch = {"data": {"type": "profile", "id": "", "attributes": {"last_name": "Kit"}}}

    def update() -> Any:
        patch["data"]["id"] = state["pid"]
        return P.update_profile(state["pid"], patch)

    step("update_profile", update, lambda a: get(a, "data", "attributes", "last_name"))

    def made_list(answer: Any) -> Any:
        state["lid"] = get(answer, "data", "id")
        return state["lid"]

    step("create_list", lambda: L.create_list({"data": {"type": "list", "attributes": {"name": "SDK"}}}), made_list)
    step("get_lists", lambda: L.get_lists(), lambda a: [get(x, "attributes", "name") for x in get(a, "data")])
    members = lambda: {"data": [{"type": "profile", "id": state["pid"]}]}  # noqa: E731
    if new:
        step("add_profiles_to_list", lambda: L.add_profiles_to_list(state["lid"], members()))
        step("get_profiles_for_list", lambda: L.get_profiles_for_list(state["lid"]),
             lambda a: [str(get(p, "attributes", "joined_group_at")) for p in get(a, "data")])
        step("get_profile_ids_for_list", lambda: L.get_profile_ids_for_list(state["lid"]),
             lambda a: [get(p, "id") for p in get(a, "data")])
    else:
        step("create_list_relationships", lambda: L.create_list_relationships(state["lid"], members()))
        step("get_list_profiles", lambda: L.get_list_profiles(state["lid"]),
             lambda a: [str(get(p, "attributes", "joined_group_at")) for p in get(a, "data")])
        step("get_list_relationships_profiles", lambda: L.get_list_relationships_profiles(state["lid"]),
             lambda a: [get(p, "id") for p in get(a, "data")])
    consent: dict[str, Any] = {"email": "sdk@example.com"}
    sub = lambda kind, extra: {"data": {"type": f"profile-subscription-bulk-{kind}-job", "attributes": {  # noqa: E731
        **extra, "profiles": {"data": [{"type": "profile", "attributes": consent}]}},
        "relationships": {"list": {"data": {"type": "list", "id": state["lid"]}}}}}
    if new:
        consent["subscriptions"] = {"email": {"marketing": {"consent": "SUBSCRIBED"}}}
        step("bulk_subscribe_profiles", lambda: P.bulk_subscribe_profiles(sub("create", {"custom_source": "sdk"})))
        consent["subscriptions"] = {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}
        step("bulk_unsubscribe_profiles", lambda: P.bulk_unsubscribe_profiles(sub("delete", {})))
    else:
        step("subscribe_profiles", lambda: P.subscribe_profiles(sub("create", {"custom_source": "sdk"})))
        step("unsubscribe_profiles", lambda: P.unsubscribe_profiles(sub("delete", {})))
    event = {"data": {"type": "event", "attributes": {
        "properties": {"OrderId": "sdk-1"}, "time": "2024-05-01T10:00:00+00:00", "value": 9.5, "unique_id": "sdk-1",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": "sdk@example.com"}}}}}}
    step("create_event", lambda: E.create_event(event))
    step("get_events", lambda: E.get_events(include=["metric", "profile"]),
         lambda a: [get(x, "attributes", "event_properties") for x in get(a, "data")])
    step("get_metrics", lambda: M.get_metrics(), lambda a: [get(x, "attributes", "name") for x in get(a, "data")])
    if new:
        step("create_or_update_profile", lambda: P.create_or_update_profile(
            {"data": {"type": "profile", "attributes": {"email": "sdk@example.com", "title": "Dr"}}}),
            lambda a: get(a, "data", "attributes", "title"))
        bulk = {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": [
            {"type": "event-bulk-create", "attributes": {
                "profile": {"data": {"type": "profile", "attributes": {"email": "sdk@example.com"}}},
                "events": {"data": [{"type": "event", "attributes": {
                    "properties": {"n": 1}, "time": "2024-05-02T10:00:00+00:00", "unique_id": "sdk-b1",
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Bulk"}}}}}]}}}]}}}}
        step("bulk_create_events", lambda: E.bulk_create_events(bulk))
        job = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "bulk-sdk@example.com"}}]}},
            "relationships": {"lists": {"data": [{"type": "list", "id": ""}]}}}}

        def import_job() -> Any:
            job["data"]["relationships"]["lists"]["data"][0]["id"] = state["lid"]
            return P.bulk_import_profiles(job)

        def job_id(answer: Any) -> Any:
            state["jid"] = get(answer, "data", "id")
            return get(answer, "data", "attributes", "status")

        step("bulk_import_profiles", import_job, job_id)
        step("get_bulk_import_profiles_job", lambda: P.get_bulk_import_profiles_job(state["jid"]),
             lambda a: get(a, "data", "attributes", "status"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
