"""klaviyo-sync serve on a shared PostgreSQL hub: every subscription listed with its counts, each one's
views kept apart, actions refused without a subscription's settings, one serve lock per subscription,
and no secret in any answer or log.  Real `klaviyo-sync serve` processes, a real PostgreSQL server
(``$KLAVIYO_SYNC_TEST_POSTGRES``), three subscriptions seeded through PostgresHub."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from _hub_fixtures import POSTGRES_URL, subscription_name
from test_service import ROOT, TOKEN, Serve

from engine.flows.inbound import POLL_FLOW
from engine.hub import PostgresHub
from engine.hub._postgres import drop_subscription, subscriptions
from engine.service import Service, Subscriptions
from engine.settings import load_settings

KEY_A = "pk_subs_own_000000000001"
KEY_B = "pk_subs_bbb_000000000002"
#: the server trusts loopback, so a password in the URL is accepted and ignored: a canary
CANARY = "pw-canary-5e1f0c"


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{CANARY}@{parts.hostname}:{parts.port or 5432}"))


URL = _with_password(POSTGRES_URL)


@dataclass
class Shared:
    """Three seeded subscriptions, the serve's settings file and the folder of B's settings."""

    a: str
    b: str
    c: str
    settings: Path
    others: Path
    folder: Path


def _settings(path: Path, api_url: str, subscription: str, key: str, *, triggers: bool = False) -> Path:
    trig = "{customer: true, transaction: true}" if triggers else "{customer: false, transaction: false}"
    path.write_text(f"api_url: {api_url}\napi_key: {key}\nhub: {URL}\nsubscription: {subscription}\n"
                    f"poll_interval: 1h\noutbound_triggers: {trig}\nservice:\n  token: ${{SVC_TOKEN}}\n  port: 0\n")
    return path


def _check_server() -> None:
    try:
        subscriptions(POSTGRES_URL, timeout=5)
    except Exception as exc:  # noqa: BLE001 - turned into a clear failure, never a skip
        pytest.fail(f"these tests need the PostgreSQL server at {POSTGRES_URL} ($KLAVIYO_SYNC_TEST_POSTGRES): {exc}")


@pytest.fixture
def shared(sandbox, tmp_path: Path) -> Iterator[Shared]:
    _check_server()
    a, b, c = (subscription_name(x) for x in ("own", "bravo", "charlie"))
    with PostgresHub(URL, subscription=a, outbound_triggers={"Customer"}) as hub:
        hub.add_customer({"EmailAddress": "a1@example.com", "CustomerNumber": "A-1"})
    with PostgresHub(URL, subscription=b, outbound_triggers={"Customer", "Transaction"}) as hub:
        b1 = hub.add_customer({"EmailAddress": "b1@example.com", "CustomerNumber": "B-1", "FirstName": "Bravo"})["Id"]
        hub.add_customer({"EmailAddress": "b2@example.com", "CustomerNumber": "B-2"})
        hub.upsert_transaction({"TransactionNumber": "SO-B1", "CustomerId": b1, "EmailAddress": "b1@example.com",
                                "Total": 5.0, "Lines": [{"Sku": "S", "Qty": 1, "UnitPrice": 5.0}]})
        hub.set_link("Customer", b1, "01BRAVO0000000000000000000")
        hub.errors.log("Add Klaviyo Profile FROM Hub", "bravo record broken", code="K001", entity="Customer",
                       hub_id=b1)
    with PostgresHub(URL, subscription=c) as hub:
        for i in (1, 2, 3):
            hub.add_customer({"EmailAddress": f"c{i}@example.com", "CustomerNumber": f"C-{i}", "FirstName": "Charlie"})
        hub.errors.log("Add Klaviyo Profile FROM Hub", "charlie record broken", code="K001", entity="Customer",
                       hub_id=1)
        hub.errors.log("Add Klaviyo Profile FROM Hub", "charlie second failure", code="K002", entity="Customer",
                       hub_id=2)
        hub.set_cursor("profiles", '{"watermark": "2024-01-01T00:00:00+00:00"}')
    folder = tmp_path / "subscriptions"
    folder.mkdir()
    others = _settings(folder / "bravo.yaml", sandbox.url, b, KEY_B, triggers=True)
    settings = _settings(tmp_path / "klaviyo-sync.yaml", sandbox.url, a, KEY_A)
    try:
        yield Shared(a, b, c, settings, others, folder)
    finally:
        for name in (a, b, c):
            drop_subscription(POSTGRES_URL, name)


def _serve(settings: Path, *args: str) -> Serve:
    os.environ.setdefault("SVC_TOKEN", TOKEN)
    return Serve(settings, *args)


def _run(settings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings), "SVC_TOKEN": TOKEN, "KLAVIYO_API_KEY": ""}
    return subprocess.run([sys.executable, "-m", "engine", "serve", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60)


@contextmanager
def _sign_in(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, follow_redirects=False, timeout=10) as browser:
        login = browser.get("/login")
        assert 303 == browser.post("/login", data={"csrf": _csrf(login.text), "token": TOKEN, "next": "/"}).status_code
        yield browser


def _csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def _no_secret(*texts: str) -> None:
    joined = "\n".join(texts)
    for secret in (KEY_A, KEY_B, TOKEN, CANARY):
        assert secret not in joined, f"a secret ({secret[:6]}...) was shown"


def test_the_api_and_page_list_every_subscription_with_its_counts(shared: Shared) -> None:
    """GET /api/subscriptions lists the three with their counts, last poll and what this serve may do."""
    serve = _serve(shared.settings, "--no-sync", "--subscriptions", str(shared.folder))
    texts: list[str] = []
    try:
        listing = serve.api("GET", "/api/subscriptions")
        texts.append(listing.text)
        assert 200 == listing.status_code
        body = listing.json()
        assert (shared.a, True) == (body["own"], body["shared"])
        assert "***" in body["hub"] and CANARY not in body["hub"]
        rows = {r["name"]: r for r in body["subscriptions"]}
        assert {shared.a, shared.b, shared.c} <= set(rows)
        assert {"customers": 1, "transactions": 0, "links": 0, "queue_length": 1, "unresolved_errors": 0,
                "unresolved_warnings": 0} == rows[shared.a]["counts"]
        assert {"customers": 2, "transactions": 1, "links": 1, "queue_length": 3, "unresolved_errors": 1,
                "unresolved_warnings": 0} == rows[shared.b]["counts"]
        assert {"customers": 3, "transactions": 0, "links": 0, "queue_length": 0, "unresolved_errors": 2,
                "unresolved_warnings": 0} == rows[shared.c]["counts"]
        assert (None, None) == (rows[shared.a]["last_poll"], rows[shared.b]["last_poll"])
        assert rows[shared.c]["last_poll"]
        assert [(True, True, True), (False, True, True), (False, False, False)] == \
            [(rows[n]["own"], rows[n]["settings"], rows[n]["actions"]) for n in (shared.a, shared.b, shared.c)]
        one = serve.api("GET", f"/api/subscriptions/{shared.c}")
        assert (200, 3) == (one.status_code, one.json()["counts"]["customers"])
        missing = serve.api("GET", "/api/subscriptions/nosuchsubscription/errors")
        assert (404, "V404") == (missing.status_code, missing.json()["error"]["code"])
        assert "GET /api/subscriptions lists them" in missing.json()["error"]["message"]
        with _sign_in(serve.url) as browser:
            page = browser.get("/subscriptions")
            texts.append(page.text)
        assert 200 == page.status_code
        for name, customers in ((shared.a, 1), (shared.b, 2), (shared.c, 3)):
            row = re.search(rf'id="subscription-{name}".*?</tr>', page.text, re.S).group(0)
            assert f'<td class="num customers">{customers}</td>' in row
        assert "read-only (no settings)" in re.search(rf'id="subscription-{shared.c}".*?</tr>', page.text, re.S).group(0)
    finally:
        rc, out, err, _ = serve.stop()
    assert 0 == rc, err
    _no_secret(*texts, out, err)


def test_one_subscriptions_views_never_show_anothers_records_or_errors(shared: Shared) -> None:
    """Customer 1 and the error log of each subscription, by API and by page, are that subscription's own."""
    serve = _serve(shared.settings, "--no-sync")
    texts: list[str] = []
    try:
        emails = {name: serve.api("GET", f"/api/subscriptions/{name}/customers/1").json()["EmailAddress"]
                  for name in (shared.a, shared.b, shared.c)}
        assert {shared.a: "a1@example.com", shared.b: "b1@example.com", shared.c: "c1@example.com"} == emails
        assert "a1@example.com" == serve.api("GET", "/api/customers/1").json()["EmailAddress"]
        assert 404 == serve.api("GET", f"/api/subscriptions/{shared.c}/transactions/1").status_code
        errors_b = serve.api("GET", f"/api/subscriptions/{shared.b}/errors").json()
        errors_c = serve.api("GET", f"/api/subscriptions/{shared.c}/errors").json()
        assert ["bravo record broken"] == [e["Message"] for e in errors_b["entries"]]
        assert ["charlie second failure", "charlie record broken"] == [e["Message"] for e in errors_c["entries"]]
        assert 0 == serve.api("GET", "/api/errors").json()["total"]
        status = serve.api("GET", f"/api/subscriptions/{shared.c}/status").json()
        assert (shared.c, False, False) == (status["subscription"], status["actions"], status["syncing"])
        texts += [str(errors_b), str(errors_c), str(status)]
        with _sign_in(serve.url) as browser:
            page_b = browser.get(f"/s/{shared.b}/errors").text
            page_c = browser.get(f"/s/{shared.c}/errors").text
            record = browser.get(f"/s/{shared.c}/records/customer/1").text
            own = browser.get("/records/customer/1").text
            texts += [page_b, page_c, record, own]
        assert "bravo record broken" in page_b and "charlie record" not in page_b
        assert "charlie record broken" in page_c and "bravo record" not in page_c
        assert f'href="/s/{shared.c}/records/customer/1"' in page_c
        assert "c1@example.com" in record and "b1@example.com" not in record and "a1@example.com" not in record
        assert "a1@example.com" in own and "c1@example.com" not in own
    finally:
        rc, out, err, _ = serve.stop()
    assert 0 == rc, err
    _no_secret(*texts, out, err)


def test_actions_need_the_subscriptions_settings(shared: Shared) -> None:
    """Writes, resolve and Manual Sync on a subscription without settings are refused 403 and change nothing;
    with its settings from --subscriptions they are carried out."""
    serve = _serve(shared.settings, "--no-sync", "--subscriptions", str(shared.folder))
    texts: list[str] = []
    try:
        refused = [serve.api("POST", f"/api/subscriptions/{shared.c}/errors/1/resolve"),
                   serve.api("POST", f"/api/subscriptions/{shared.c}/customers",
                             json={"EmailAddress": "new@example.com", "CustomerNumber": "N-1"}),
                   serve.api("POST", f"/api/subscriptions/{shared.c}/sync/push", json={"entity": "customer", "id": 1}),
                   serve.api("POST", f"/api/subscriptions/{shared.c}/errors/2/retry")]
        texts += [r.text for r in refused]
        assert [(403, "V403")] * 4 == [(r.status_code, r.json()["error"]["code"]) for r in refused]
        assert f"subscription {shared.c} is read-only in this serve" in refused[0].json()["error"]["message"]
        assert "--subscriptions DIR" in refused[0].json()["error"]["message"]
        counts = serve.api("GET", f"/api/subscriptions/{shared.c}").json()["counts"]
        assert (3, 2) == (counts["customers"], counts["unresolved_errors"])
        with _sign_in(serve.url) as browser:
            page = browser.get(f"/s/{shared.c}/errors")
            assert 'class="resolve"' not in page.text, "a read-only subscription's page offers actions"
            forged = browser.post(f"/s/{shared.c}/errors/1/resolve", data={"csrf": _csrf(page.text)},
                                  headers={"accept": "text/html"})
            assert (403, True) == (forged.status_code, "read-only in this serve" in forged.text)
            page_b = browser.get(f"/s/{shared.b}/errors")
            assert 'class="resolve"' in page_b.text
            done = browser.post(f"/s/{shared.b}/errors/1/resolve", data={"csrf": _csrf(page_b.text)})
            assert (303, f"/s/{shared.b}/errors?record=1&all=1") == (done.status_code, done.headers["location"])
            texts += [page.text, forged.text, page_b.text]
        assert 2 == serve.api("GET", f"/api/subscriptions/{shared.c}").json()["counts"]["unresolved_errors"]
        assert 0 == serve.api("GET", f"/api/subscriptions/{shared.b}").json()["counts"]["unresolved_errors"]
        written = serve.api("POST", f"/api/subscriptions/{shared.b}/customers",
                            json={"EmailAddress": "b3@example.com", "CustomerNumber": "B-3"})
        assert (201, 4) == (written.status_code, written.json()["queue_length"])  # B's triggers queue it
    finally:
        rc, out, err, _ = serve.stop()
    assert 0 == rc, err
    _no_secret(*texts, out, err)
    with PostgresHub(URL, subscription=shared.c) as hub:
        assert hub.find_customer_by_email("new@example.com") is None


def test_the_serve_lock_is_per_subscription_and_freed_by_sigkill(shared: Shared, tmp_path: Path) -> None:
    """A second syncing serve of a subscription exits 2 (V001) naming the first's pid; another subscription's
    serve and a --no-sync serve start beside it; after SIGKILL of the first a new serve starts."""
    first = _serve(shared.settings)
    try:
        second = _run(shared.settings)
        assert 2 == second.returncode
        assert f"V001 another klaviyo-sync serve (pid {first.proc.pid} on " in second.stderr
        assert f"is already running on the hub subscription {shared.a}" in second.stderr
        assert "Traceback" not in second.stderr
        _no_secret(second.stdout, second.stderr)
        other = _serve(_settings(tmp_path / "b.yaml", "http://127.0.0.1:9", shared.b, KEY_B))
        front = _serve(shared.settings, "--no-sync")
        try:
            assert 200 == other.api("GET", "/healthz").status_code
            assert 200 == front.api("GET", "/healthz").status_code
        finally:
            for s in (other, front):
                rc, out, err, _ = s.stop()
                assert 0 == rc, err
                _no_secret(out, err)
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.communicate(timeout=15)
    again = _serve(shared.settings)
    rc, out, err, _ = again.stop()
    assert 0 == rc, err
    _no_secret(out, err)


def test_bad_subscriptions_folders_are_refused_clearly(shared: Shared, tmp_path: Path) -> None:
    """--subscriptions with a SQLite hub, a missing folder or two files of one subscription exits 2 with the reason."""
    sqlite = tmp_path / "sqlite.yaml"
    sqlite.write_text(f"api_key: {KEY_A}\nhub: hub.db\nservice:\n  port: 0\n")
    no_pg = _run(sqlite, "--subscriptions", str(shared.folder))
    missing = _run(shared.settings, "--subscriptions", str(tmp_path / "nowhere"))
    (shared.folder / "copy.yaml").write_text(shared.others.read_text())
    twice = _run(shared.settings, "--subscriptions", str(shared.folder))
    assert [2, 2, 2] == [no_pg.returncode, missing.returncode, twice.returncode]
    assert "--subscriptions needs a shared PostgreSQL hub" in no_pg.stderr
    assert "is not a folder of settings files" in missing.stderr
    assert f"bravo.yaml and copy.yaml both hold the settings of subscription {shared.b}" in twice.stderr \
        or f"copy.yaml and bravo.yaml both hold the settings of subscription {shared.b}" in twice.stderr
    for proc in (no_pg, missing, twice):
        assert "Traceback" not in proc.stderr
        _no_secret(proc.stdout, proc.stderr)


async def test_other_subscriptions_hubs_are_reused_and_the_least_recently_used_closed(shared: Shared) -> None:
    """With keep_open 1 a hub is reused while open, the least recently used idle one is closed, one in use never."""
    own = Service(load_settings(shared.settings, env={"SVC_TOKEN": TOKEN}))
    subs = Subscriptions(own, keep_open=1)
    try:
        async with subs.use(shared.b) as first:
            async with subs.use(shared.b) as again:
                assert first is again
            async with subs.use(shared.c):
                assert [shared.b, shared.c] == subs.open_names()  # B is in use: kept over the cap
            assert [shared.b] == subs.open_names()  # C was the only one idle
        async with subs.use(shared.c):
            pass
        assert [shared.c] == subs.open_names()  # B, least recently used and idle, is closed
        async with subs.use(shared.a) as mine:
            assert mine is own
        assert [shared.c] == subs.open_names()
    finally:
        await subs.close()
        await own.stop()
    assert [] == subs.open_names()


def test_a_sqlite_hub_lists_its_one_subscription(sandbox, tmp_path: Path) -> None:
    """On a SQLite hub /api/subscriptions lists the serve's one subscription; another name is 404."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {sandbox.url}\napi_key: {KEY_A}\nhub: hub.db\npoll_interval: 1h\n"
                    "service:\n  token: ${SVC_TOKEN}\n  port: 0\n")
    serve = _serve(path)
    try:
        body = serve.api("GET", "/api/subscriptions").json()
        assert (False, "default", ["default"]) == (body["shared"], body["own"], [r["name"] for r in body["subscriptions"]])
        assert (0, True) == (body["subscriptions"][0]["counts"]["customers"], body["subscriptions"][0]["syncing"])
        assert 200 == serve.api("GET", "/api/subscriptions/default/queue").status_code
        assert 404 == serve.api("GET", "/api/subscriptions/other/queue").status_code
    finally:
        rc, _, err, _ = serve.stop()
    assert 0 == rc, err


def test_a_no_sync_serve_refuses_to_retry_a_poll_it_does_not_run(shared: Shared) -> None:
    """serve --no-sync answers 422 to the retry of a poll's error-log entry (the workers' next poll retries it)."""
    with PostgresHub(URL, subscription=shared.a) as hub:
        entry = hub.errors.log(POLL_FLOW, "the poll failed: boom", code="V500")
    serve = _serve(shared.settings, "--no-sync")
    try:
        queue = serve.api("GET", "/api/queue").json()
        assert (1, False) == (queue["length"], queue["dispatching"])
        retry = serve.api("POST", f"/api/errors/{entry}/retry")
        assert (422, "V422") == (retry.status_code, retry.json()["error"]["code"])
        assert "this serve does not poll subscription" in retry.json()["error"]["message"]
    finally:
        rc, out, err, _ = serve.stop()
    assert 0 == rc, err
    assert "stopped cleanly" in out and "cursor saved" not in out


CHROMIUM = Path("/usr/bin/chromium")


def _browser_api():  # type: ignore[no-untyped-def]
    """Playwright's sync API, as tests/test_service_browser.py requires it (a failure in CI, else a skip)."""
    required = os.environ.get("KLAVIYO_SYNC_REQUIRE_BROWSER") == "1"
    if not CHROMIUM.exists():
        if required:
            raise RuntimeError(f"{CHROMIUM} is missing and KLAVIYO_SYNC_REQUIRE_BROWSER=1: install Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    if required:
        import playwright.sync_api as sync_api  # a missing Playwright fails CI instead of skipping

        return sync_api
    return pytest.importorskip("playwright.sync_api")


def test_the_browser_switches_subscriptions_and_sees_each_ones_records(shared: Shared) -> None:
    """Subscriptions page -> B's error log and record; the switcher -> C's error log and record, never B's."""
    sync_api = _browser_api()
    serve = _serve(shared.settings, "--no-sync", "--subscriptions", str(shared.folder))
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(serve.url + "/subscriptions")
                assert "/login" in page.url
                page.fill("input[name=token]", TOKEN)
                page.click("button:has-text('Sign in')")
                assert page.inner_text("h1").startswith("Subscriptions")
                for name, customers in ((shared.a, "1"), (shared.b, "2"), (shared.c, "3")):
                    assert customers == page.inner_text(f"#subscription-{name} td.customers")
                assert "read-only" in page.inner_text(f"#subscription-{shared.c} td.mode")
                page.click(f"#subscription-{shared.b} a.name")
                assert shared.b in page.inner_text("h1")
                page.click("nav >> text=Error Logs")
                row = page.locator("tr.entry").first
                assert "bravo record broken" == row.locator(".message").inner_text()
                assert 1 == page.locator("tr.entry").count()
                row.locator("a.record").click()
                assert "b1@example.com" in page.inner_text("#record")
                page.click("#switcher summary")
                page.click(f"#switcher a[data-subscription={shared.c}]")
                assert shared.c == page.inner_text("#current-subscription")
                assert page.inner_text("#read-only").startswith("Read-only")
                page.click("nav >> text=Error Logs")
                messages = page.locator("tr.entry .message").all_inner_texts()
                assert ["charlie second failure", "charlie record broken"] == messages
                assert 0 == page.locator("button.resolve").count(), "a read-only subscription offers actions"
                page.locator("tr.entry a.record").last.click()
                record = page.inner_text("#record")
                assert "c1@example.com" in record and "b1@example.com" not in record
                _no_secret(page.content())
            finally:
                browser.close()
    finally:
        rc, out, err, _ = serve.stop(signal.SIGTERM)
    assert 0 == rc, err
    _no_secret(out, err)
