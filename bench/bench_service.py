"""The service's hub API beside ``hub import``, and the end-to-end delay from an API write to Klaviyo.

Run: ``.venv/bin/python bench/bench_service.py [--customers 10000] [--concurrency 8] [--delays 20]``

1. **API ingestion**: ``--customers`` Customers POSTed one per request to a real ``serve``
   process (outbound triggers off, so only the API and the hub are measured), ``--concurrency``
   requests in flight: requests/s, p50 and p99 latency.
2. **hub import** of the same records as one JSONL file, in a child process like the CLI:
   records/s, printed beside (1).
3. **end-to-end delay**: with outbound triggers on and the sandbox enforcing Klaviyo's tier
   limits (profiles are the L tier: 75/s burst, 700/min steady), ``--delays`` Customers written
   through the API one at a time; the time from the API's answer to the profile existing in the
   sandbox: p50 and max.

Not a test: figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.sandbox import SandboxOptions, SandboxServer  # noqa: E402

KEY = "pk_bench_service_0001"
TOKEN = "bench-service-token-0001"


def _customer(n: int) -> dict[str, object]:
    return {"EmailAddress": f"svcbench{n}@example.com", "CustomerNumber": f"SB-{n}", "FirstName": "Bench",
            "LastName": f"Customer {n}", "Addresses": [{"Address1": f"{n} Main St", "City": "Boston", "Country": "US"}]}


def _settings(folder: Path, url: str, triggers: bool) -> Path:
    path = folder / "klaviyo-sync.yaml"
    trig = "{customer: true, transaction: false}" if triggers else "{customer: false, transaction: false}"
    path.write_text(f"api_url: {url}\napi_key: {KEY}\nhub: hub.db\npoll_interval: 1h\noutbound_triggers: {trig}\n"
                    f"service:\n  token: {TOKEN}\n  port: 0\n")
    return path


def _serve(settings: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline() if proc.stdout else ""
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        raise SystemExit(f"serve did not start: {line}{proc.communicate()[1]}")
    return proc, match.group(1)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def _ingest(url: str, n: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                resp = await client.post("/api/customers", json=_customer(i))
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 201:
                    raise SystemExit(f"customer {i}: {resp.status_code} {resp.text}")

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(1, n + 1)))
        return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--delays", type=int, default=20)
    args = parser.parse_args()
    sandbox = SandboxServer(SandboxOptions(rate_limits=True, seed=3)).start_in_thread()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "api"
            folder.mkdir()
            proc, url = _serve(_settings(folder, sandbox.url, triggers=False))
            try:
                seconds, lat = asyncio.run(_ingest(url, args.customers, args.concurrency))
            finally:
                proc.terminate()
                proc.communicate(timeout=15)
            print(f"API ingestion: {args.customers} Customers in {seconds:.1f}s = {args.customers / seconds:,.0f} req/s "
                  f"(concurrency {args.concurrency}); latency p50 {1000 * _pct(lat, 50):.1f} ms, "
                  f"p99 {1000 * _pct(lat, 99):.1f} ms")
            folder = Path(tmp) / "import"
            folder.mkdir()
            settings = _settings(folder, sandbox.url, triggers=False)
            jsonl = folder / "customers.jsonl"
            jsonl.write_text("".join(json.dumps(_customer(i)) + "\n" for i in range(1, args.customers + 1)))
            env = {**os.environ, "KLAVIYO_SYNC_CONFIG": str(settings)}
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "engine", "hub", "import", "customers", str(jsonl)], cwd=ROOT,
                           env=env, check=True, capture_output=True)
            imp = time.perf_counter() - t0
            print(f"hub import:    {args.customers} Customers in {imp:.1f}s = {args.customers / imp:,.0f} records/s "
                  f"(one process, including start-up); the API is {imp / seconds:.2f}x its rate")
            folder = Path(tmp) / "delay"
            folder.mkdir()
            proc, url = _serve(_settings(folder, sandbox.url, triggers=True))
            delays: list[float] = []
            try:
                with httpx.Client(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
                    for i in range(1, args.delays + 1):
                        email = f"delay{i}@example.com"
                        client.post("/api/customers", json={**_customer(i), "EmailAddress": email})
                        t0 = time.perf_counter()
                        while not any(p["attributes"].get("email") == email
                                      for p in list(sandbox.state.profiles.values())):
                            time.sleep(0.005)
                        delays.append(time.perf_counter() - t0)
            finally:
                proc.terminate()
                proc.communicate(timeout=15)
            print(f"end-to-end (L tier limits on): API write -> profile in the sandbox, {args.delays} writes: "
                  f"p50 {1000 * statistics.median(delays):.0f} ms, max {1000 * max(delays):.0f} ms")
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()
