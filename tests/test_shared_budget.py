"""The shared rate budget: one Klaviyo budget per account in Redis, for every process sending for it.

Against the real Redis on 127.0.0.1:6379 (each test under its own key prefix and account, cleaned
up after), a Redis server of the test's own for outages and refusals, real worker processes
(``tests/_budget_worker.py``) and a real sandbox enforcing Klaviyo's fixed windows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from engine.connect import open_client
from engine.errors import RateBudgetError
from engine.klaviyo import KlaviyoClient, SharedRateBudget, account_digest
from engine.klaviyo.ratelimit import PACE
from engine.sandbox._server import LIMITER_KEY
from engine.settings import Secret, Settings

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "_budget_worker.py"
REDIS = "redis://127.0.0.1:6379/0"
KEY = "pk_shared_budget_secret_0123"
US = 1e-6  # the script keeps microseconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_up() -> None:
    """The shared Redis must answer; a missing service fails the tests, never skips them."""
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"these tests need Redis on 127.0.0.1:6379 ({exc}); start redis-server")


@pytest.fixture
def prefix(redis_up: None) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    name = f"klaviyo-sync-test:{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def raw(redis_up: None) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS)
    yield client
    await client.aclose()


def _budget(prefix: str, account: str = "acct", **kw: Any) -> SharedRateBudget:
    kw.setdefault("overrides", {"M": {"burst": 2, "steady": 5}})
    return SharedRateBudget(REDIS, account, kw.pop("overrides"), prefix=prefix, **kw)


class _OwnRedis:
    """A redis-server process of the test's own on a free port (to stop, restart or protect)."""

    def __init__(self, *args: str) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("these tests need the redis-server program on PATH")
        self.port = _free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    pytest.fail(f"redis-server exited with {self.proc.returncode}")
                time.sleep(0.05)
        pytest.fail("redis-server did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def own_redis() -> Iterator[_OwnRedis]:
    server = _OwnRedis()
    server.start()
    yield server
    server.stop()


# -- the script's decisions ------------------------------------------------------------------


async def test_the_script_grants_the_burst_then_waits_for_the_burst_and_steady_windows(prefix: str) -> None:
    """Burst 2 / steady 5: two now, the next after the 1.1 s window, the sixth after the 60.5 s one, then evenly."""
    budget = _budget(prefix)
    try:
        got = [await budget.reserve("M") for _ in range(7)]
    finally:
        await budget.aclose()
    at = [r.at - got[0].at for r in got]
    assert (0.0, 0.0) == (got[0].wait, got[1].wait)
    assert at[1] < 0.05
    assert at[2] == pytest.approx(1.1, abs=2 * US)  # 1 s + 2 x margin after the first
    assert at[3] == pytest.approx(at[1] + 1.1, abs=2 * US)
    assert at[5] == pytest.approx(60.5, abs=2 * US)  # 60 s + 10 x margin after the first
    assert at[6] == pytest.approx(60.5 + 12.1, abs=2 * US)  # the window used up: one each 60.5 s / 5 from then on
    assert 60.0 < got[5].wait <= 60.5


async def test_the_script_paces_a_burst_at_nine_tenths_of_the_burst_limit(prefix: str) -> None:
    """After the slack of four gaps, reservations go 1 / (burst x 0.9) apart, until the burst window holds them."""
    budget = _budget(prefix, overrides={"L": {"burst": 10, "steady": 1000}})
    try:
        got = [await budget.reserve("L") for _ in range(12)]
    finally:
        await budget.aclose()
    gap = 1 / (10 * PACE)
    assert all(r.at - got[0].at < gap for r in got[:5])  # the slack: five go at once
    assert [r.at - got[0].at for r in got[5:10]] == pytest.approx([k * gap for k in range(1, 6)], abs=2 * US)
    assert got[10].at - got[0].at == pytest.approx(1.1, abs=2 * US)  # then the burst window: 10 in 1.1 s


async def test_once_the_steady_window_is_used_requests_go_evenly_at_the_steady_rate(prefix: str) -> None:
    """After the first window's burst, reservations are steady window / steady apart, not the burst replayed."""
    budget = _budget(prefix, overrides={"L": {"burst": 10, "steady": 20}}, window_scale=0.1, margin=0.01)
    try:
        got = [await budget.reserve("L") for _ in range(30)]
    finally:
        await budget.aclose()
    step = 6.1 / 20
    assert got[19].at - got[0].at < 1.0  # the fresh bucket: 20 at the burst pace
    assert got[20].at - got[0].at == pytest.approx(6.1, abs=2 * US)
    spacing = [b.at - a.at for a, b in zip(got[20:], got[21:], strict=False)]
    assert spacing == pytest.approx([step] * 9, abs=2 * US)


async def test_window_scale_shrinks_the_windows_and_the_pace(prefix: str) -> None:
    """window_scale multiplies Klaviyo's 1 s and 60 s windows and the pace; the margins stay in seconds."""
    budget = _budget(prefix, window_scale=0.1, margin=0.01)
    assert budget.windows("M") == pytest.approx((0.12, 6.1, 0.1 / (2 * PACE), 0.4 / (2 * PACE)))
    try:
        got = [await budget.reserve("M") for _ in range(6)]
    finally:
        await budget.aclose()
    assert got[2].at - got[0].at == pytest.approx(0.12, abs=2 * US)
    assert got[5].at - got[0].at == pytest.approx(6.1, abs=2 * US)


async def test_a_different_account_has_its_own_budget(prefix: str) -> None:
    """Account A's used-up burst does not hold back account B's first request."""
    a, b = _budget(prefix, "shop-a"), _budget(prefix, "shop-b")
    try:
        for _ in range(2):
            await a.reserve("M")
        assert (await a.reserve("M")).wait > 1.0
        assert 0.0 == (await b.reserve("M")).wait
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_keys_expire_and_hold_only_times(prefix: str, raw: aioredis.Redis) -> None:
    """The log and pace keys are named by account and tier, expire after the steady window, and hold only digits."""
    budget = _budget(prefix, account_digest(KEY))
    try:
        for _ in range(3):
            await budget.reserve("M")
    finally:
        await budget.aclose()
    keys = sorted(k.decode() for k in await raw.keys(f"{prefix}:*"))
    log_key = f"{prefix}:{account_digest(KEY)}:M"
    assert [log_key, log_key + ":pace"] == keys
    for key in keys:
        ttl = await raw.pttl(key)
        assert 60_500 <= ttl <= 62_600, (key, ttl)  # the steady window after the last reservation, + 1 s
    pace = {k.decode(): v.decode() for k, v in (await raw.hgetall(log_key + ":pace")).items()}
    assert {"due", "last", "tokens"} == set(pace)
    values = [v.decode() for v in await raw.lrange(log_key, 0, -1)] + list(pace.values())
    assert len(values) == 6 and all(re.fullmatch(r"\d+(\.\d+)?", v) for v in values)
    assert KEY not in " ".join(keys + values)


async def test_the_log_is_trimmed_to_the_longest_limit(prefix: str, raw: aioredis.Redis) -> None:
    """The log keeps only the last max(burst, steady) reservations: it never grows with the run."""
    budget = _budget(prefix, overrides={"L": {"burst": 50, "steady": 8}})
    try:
        for _ in range(80):
            await budget.reserve("L")
    finally:
        await budget.aclose()
    assert 50 == await raw.llen(f"{prefix}:acct:L")


# -- several processes, one account ----------------------------------------------------------


def _workers(mode: str, configs: list[dict[str, Any]], timeout: float = 120) -> list[dict[str, Any]]:
    """Run one worker process per config, start them together, and collect each one's JSON line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(WORKER), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) for _ in configs]
    try:
        for proc, cfg in zip(procs, configs, strict=True):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(cfg) + "\n")
            proc.stdin.flush()
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert "ready" == line.strip(), proc.stderr.read() if proc.stderr else line
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert 0 == proc.returncode, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _most_in_any_window(stamps: list[float], length: float) -> int:
    """The most stamps in any interval of ``length`` (so in any fixed window of it, wherever it starts)."""
    stamps = sorted(stamps)
    best, lo = 0, 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= length:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


@pytest.mark.slow
def test_three_processes_on_one_account_never_exceed_its_windows_and_use_all_of_it(prefix: str) -> None:
    """Three processes' reservations: at most burst per 1 s and steady per 60 s (scaled), and every steady window full."""
    scale, margin, burst, steady = 0.05, 0.005, 4, 20
    cfg = {"url": REDIS, "prefix": prefix, "account": "three-procs", "tiers": {"M": {"burst": burst, "steady": steady}},
           "scale": scale, "margin": margin, "tier": "M", "count": steady}
    stamps = sorted(t for r in _workers("reserve", [cfg] * 3) for t in r["stamps"])
    assert 3 * steady == len(stamps)
    bwin, swin = scale + 2 * margin, 60 * scale + 10 * margin
    # no interval as long as Klaviyo's windows (scaled), plus the margin, holds more than the tier
    assert burst == _most_in_any_window(stamps, bwin - 2 * US)
    assert steady == _most_in_any_window(stamps, swin - 2 * US)
    for length, limit in ((scale, burst), (60 * scale, steady)):
        fixed = Counter(int(t // length) for t in stamps)
        assert max(fixed.values()) <= limit
    # the full steady budget is handed out: request 20k goes exactly one steady window after request 20(k-1)
    assert [stamps[steady * k] - stamps[0] for k in (1, 2)] == pytest.approx([swin, 2 * swin], abs=0.002)


@pytest.mark.slow
def test_four_clients_in_four_processes_draw_one_budget_and_get_no_429(prefix: str, sandbox_factory: Any) -> None:
    """Four processes' KlaviyoClients on one key and one shared budget: the sandbox answers no 429, near the ceiling."""
    scale, steady = 0.1, 20
    handle = sandbox_factory(rate_limits=True, rate_window_scale=scale, api_keys=(KEY,),
                             tiers={"XL": {"burst": 1, "steady": steady}})
    cfg = {"url": REDIS, "prefix": prefix, "account": account_digest(KEY), "tiers": {"XL": {"burst": 1, "steady": steady}},
           "scale": scale, "base_url": handle.url, "api_key": KEY, "count": 18, "concurrency": 4}
    stats = _workers("events", [{**cfg, "worker": n} for n in range(4)])
    limiter = handle.server.app[LIMITER_KEY]
    assert 0 == handle.options.counters.get("429", 0)
    assert [0] * 4 == [s["total_retries"] for s in stats]
    assert 72 == sum(s["total_requests"] for s in stats)
    windows = sorted((idx, n) for (_, tier, kind, idx), n in limiter.counts.items() if tier == "XL" and kind == "s")
    assert 72 == sum(n for _, n in windows)
    full = [n for _, n in windows[1:-1]]  # the first starts with a full budget, the last is cut short
    assert full, windows
    assert sum(full) / (len(full) * steady) >= 0.8, windows  # 6 s of budget every 6.5 s, less a window's edge


# -- failures ----------------------------------------------------------------------------------


async def test_an_unreachable_redis_is_k004_at_the_first_request_with_the_password_masked() -> None:
    """Nothing listening: the first request raises K004 naming the URL with its password masked."""
    url = f"redis://:hunter2-secret@127.0.0.1:{_free_port()}/0"
    async with KlaviyoClient(base_url="http://127.0.0.1:9", api_key=KEY, budget=SharedRateBudget(url, "acct")) as kl:
        with pytest.raises(RateBudgetError) as info:
            await kl.get_profile("01H8TVABCDEF1234567890")
    err = info.value
    assert "K004" == err.code
    assert "cannot be reached" in err.message and "127.0.0.1" in err.message
    assert "hunter2-secret" not in err.format() and "***" in err.message
    assert 0 == kl.stats.total_requests


async def test_a_redis_refusing_the_password_is_k004_refused() -> None:
    """A Redis that requires another password refuses the first request: K004, the password masked."""
    server = _OwnRedis("--requirepass", "the-right-one")
    server.start()
    try:
        url = f"redis://:wrong-password-x@127.0.0.1:{server.port}/0"
        budget = SharedRateBudget(url, "acct")
        with pytest.raises(RateBudgetError) as info:
            await budget.acquire("L")
        await budget.aclose()
    finally:
        server.stop()
    assert "refused" in info.value.message
    assert "wrong-password-x" not in info.value.format()


def test_a_malformed_url_is_k004_when_the_budget_is_made() -> None:
    """A URL that is not redis:// is refused at once, not at the first request."""
    with pytest.raises(RateBudgetError, match="is not a Redis URL"):
        SharedRateBudget("http://:pw-secret@127.0.0.1/0", "acct")


async def test_an_outage_after_the_first_request_is_retried_with_a_log_line(
        own_redis: _OwnRedis, caplog: pytest.LogCaptureFixture) -> None:
    """Redis going away mid-run: requests wait and retry (one warning), and go on once it is back."""
    budget = SharedRateBudget(own_redis.url, "outage", {"L": {"burst": 100, "steady": 1000}})
    try:
        await budget.acquire("L")
        own_redis.stop()
        with caplog.at_level(logging.WARNING, logger="engine.klaviyo"):
            waiting = asyncio.create_task(budget.acquire("L"))
            for _ in range(200):
                if any("unreachable" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            assert not waiting.done()
            own_redis.start()
            await asyncio.wait_for(waiting, 60)
        messages = [r.getMessage() for r in caplog.records]
        assert 1 == sum("is unreachable" in m for m in messages)
        assert any("reachable again" in m for m in messages)
        assert "per-process" in messages[0]
    finally:
        await budget.aclose()


async def test_an_outage_longer_than_the_limit_ends_in_k004(own_redis: _OwnRedis) -> None:
    """An outage past outage_limit stops waiting with K004 (never a hang, never a per-process budget)."""
    budget = SharedRateBudget(own_redis.url, "outage", outage_limit=0.5)
    try:
        await budget.acquire("L")
        own_redis.stop()
        with pytest.raises(RateBudgetError, match="was unreachable for 0.5 s"):
            await asyncio.wait_for(budget.acquire("L"), 60)
    finally:
        await budget.aclose()


def test_the_cli_says_k004_for_an_unreachable_budget_without_a_traceback_or_the_password(
        tmp_path: Path, redis_up: None) -> None:
    """`klaviyo-sync sync profile` with rate_budget on a closed port: exit 1, K004, masked, no traceback."""
    port = _free_port()
    (tmp_path / "klaviyo-sync.yaml").write_text(
        f"api_url: http://127.0.0.1:9\napi_key: {KEY}\nhub: hub.db\n"
        f"rate_budget: redis://:cli-secret-pw@127.0.0.1:{port}/0\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "engine", "sync", "profile", "01H8TVABCDEF1234567890",
                          "--config", str(tmp_path / "klaviyo-sync.yaml")], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    text = out.stdout + out.stderr
    assert 1 == out.returncode, text
    assert "K004 the shared rate budget at redis://***@127.0.0.1" in text
    assert "Traceback" not in text and "cli-secret-pw" not in text and KEY not in text


# -- wiring ----------------------------------------------------------------------------------


def test_open_client_shares_the_budget_under_the_account_or_a_digest_of_the_key() -> None:
    """rate_budget set: the client's budget is in Redis under `account`, else sha256(api key)[:16]; unset: in-process."""
    base = replace(Settings(), api_key=Secret(KEY), api_url="http://127.0.0.1:9")
    plain = open_client(base)
    digest = open_client(replace(base, rate_budget="redis://:pw-in-url@127.0.0.1:6379/0"))
    named = open_client(replace(base, rate_budget=REDIS, account="shop.eu-1"))
    try:
        assert not isinstance(plain.budget, SharedRateBudget)
        assert isinstance(digest.budget, SharedRateBudget) and isinstance(named.budget, SharedRateBudget)
        assert account_digest(KEY) == digest.budget.account == __import__("hashlib").sha256(KEY.encode()).hexdigest()[:16]
        assert "klaviyo-sync:rate:shop.eu-1:L" == named.budget.key("L")
        assert KEY not in digest.budget.key("XL") and "pw-in-url" not in repr(digest.budget)
    finally:
        for client in (plain, digest, named):
            asyncio.run(client.aclose())
