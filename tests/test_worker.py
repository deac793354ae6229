"""``klaviyo-sync worker``: real worker processes on a real PostgreSQL jobs database, each
subscription with its own sandbox (a Klaviyo account) over loopback and its own hub.

Each test makes a fresh PostgreSQL database for procrastinate's tables and drops it afterwards.
The kill test runs 4 workers, SIGKILLs and restarts them at random while the subscriptions'
customers and orders are dispatched and their Klaviyo profiles polled, then counts both sides:
one profile per customer, one Placed Order per transaction and one Ordered Product per line in
each sandbox, no duplicate anywhere, every hub queue empty, every polled profile in its hub once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from engine.connect import open_hub
from engine.klaviyo import KlaviyoClient
from engine.sandbox import SandboxHandle
from engine.settings import load_settings
from engine.worker import POLL_STATE

ROOT = Path(__file__).resolve().parent.parent
KEY = "pk_worker_test_000000001"
LISTS = ("Sms Subscribers", "Preview List")


@dataclass
class Shop:
    """One subscription: its settings file, its sandbox and what was seeded on each side."""

    name: str
    file: Path
    sandbox: SandboxHandle
    customers: int
    transactions: int
    seeded: list[str]

    @property
    def profiles(self) -> int:
        return len(self.seeded)

    def hub(self) -> Any:
        return open_hub(load_settings(self.file))

    def klaviyo(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every profile and event of this shop's sandbox, read back through the API."""

        async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            async with KlaviyoClient(base_url=self.sandbox.url, api_key=KEY, timeout=10.0) as kl:
                return [p async for p in kl.iter_profiles(page_size=100)], await kl.get_events()

        return asyncio.run(main())

    def done(self) -> bool:
        """Whether everything has arrived: queue empty, every seeded profile linked in the hub."""
        with self.hub() as hub:
            if hub.queue_length() or not hub.get_state(POLL_STATE):
                return False
            return all(hub.get_hub_id("Customer", pid) is not None for pid in self.seeded)


def make_shop(sandbox_factory: Callable[..., SandboxHandle], folder: Path, name: str, *, customers: int,
              transactions: int, profiles: int, hub: str | None = None, poll_interval: str = "2s", extra: str = "",
              **sandbox: Any) -> Shop:
    """A subscription named ``name``: a sandbox with ``profiles`` profiles, a hub (``hub``: a PostgreSQL
    URL, else a SQLite file beside the folder) with ``customers`` customers and ``transactions`` orders
    of two lines each, all queued."""
    sb = sandbox_factory(**sandbox)
    for list_name in LISTS:
        sb.state.add_list(list_name)
    seeded = [sb.state.add_profile(email=f"kl{i}@{name}.example.org", first_name=f"K{i}") for i in range(profiles)]
    subs = folder / "subscriptions"
    subs.mkdir(exist_ok=True)
    file = subs / f"{name}.yaml"
    file.write_text(f"subscription: {name}\napi_url: {sb.url}\napi_key: {KEY}\nhub: {hub or f'../{name}.db'}\n"
                    f"poll_interval: {poll_interval}\noutbound_triggers: {{customer: true, transaction: true}}\n{extra}")
    shop = Shop(name, file, sb, customers, transactions, seeded)
    with shop.hub() as hub:
        for i in range(1, customers + 1):
            hub.upsert_customer({"EmailAddress": f"c{i}@{name}.example.com", "CustomerNumber": f"C-{i}",
                                 "FirstName": f"F{i}"})
        for t in range(1, transactions + 1):
            hub.upsert_transaction({"TransactionNumber": f"SO-{t}", "CustomerId": 1 + t % customers, "Total": 20.0,
                                    "Lines": [{"Sku": f"S{k}", "Description": "x", "Qty": 1, "UnitPrice": 10.0,
                                               "ExtendedPrice": 10.0} for k in range(2)]})
    return shop


def assert_exactly_once(shop: Shop) -> None:
    """One Klaviyo profile per customer, the expected events once each, every polled profile in the hub once."""
    profiles, events = shop.klaviyo()
    emails = [p["attributes"]["email"] for p in profiles]
    assert len(emails) == len(set(emails)), f"{shop.name}: a Klaviyo profile was duplicated"
    assert {f"c{i}@{shop.name}.example.com" for i in range(1, shop.customers + 1)} <= set(emails)
    assert len(profiles) == shop.customers + shop.profiles
    keys = [(e["included"]["metric"]["attributes"]["name"], e["attributes"]["event_properties"].get("$event_id"))
            for e in events]
    assert len(keys) == len(set(keys)), f"{shop.name}: an event was recorded twice"
    placed = [k for m, k in keys if m == "Placed Order"]
    products = [k for m, k in keys if m == "Ordered Product"]
    assert shop.transactions == len(placed) and 2 * shop.transactions == len(products), (placed, products)
    with shop.hub() as hub:
        assert 0 == hub.queue_length()
        hub_emails = [c["EmailAddress"] for c in hub.iter_customers()]
        assert len(hub_emails) == len(set(hub_emails)), f"{shop.name}: a hub customer was duplicated"
        assert len(hub_emails) == shop.customers + shop.profiles
        for pid in shop.seeded:
            assert hub.get_hub_id("Customer", pid) is not None, f"{shop.name}: profile {pid} never reached the hub"


class Workers:
    """Worker processes on one subscriptions folder and jobs database, their output kept in files."""

    def __init__(self, folder: Path, jobs: str | None, *options: str) -> None:
        self.folder, self.jobs, self.options = folder, jobs, options
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[IO[str]] = []

    def start(self, *, wait: bool = False) -> subprocess.Popen[str]:
        log = (self.folder / f"worker-{len(self.logs)}.log").open("w+")
        self.logs.append(log)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "worker", "--subscriptions", str(self.folder / "subscriptions"),
             *(["--jobs", self.jobs] if self.jobs else []), "--json", *self.options], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE if wait else subprocess.DEVNULL, stderr=log, text=True)
        if wait:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert '"pid"' in line, self.output()
        self.procs.append(proc)
        return proc

    def output(self) -> str:
        text = []
        for log in self.logs:
            log.flush()
            log.seek(0)
            text.append(log.read())
        return "\n---\n".join(text)

    def wait_until(self, done: Callable[[], bool], limit: float) -> None:
        end = time.monotonic() + limit
        while not done():
            assert time.monotonic() < end, f"not done after {limit} s; worker logs:\n{self.output()[-8000:]}"
            time.sleep(0.5)

    def stop_all(self) -> list[int | None]:
        codes = []
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        return codes

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for log in self.logs:
            log.close()


@pytest.fixture
def workers_factory(jobs_url: str, tmp_path: Path) -> Iterator[Callable[..., Workers]]:
    made: list[Workers] = []

    def make(*options: str, jobs: str | None = jobs_url) -> Workers:
        made.append(Workers(tmp_path, jobs, *options))
        return made[-1]

    yield make
    for w in made:
        w.close()


FAST = ("--tick", "1", "--lease", "3", "--batch", "5", "--heartbeat", "0.5", "--stalled-after", "5",
        "--shutdown-timeout", "5")


def test_one_worker_polls_and_dispatches_two_subscriptions(sandbox_factory: Any, tmp_path: Path,
                                                           workers_factory: Callable[..., Workers]) -> None:
    """One worker sends both subscriptions' changes to their own accounts, polls both into their own
    hubs, and stops on SIGTERM with exit 0."""
    shops = [make_shop(sandbox_factory, tmp_path, name, customers=6, transactions=3, profiles=4)
             for name in ("north", "south")]
    workers = workers_factory(*FAST)
    workers.start(wait=True)
    workers.wait_until(lambda: all(s.done() for s in shops), 60)
    assert [0] == workers.stop_all(), workers.output()
    assert "stopped cleanly" in workers.output()
    assert "Traceback" not in workers.output()
    for shop in shops:
        assert_exactly_once(shop)


def test_four_workers_killed_at_random_lose_and_duplicate_nothing(sandbox_factory: Any, tmp_path: Path, jobs_url: str,
                                                                  workers_factory: Callable[..., Workers]) -> None:
    """4 workers SIGKILLed and restarted at random while two subscriptions of one PostgreSQL hub (also
    the jobs database) dispatch and poll: in the end each sandbox holds one profile per customer and
    each event once, queues are empty, and every polled profile is in its hub once."""
    rnd = random.Random(19)
    shops = [make_shop(sandbox_factory, tmp_path, name, customers=100, transactions=60, profiles=60, hub=jobs_url,
                       extra="throttling: {max_concurrency: 2}\n", latency_ms=100) for name in ("east", "west")]
    workers = workers_factory(*FAST, "--concurrency", "3", jobs=None)  # the jobs go to the shared hub's database
    live = [workers.start(wait=True) for _ in range(4)]
    for _ in range(6):  # six kills, each of a running worker, each followed by a restart
        time.sleep(rnd.uniform(0.3, 1.5))
        victim = live.pop(rnd.randrange(len(live)))
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        live.append(workers.start(wait=True))  # up and taking jobs before the next kill
    workers.wait_until(lambda: all(s.done() for s in shops), 60)
    assert "of a stalled worker" in workers.output(), "no kill caught a job in hand: the test proved nothing"
    codes = dict(zip(workers.procs, workers.stop_all(), strict=True))
    assert [0, 0, 0, 0] == [codes[p] for p in live], workers.output()
    assert "Traceback" not in workers.output()
    for shop in shops:
        assert_exactly_once(shop)


def test_bad_arguments_are_one_line_errors(tmp_path: Path, jobs_url: str) -> None:
    """A missing folder, two files naming one subscription, SQLite hubs without --jobs and an
    unreachable jobs database each end with one clear line and a non-zero exit, no traceback."""
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("a", "b"):
        (subs / f"{name}.yaml").write_text(f"subscription: same\napi_key: {KEY}\nhub: {name}.db\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engine", "worker", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, env={**env, "PYTHONPATH": str(ROOT)})

    missing = run("--subscriptions", str(tmp_path / "nowhere"), "--jobs", jobs_url)
    assert (2, "") == (missing.returncode, missing.stdout)
    assert "J001" in missing.stderr and "nowhere" in missing.stderr
    twice = run("--subscriptions", str(subs), "--jobs", jobs_url)
    assert 2 == twice.returncode and "J002" in twice.stderr
    assert str(subs / "a.yaml") in twice.stderr and str(subs / "b.yaml") in twice.stderr
    (subs / "b.yaml").write_text(f"subscription: other\napi_key: {KEY}\nhub: b.db\n")
    no_jobs = run("--subscriptions", str(subs))
    assert 2 == no_jobs.returncode and "J003" in no_jobs.stderr and "--jobs" in no_jobs.stderr
    down = run("--subscriptions", str(subs), "--jobs", "postgresql://root:s3cr3t-pw@127.0.0.1:1/none")
    assert 3 == down.returncode and "J004" in down.stderr and "s3cr3t-pw" not in down.stderr
    for proc in (missing, twice, no_jobs, down):
        assert "Traceback" not in proc.stderr and 1 == len(proc.stderr.strip().splitlines()), proc.stderr
