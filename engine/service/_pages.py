"""The pages: server-rendered HTML from the jinja2 templates in ``templates/``, no JavaScript.

- ``/``: Dashboard (per flow the outcomes of the last hour and day, queue, last poll and
  cursor, Klaviyo calls / retries / 429s, connection method, revision, Generate Events);
  it refreshes itself every 30 s with a ``<meta>`` tag.
- ``/errors``: Error Logs (filters, paging, resolve, retry; each entry links to its record).
- ``/sync``: Manual Sync (pull a profile, push a Customer or Transaction, dry run).
- ``/records/customer/{id}``, ``/records/transaction/{id}``: a record with its Klaviyo links,
  queue state and error-log entries.
- ``/login``, ``/logout``: sessions (see :mod:`._security`).
- ``/subscriptions``: every subscription of the hub with its counts and last poll.

Those pages show the serve's own subscription; the same pages under ``/s/{subscription}/``
(``/s/acme/errors``) show another one, and every page's header has a switcher.  On a
subscription this serve has no settings for, the pages are read-only (no action buttons; a
forged form gets 403).

Every form posts a CSRF token.  Secrets are never passed to a template.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from engine.errors import ForbiddenError, KlaviyoSyncError, ResourceNotFoundError, UnauthorizedError
from engine.flows.summary import OUTCOMES
from engine.service import _api
from engine.service._queries import error_facets, hub_status, record_view, search_errors
from engine.service._security import SID_COOKIE, Guard
from engine.service._subscriptions import Target, acting

ENV = web.AppKey("jinja", jinja2.Environment)
SID = web.RequestKey("sid", str)
FORM = web.RequestKey("form", object)
SCOPE = web.RequestKey("scope", dict)
PAGE_SIZE = 25
PREFIX = "/s/{subscription}"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Scoped = Callable[[web.Request, Target], Awaitable[web.StreamResponse]]
#: the sections a switcher keeps when it moves to another subscription
_SECTIONS = ("/errors", "/sync")


def setup(app: web.Application) -> None:
    env = jinja2.Environment(loader=jinja2.PackageLoader("engine.service", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)
    app[ENV] = env


def _guard(request: web.Request) -> Guard:
    from engine.service.app import GUARD

    return request.app[GUARD]


def _scope(request: web.Request) -> dict[str, Any]:
    """Which subscription a page shows: its name, its path prefix, whether it takes actions, the others."""
    found = request.get(SCOPE)
    if found is not None:
        return dict(found)
    svc = request.app[_api.SERVICE]
    return {"name": svc.subscription, "base": "", "writable": True, "names": [], "section": "",
            "own": svc.subscription}


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    guard = _guard(request)
    sid = request.get(SID) or ""
    scope = _scope(request)
    html = request.app[ENV].get_template(template).render(
        csrf=guard.csrf(sid) if sid else "", signed_in=guard.signed_in(sid), token_set=guard.enabled,
        path=request.path, outcomes=OUTCOMES, scope=scope, base=scope["base"],
        actions=guard.enabled and scope["writable"], **context)
    return web.Response(text=html, status=status, content_type="text/html")


def scoped(handler: Scoped) -> Handler:
    """A page of one subscription: the one in the path (``/s/{subscription}/...``), else the serve's own."""

    async def run(request: web.Request) -> web.StreamResponse:
        subs = request.app[_api.SUBSCRIPTIONS]
        name = request.match_info.get("subscription")
        async with subs.use(name) as target:
            base = "" if name is None else f"/s/{target.subscription}"
            rest = request.path[len(base):] or "/"
            request[SCOPE] = {"name": target.subscription, "base": base, "own": subs.own.subscription,
                              "writable": subs.has_settings(target.subscription), "names": await subs.names(),
                              "section": next((s for s in _SECTIONS if rest.startswith(s)), "")}
            return await handler(request, target)

    run.__name__ = handler.__name__
    return run


def error_page(request: web.Request, err: KlaviyoSyncError, status: int) -> web.Response:
    body = _api_error(err)
    return render(request, "error.html", status=status, status_code=status, err=body)


def _api_error(err: KlaviyoSyncError) -> dict[str, Any]:
    from engine.service.app import error_body

    return error_body(err)


async def guard_page(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Sessions and CSRF for the pages; sets the ``ks_sid`` cookie on a first visit."""
    guard = _guard(request)
    sid = request.cookies.get(SID_COOKIE)
    new_sid = None
    if not sid:
        sid = new_sid = guard.new_sid()
    request[SID] = sid
    if request.method == "POST":
        if not guard.enabled:
            raise ForbiddenError("this page is read-only: set service.token in the settings to use forms")
        form = await request.post()
        request[FORM] = form
        if not guard.csrf_ok(sid, str(form.get("csrf") or "")):
            raise ForbiddenError("the form's CSRF token is missing or stale: reload the page and try again")
        if not guard.signed_in(sid):
            raise UnauthorizedError("sign in first (/login)")
    elif guard.enabled and not guard.signed_in(sid):
        return _redirect("/login?" + urlencode({"next": request.path_qs}), new_sid)
    response = await handler(request)
    _set_sid(response, new_sid)
    return response


def _redirect(location: str, sid: str | None = None) -> web.Response:
    response = web.Response(status=303, headers={"Location": location})
    _set_sid(response, sid)
    return response


def _set_sid(response: web.StreamResponse, sid: str | None) -> None:
    if sid:
        response.set_cookie(SID_COOKIE, sid, httponly=True, samesite="Strict", path="/")


def _form(request: web.Request) -> Any:
    return request.get(FORM) or {}


# -- login ---------------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    return value if value and value.startswith("/") and not value.startswith("//") else "/"


async def login_page(request: web.Request) -> web.StreamResponse:
    guard = _guard(request)
    sid = request.cookies.get(SID_COOKIE) or guard.new_sid()
    request[SID] = sid
    response = render(request, "login.html", next=_safe_next(request.query.get("next")), failed=False)
    _set_sid(response, sid)
    return response


async def login_submit(request: web.Request) -> web.StreamResponse:
    guard = _guard(request)
    sid = request.cookies.get(SID_COOKIE)
    form = await request.post()
    request[SID] = sid or ""
    if not guard.enabled:
        raise ForbiddenError("no service.token is set: there is nothing to sign in to (pages are read-only)")
    if not guard.csrf_ok(sid, str(form.get("csrf") or "")):
        raise ForbiddenError("the form's CSRF token is missing or stale: reload the page and try again")
    if not guard.token_ok(str(form.get("token") or "")):
        return render(request, "login.html", status=401, next=_safe_next(str(form.get("next") or "")), failed=True)
    guard.close_session(sid)
    fresh = guard.new_sid()
    guard.open_session(fresh)
    return _redirect(_safe_next(str(form.get("next") or "")), fresh)


async def logout(request: web.Request) -> web.StreamResponse:
    _guard(request).close_session(request.get(SID))
    return _redirect("/login")


# -- pages ---------------------------------------------------------------------------------


async def dashboard(request: web.Request, svc: Target) -> web.Response:
    data = await svc.db(hub_status, svc.hub_api)
    return render(request, "dashboard.html", status_data=data, info=_api.overview(svc))


async def errors_page(request: web.Request, svc: Target) -> web.Response:
    flt = _api.error_filter(request.query)
    page = max(1, _api.query_int(request, "page", 1, low=1))
    entries, total = await svc.db(search_errors, svc.hub_api, flt, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    facets = await svc.db(error_facets, svc.hub_api)
    query = {k: v for k, v in {"flow": flt.flow, "level": flt.level, "code": flt.code, "record": flt.record,
                               "q": flt.text, "all": "1" if flt.include_resolved else None}.items() if v}
    pages = max(1, -(-total // PAGE_SIZE))

    base = _scope(request)["base"]

    def link(n: int) -> str:
        return f"{base}/errors?" + urlencode({**query, "page": n})

    return render(request, "errors.html", entries=entries, total=total, page=page, pages=pages, flt=flt,
                  facets=facets, prev_link=link(page - 1) if page > 1 else None,
                  next_link=link(page + 1) if page < pages else None, back=f"{base}/errors?" + urlencode(query))


async def resolve_action(request: web.Request, target: Target) -> web.StreamResponse:
    svc = acting(target, "resolving an error-log entry")
    entry = await svc.db(svc.hub_api.errors.resolve, _api.path_id(request))
    back = str(_form(request).get("back") or "")
    base = _scope(request)["base"]
    return _redirect(_safe_next(back) if back else
                     f"{base}/errors?record={entry['HubId'] or entry['KlaviyoId'] or ''}&all=1")


async def retry_action(request: web.Request, target: Target) -> web.Response:
    svc = acting(target, "a retry")
    result = await svc.retry(_api.path_id(request))
    return render(request, "result.html", title="Retry", result=result, ok=result["ok"],
                  back=_safe_next(str(_form(request).get("back") or f"{_scope(request)['base']}/errors")))


async def sync_page(request: web.Request, target: Target) -> web.Response:
    return render(request, "sync.html", result=None, kind=None)


async def sync_pull_action(request: web.Request, target: Target) -> web.Response:
    svc = acting(target, "a Manual Sync")
    pid = str(_form(request).get("profile_id") or "")
    out = await svc.pull(pid)
    return render(request, "sync.html", result=out, kind="pull")


async def sync_push_action(request: web.Request, target: Target) -> web.Response:
    svc = acting(target, "a Manual Sync")
    form = _form(request)
    entity, hub_id, dry = _api.push_args({"entity": form.get("entity"), "id": form.get("id"),
                                          "dry_run": form.get("dry_run") or False})
    report = await svc.push(entity, hub_id, dry_run=dry)
    return render(request, "sync.html", result=report, kind="push", entity=entity, hub_id=hub_id)


async def record_page(request: web.Request, svc: Target) -> web.Response:
    entity = {"customer": "Customer", "transaction": "Transaction"}.get(request.match_info["entity"])
    if entity is None:
        raise ResourceNotFoundError(f"no such record kind: {request.match_info['entity'][:40]!r} "
                                    "(customer or transaction)")
    hub_id = _api.path_id(request)
    view = await svc.db(record_view, svc.hub_api, entity, hub_id)
    if view is None:
        raise ResourceNotFoundError(f"no {entity} with Id {hub_id} in the hub subscription {svc.subscription}")
    return render(request, "record.html", view=view)


async def subscriptions_page(request: web.Request) -> web.Response:
    subs = request.app[_api.SUBSCRIPTIONS]
    rows = await subs.summaries()
    request[SCOPE] = {**_scope(request), "names": [r["name"] for r in rows]}
    return render(request, "subscriptions.html", rows=rows, hub=subs.own.target, shared=subs.own.shared)


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=request.app[ENV].get_template("style.css.html").render(),
                        content_type="text/css")


#: (method, path, handler, name) of the pages of one subscription: served for the own one at
#: the path, and for any one under ``/s/{subscription}``.
SCOPED: list[tuple[str, str, Scoped, str]] = [
    ("GET", "/", dashboard, "dashboard"),
    ("GET", "/errors", errors_page, "errors"),
    ("POST", "/errors/{id}/resolve", resolve_action, "resolvePage"),
    ("POST", "/errors/{id}/retry", retry_action, "retryPage"),
    ("GET", "/sync", sync_page, "sync"),
    ("POST", "/sync/pull", sync_pull_action, "pullPage"),
    ("POST", "/sync/push", sync_push_action, "pushPage"),
    ("GET", "/records/{entity}/{id}", record_page, "record"),
]


# A route table like service/_api.py routes(): data, not logic to share.
def routes() -> list[web.RouteDef]:
    out: list[web.RouteDef] = []
    for method, path, handler, name in SCOPED:
        out.append(web.route(method, path, scoped(handler), name=name))
        out.append(web.route(method, PREFIX + (path if path != "/" else ""), scoped(handler), name=name + "In"))
    out.append(web.route("GET", PREFIX + "/", scoped(dashboard), name="dashboardInSlash"))
    return [
        *out,
        web.get("/subscriptions", subscriptions_page, name="subscriptions"),
        web.get("/login", login_page, name="login"),
        web.post("/login", login_submit, name="loginSubmit"),
        web.post("/logout", logout, name="logout"),
        web.get("/static/style.css", stylesheet, name="style"),
    ]


__all__ = ["error_page", "guard_page", "render", "routes", "setup"]
