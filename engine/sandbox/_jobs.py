"""The sandbox's asynchronous job endpoints: consent (subscribe / unsubscribe) and bulk profile import.

Klaviyo answers these with 202 and does the work later; :data:`ROUTES` has the
same shape as :data:`engine.sandbox._handlers.ROUTES`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.sandbox._handlers import Handler, _attrs_and_patch, _data, _state
from engine.sandbox._render import REVISION_KEY, body_response
from engine.sandbox._state import SandboxApiError, invalid, not_found


# -- consent jobs --------------------------------------------------------------------


def _channels(attrs: dict[str, Any], wanted: str) -> list[str]:
    subs = attrs.get("subscriptions")
    if isinstance(subs, dict) and subs:
        out = []
        for ch in ("email", "sms"):
            if ch in subs:
                out.append(ch)
        return out
    return [ch for ch, ident in (("email", "email"), ("sms", "phone_number")) if attrs.get(ident)]


async def subscribe(request: web.Request) -> web.Response:
    state = _state(request)
    data = _data(request)
    attrs = data["attributes"]
    list_id = (((data.get("relationships") or {}).get("list") or {}).get("data") or {}).get("id")
    if list_id:
        state.get_list(list_id)
    with state.lock:
        for i, entry in enumerate(attrs["profiles"]["data"]):
            pattrs = dict(entry.get("attributes") or {})
            chans = _channels(pattrs, "SUBSCRIBED")
            for ch, ident in (("email", "email"), ("sms", "phone_number")):
                if ch in chans and not pattrs.get(ident):
                    raise invalid(f"A {ident} is required to subscribe to {ch}.",
                                  pointer=f"/data/attributes/profiles/data/{i}/attributes/{ident}")
            ident_attrs = {k: v for k, v in pattrs.items() if k in ("email", "phone_number", "external_id")}
            p = state.resolve_profile(entry.get("id"), ident_attrs)
            for ch in chans:
                state.set_consent(p, ch, "SUBSCRIBED", attrs.get("custom_source"))
            if list_id:
                state.change_members(list_id, [p["id"]], add=True)
    return web.Response(status=202)


async def unsubscribe(request: web.Request) -> web.Response:
    state = _state(request)
    data = _data(request)
    with state.lock:
        for entry in data["attributes"]["profiles"]["data"]:
            pattrs = dict(entry.get("attributes") or {})
            pid = None
            for f in ("email", "phone_number"):
                pid = pid or state._index(f, pattrs.get(f))
            if pid is None:
                continue
            for ch in _channels(pattrs, "UNSUBSCRIBED"):
                state.set_consent(state.profiles[pid], ch, "UNSUBSCRIBED", None)
    return web.Response(status=202)


# -- bulk profile import -------------------------------------------------------------


async def bulk_import_profiles(request: web.Request) -> web.Response:
    state = _state(request)
    data = _data(request)
    profiles = data["attributes"]["profiles"]["data"]
    list_ids = [x["id"] for x in (((data.get("relationships") or {}).get("lists") or {}).get("data") or [])]
    for lid in list_ids:
        state.get_list(lid)
    done = failed = 0
    errors: list[dict[str, Any]] = []
    with state.lock:
        for i, entry in enumerate(profiles):
            attrs, patch = _attrs_and_patch(entry, request[REVISION_KEY])
            try:
                p, _ = state.import_profile(attrs, entry.get("id"), patch)
                for lid in list_ids:
                    state.change_members(lid, [p["id"]], add=True)
                done += 1
            except SandboxApiError as exc:
                failed += 1
                errors.append({"index": i, "code": exc.code, "detail": exc.detail})
        job_id = state._ulid()
        now = state.clock().isoformat()
        state.jobs[job_id] = {
            "type": "profile-bulk-import-job", "id": job_id,
            "attributes": {"status": "complete", "total_count": len(profiles), "completed_count": done,
                           "failed_count": failed, "created_at": now, "started_at": now, "completed_at": now},
            "errors": errors,
        }
    return body_response({"data": _job(request, job_id)}, status=202)


def _job(request: web.Request, job_id: str) -> dict[str, Any]:
    job = _state(request).jobs.get(job_id)
    if job is None:
        raise not_found(f"A job with id {job_id} does not exist.")
    from engine.sandbox._render import link

    return {"type": job["type"], "id": job_id, "attributes": dict(job["attributes"]),
            "links": {"self": link(request, "profile-bulk-import-jobs", job_id)}}


async def get_bulk_import_job(request: web.Request) -> web.Response:
    return body_response({"data": _job(request, request.match_info["job_id"])})


# (method, template without trailing slash, handler, tier, capability needed or None)
ROUTES: list[tuple[str, str, Handler, str, str | None]] = [
    ("POST", "/api/profile-subscription-bulk-create-jobs", subscribe, "L", None),
    ("POST", "/api/profile-subscription-bulk-delete-jobs", unsubscribe, "L", None),
    ("POST", "/api/profile-bulk-import-jobs", bulk_import_profiles, "M", "bulk_profile_import"),
    ("GET", "/api/profile-bulk-import-jobs/{job_id}", get_bulk_import_job, "M", "bulk_profile_import"),
]

__all__ = ["ROUTES"]
