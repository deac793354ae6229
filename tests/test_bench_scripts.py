"""The benchmark scripts stay runnable: each one parses and answers ``--help`` (their figures are
produced by ``bench/run``, never asserted in tests)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert {"bench_ceiling.py", "bench_http.py", "bench_sandbox.py", "report.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_answers_help(script: str) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert 0 == out.returncode, out.stderr[-2000:]
    assert "usage:" in out.stdout
