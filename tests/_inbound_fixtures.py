"""Fixtures for the inbound flow tests: the real sandbox over loopback and a real SQLite hub.

``inbound``: an :class:`InboundEnv` with a fresh sandbox (limits off), a hub file with
both outbound triggers on (so a test can check inbound writes queue nothing), and the
shipped collections.  ``inbound_factory(**sandbox_options)`` builds one on a sandbox
with other options (faults, rate limits, latency).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.collection import DEFAULT_COLLECTIONS_DIR, CollectionSet, load_collections
from engine.flows.inbound import InboundFlow
from engine.flows.summary import RunSummary
from engine.hub import SqliteHub
from engine.klaviyo import KlaviyoClient
from engine.sandbox import SandboxHandle

INBOUND_KEY = "pk_test_0123456789abcdef"


@dataclass
class InboundEnv:
    """A sandbox, a hub and collections, with helpers that run the real flows against them."""

    sandbox: SandboxHandle
    hub: SqliteHub
    collections_dir: Path
    tmp_path: Path

    @property
    def collections(self) -> CollectionSet:
        report = load_collections([self.collections_dir])
        assert not report.errors, [str(e) for e in report.errors]
        return report.collections

    def client(self, **overrides: Any) -> KlaviyoClient:
        kwargs: dict[str, Any] = {"base_url": self.sandbox.url, "api_key": INBOUND_KEY, "backoff_base": 0.01,
                                  "backoff_max": 0.05, "timeout": 5.0}
        kwargs.update(overrides)
        return KlaviyoClient(**kwargs)

    def remap(self, file: str, old: str, new: str) -> None:
        """Point the collections at a private copy in tmp_path with ``old`` replaced by ``new`` in ``file``."""
        if self.collections_dir == DEFAULT_COLLECTIONS_DIR:
            copy = self.tmp_path / "collections"
            shutil.copytree(DEFAULT_COLLECTIONS_DIR, copy)
            self.collections_dir = copy
        path = self.collections_dir / file
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    async def poll(self, client_options: dict[str, Any] | None = None, **kwargs: Any) -> InboundFlow:
        """Run one poll with a fresh client; returns the flow (``.summary``, ``.error``...)."""
        on_profile = kwargs.pop("on_profile", None)
        since = kwargs.pop("since", None)
        async with self.client(**(client_options or {})) as client:
            flow = InboundFlow(self.hub, client, self.collections, summary=RunSummary("poll"), **kwargs)
            await flow.poll(since=since, on_profile=on_profile)
        return flow

    async def poll_stopped_after(self, count: int, **kwargs: Any) -> InboundFlow:
        """One poll asked to stop (as Ctrl-C does, in the middle of a page) once ``count`` profiles
        were transferred."""
        handled = [0]

        async with self.client() as client:
            flow = InboundFlow(self.hub, client, self.collections, summary=RunSummary("poll"), **kwargs)
            transfer = flow.transfer.transfer

            def stop_after(resource: Any) -> Any:
                result = transfer(resource)
                handled[0] += 1
                if handled[0] == count:
                    flow.request_stop()
                return result

            flow.transfer.transfer = stop_after  # type: ignore[method-assign]
            await flow.poll()
        return flow

    async def sync(self, profile_id: str, client_options: dict[str, Any] | None = None) -> tuple[InboundFlow, Any]:
        """Manual Sync of one profile; returns (flow, result)."""
        async with self.client(**(client_options or {})) as client:
            flow = InboundFlow(self.hub, client, self.collections, summary=RunSummary("sync profile"))
            result = await flow.sync_profile(profile_id)
        return flow, result

    def customers(self) -> list[dict[str, Any]]:
        return list(self.hub.iter_customers())

    def errors(self, level: str | None = None) -> list[dict[str, Any]]:
        return self.hub.errors.list(level=level, limit=None)  # type: ignore[arg-type]


@pytest.fixture
def inbound_factory(sandbox_factory: Callable[..., SandboxHandle], hub_factory: Callable[..., SqliteHub],
                    tmp_path: Path) -> Callable[..., InboundEnv]:
    def make(**options: Any) -> InboundEnv:
        handle = sandbox_factory(**options)
        store = hub_factory(outbound_triggers={"Customer", "Transaction"})
        return InboundEnv(handle, store, DEFAULT_COLLECTIONS_DIR, tmp_path)

    return make


@pytest.fixture
def inbound(inbound_factory: Callable[..., InboundEnv]) -> InboundEnv:
    return inbound_factory()
