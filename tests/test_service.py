"""klaviyo-sync serve as a real process: continuous dispatch, the poll schedule, one serve per hub,
clean stops on SIGTERM and SIGINT, and SIGTERM / SIGKILL at random moments under load."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.hub import SqliteHub
from engine.klaviyo import KlaviyoClient

ROOT = Path(__file__).resolve().parent.parent
KEY = "pk_service_000000000001"
TOKEN = "svc-token-0123456789"


def write_settings(folder: Path, url: str, *, poll: str = "1s", triggers: bool = True, extra: str = "") -> Path:
    path = folder / "klaviyo-sync.yaml"
    trig = "{customer: true, transaction: true}" if triggers else "{customer: false, transaction: false}"
    path.write_text(f"api_url: {url}\napi_key: {KEY}\nhub: hub.db\npoll_interval: {poll}\n"
                    f"outbound_triggers: {trig}\nservice:\n  token: ${{SVC_TOKEN}}\n  port: 0\n{extra}")
    return path


class Serve:
    """One `klaviyo-sync serve` child process and its URL."""

    def __init__(self, settings: Path, *args: str) -> None:
        env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings), "KLAVIYO_API_KEY": "", "SVC_TOKEN": TOKEN}
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", *args], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.search(r"listening on (http://\S+)", line)
        if not match:
            out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"serve did not start: {line}{out}{err}")
        self.url = match.group(1)

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10, **kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, str, str, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err, time.monotonic() - started


def read_klaviyo(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with KlaviyoClient(base_url=url, api_key=KEY, timeout=10.0) as kl:
            return [p async for p in kl.iter_profiles(page_size=100)], await kl.get_events()

    return asyncio.run(main())


def customer(i: int) -> dict[str, Any]:
    return {"EmailAddress": f"svc{i}@example.com", "CustomerNumber": f"S-{i}", "FirstName": f"F{i}"}


def transaction(i: int, cust: int) -> dict[str, Any]:
    return {"TransactionNumber": f"SO-{i}", "CustomerId": cust, "EmailAddress": f"svc{cust}@example.com",
            "Total": 10.0, "Lines": [{"Sku": "A", "Description": "a", "Qty": 1, "UnitPrice": 10.0,
                                      "ExtendedPrice": 10.0}]}


def test_a_change_written_to_the_hub_reaches_the_sandbox_within_two_seconds(sandbox, tmp_path: Path) -> None:
    """A Customer written straight into the hub file (not through the API) is in Klaviyo within 2 s."""
    settings = write_settings(tmp_path, sandbox.url)
    serve = Serve(settings)
    try:
        hub = SqliteHub(tmp_path / "hub.db", outbound_triggers={"Customer"})
        try:
            written = time.monotonic()
            hub.add_customer(customer(1))
        finally:
            hub.close()
        arrived = None
        while time.monotonic() - written < 5:
            if any(p["attributes"]["email"] == "svc1@example.com" for p in sandbox.state.profiles.values()):
                arrived = time.monotonic() - written
                break
            time.sleep(0.05)
        assert arrived is not None, "the change never reached the sandbox"
        assert arrived < 2.0, f"the change took {arrived:.2f}s"
    finally:
        rc, _, err, _ = serve.stop()
    assert 0 == rc, err


def test_the_poll_runs_on_its_schedule_with_the_poll_cursor(sandbox, tmp_path: Path) -> None:
    """Profiles made in Klaviyo after the service started become hub Customers at the next poll."""
    settings = write_settings(tmp_path, sandbox.url, triggers=False)
    serve = Serve(settings)
    try:
        time.sleep(1.5)  # the first poll has run
        sandbox.state.add_profile(email="later@example.org", first_name="Later")
        deadline = time.monotonic() + 8
        found = None
        while time.monotonic() < deadline and found is None:
            errors = serve.api("GET", "/api/status").json()
            if errors["counts"]["customers"]:
                found = errors
            time.sleep(0.2)
        assert found is not None, "the profile never reached the hub"
        assert ["profiles"] == list(found["cursors"])
    finally:
        rc, out, err, _ = serve.stop(signal.SIGINT)
    assert 0 == rc, err
    assert "stopped cleanly, cursor saved" in out
    hub = SqliteHub(tmp_path / "hub.db")
    try:
        assert hub.find_customer_by_email("later@example.org") is not None
        assert hub.get_cursor("profiles") is not None
    finally:
        hub.close()


def test_a_second_serve_on_the_same_hub_refuses_to_start(sandbox, tmp_path: Path) -> None:
    """The second serve exits 2 naming the running one's pid; the first goes on serving."""
    settings = write_settings(tmp_path, sandbox.url)
    first = Serve(settings)
    try:
        env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings), "SVC_TOKEN": TOKEN}
        second = subprocess.run([sys.executable, "-m", "engine", "serve"], cwd=ROOT, env=env, text=True,
                                capture_output=True, timeout=60)
        assert 2 == second.returncode
        assert f"V001 another klaviyo-sync serve (pid {first.proc.pid}) is already running on this hub" in second.stderr
        assert "Traceback" not in second.stderr
        assert 200 == first.api("GET", "/healthz").status_code
    finally:
        rc, _, err, _ = first.stop()
    assert 0 == rc, err


def test_a_non_loopback_host_without_a_token_is_refused(sandbox, tmp_path: Path) -> None:
    """serve --host 0.0.0.0 with no service.token exits 2 with V002 and binds nothing."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(f"api_url: {sandbox.url}\napi_key: {KEY}\nhub: hub.db\n")
    env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(path)}
    proc = subprocess.run([sys.executable, "-m", "engine", "serve", "--host", "0.0.0.0", "--port", "0"], cwd=ROOT,
                          env=env, text=True, capture_output=True, timeout=60)
    assert 2 == proc.returncode
    assert "V002 refusing to listen on 0.0.0.0: a non-loopback address needs service.token" in proc.stderr


def _load(serve: Serve, start: int, n: int) -> None:
    for i in range(start, start + n):
        serve.api("POST", "/api/customers", json=customer(i))
        serve.api("POST", "/api/transactions", json=transaction(i, i))


def _count_exactly_once(url: str, n: int) -> None:
    profiles, events = read_klaviyo(url)
    emails = [p["attributes"].get("email") for p in profiles]
    assert len(emails) == len(set(emails)), "a profile was duplicated"
    assert {f"svc{i}@example.com" for i in range(1, n + 1)} <= set(emails), "a profile was lost"
    keys = [(e["included"]["metric"]["attributes"]["name"], e["attributes"]["event_properties"].get("$event_id"))
            for e in events]
    assert len(keys) == len(set(keys)), "an event was recorded twice"
    placed = {k for m, k in keys if m == "Placed Order"}
    assert n == len(placed), "a Placed Order was lost"
    assert n == sum(1 for m, _ in keys if m == "Ordered Product")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_at_random_moments_under_load_loses_and_duplicates_nothing(sandbox_factory, tmp_path: Path,
                                                                           sig: int) -> None:
    """Records written through the API while the service is stopped (SIGTERM, or SIGKILL) at random
    moments and restarted all reach Klaviyo once; a SIGTERM exits 0 within 10 s every time."""
    rnd = random.Random(sig)
    sandbox = sandbox_factory(latency_ms=20, seed=int(sig))
    for i in range(15):
        sandbox.state.add_profile(email=f"kl{i}@example.org", first_name=f"K{i}")
    settings = write_settings(tmp_path, sandbox.url)
    written = 0
    for _ in range(3):
        serve = Serve(settings, "--lease", "1")
        _load(serve, written + 1, 8)
        written += 8
        time.sleep(rnd.uniform(0.05, 0.8))
        rc, _, err, took = serve.stop(sig)
        if sig == signal.SIGTERM:
            assert (0, True) == (rc, took < 10), err
            assert "Traceback" not in err
        time.sleep(1.1)  # a killed service's leases run out
    serve = Serve(settings)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and serve.api("GET", "/api/queue").json()["length"]:
            time.sleep(0.2)
        assert 0 == serve.api("GET", "/api/queue").json()["length"]
    finally:
        rc, _, err, _ = serve.stop()
    assert 0 == rc, err
    _count_exactly_once(sandbox.url, written)
    hub = SqliteHub(tmp_path / "hub.db")
    try:
        for i in range(15):  # the inbound side too: every Klaviyo profile reached the hub once
            assert hub.find_customer_by_email(f"kl{i}@example.org") is not None
        emails = [c["EmailAddress"] for c in hub.iter_customers()]
        assert len(emails) == len(set(emails))
        assert json.loads(json.dumps(hub.get_cursor("profiles"))) is not None
    finally:
        hub.close()


def test_serve_counts_a_failed_send_as_an_attempt_of_its_change(tmp_path: Path) -> None:
    """serve's dispatch gives back a change whose send failed for a reason that may pass with the attempt
    counted, as dispatch does (it used to raise TypeError there, undoing the record's log entries)."""
    from engine.service._runtime import _ClaimTracker

    hub = SqliteHub(tmp_path / "hub.db", outbound_triggers={"Customer"})
    hub.add_customer({"EmailAddress": "retry@example.com", "CustomerNumber": "R-1"})
    tracker = _ClaimTracker(hub)
    [change] = tracker.claim_changes()
    tracker.release_change(change, delay=0.0, failed=True)
    assert (1, {}) == (hub.pending_changes()[0].attempts, tracker.held)
