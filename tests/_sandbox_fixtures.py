"""Fixtures that run the local Klaviyo sandbox over loopback for tests.

``sandbox``: a fresh server on a free 127.0.0.1 port with rate limits off.
``sandbox_factory(**options)``: start one with any :class:`SandboxOptions`
(e.g. ``rate_limits=True, rate_window_scale=0.05`` for a fast 429 storm).
Every server started is stopped at the end of the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from engine.sandbox import SandboxHandle, SandboxOptions, SandboxServer

API_KEY = "pk_test_0123456789abcdef"


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxHandle]]:
    handles: list[SandboxHandle] = []

    def make(**options: Any) -> SandboxHandle:
        options.setdefault("rate_limits", False)
        options.setdefault("seed", 7)
        handle = SandboxServer(SandboxOptions(**options)).start_in_thread()
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.stop()


@pytest.fixture
def sandbox(sandbox_factory: Callable[..., SandboxHandle]) -> SandboxHandle:
    return sandbox_factory()


@pytest.fixture
def sandbox_api_key() -> str:
    return API_KEY
