"""Fixtures for the outbound flows: the real sandbox over loopback, a real SQLite hub file,
the shipped collections, and helpers to dispatch / push and read Klaviyo back through its API."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from engine.collection import CollectionSet, load_collections
from engine.flows.outbound import OutboundReport, dispatch, open_outbound_client, push
from engine.hub import SqliteHub
from engine.klaviyo import KlaviyoClient
from engine.sandbox import SandboxHandle
from engine.settings import Secret, Settings

OUTBOUND_KEY = "pk_outbound_test_key_0001"
FAST_CLIENT = {"backoff_base": 0.01, "backoff_max": 0.05, "retry_after_cap": 0.2, "timeout": 5.0}


@dataclass
class OutboundEnv:
    """One sandbox + one hub file + settings pointing at both."""

    sandbox: SandboxHandle
    hub: SqliteHub
    settings: Settings
    collections: CollectionSet
    client_options: dict[str, Any]

    def with_settings(self, **changes: Any) -> OutboundEnv:
        return replace(self, settings=replace(self.settings, **changes))

    def remap_lists_away(self) -> None:
        """Collections without list rows (a private copy beside the hub): for a sandbox with no lists."""
        copy = self.settings.hub_path.parent / f"collections-{self.settings.hub_path.stem}"
        shutil.copytree(self.settings.collections_dir, copy)
        for path in copy.glob("*-from-hub.yaml"):
            path.write_text(path.read_text(encoding="utf-8").replace("LIST_Sms Subscribers", "properties.sms")
                            .replace("UCLIST_Preview List", "properties.preview"), encoding="utf-8")
        report = load_collections([copy])
        assert [] == report.errors, report.errors
        self.collections = report.collections

    def dispatch(self, **kw: Any) -> OutboundReport:
        """Run :func:`engine.flows.outbound.dispatch` to the end (``dry_run=True`` for a dry run)."""
        dry = kw.pop("dry_run", False)

        async def main() -> OutboundReport:
            client, transport = open_outbound_client(self.settings, self.hub, dry_run=dry, **self.client_options)
            async with client:
                return await dispatch(self.settings, self.hub, client, self.collections, dry_run=transport, **kw)

        return asyncio.run(main())

    def push(self, entity: str, hub_id: int, *, dry_run: bool = False) -> OutboundReport:
        async def main() -> OutboundReport:
            client, transport = open_outbound_client(self.settings, self.hub, dry_run=dry_run,
                                                     **self.client_options)
            async with client:
                return await push(self.settings, self.hub, client, self.collections, entity, hub_id,
                                  dry_run=transport)

        return asyncio.run(main())

    def klaviyo(self, work: Callable[[KlaviyoClient], Any]) -> Any:
        """Run ``await work(client)`` with a plain client on the sandbox (to read results back)."""

        async def main() -> Any:
            async with KlaviyoClient(base_url=self.sandbox.url, api_key=OUTBOUND_KEY,
                                     revision=self.settings.api_revision) as kl:
                return await work(kl)

        return asyncio.run(main())

    def profiles(self, **ident: str) -> list[dict[str, Any]]:
        return self.klaviyo(lambda kl: kl.find_profiles(**ident))

    def all_profiles(self) -> list[dict[str, Any]]:
        async def work(kl: KlaviyoClient) -> list[dict[str, Any]]:
            return [p async for p in kl.iter_profiles(page_size=100)]

        return self.klaviyo(work)

    def profile(self, pid: str) -> dict[str, Any]:
        return self.klaviyo(lambda kl: kl.get_profile(pid, additional_fields=["subscriptions"]))

    def events(self, metric: str | None = None) -> list[dict[str, Any]]:
        evs = self.klaviyo(lambda kl: kl.get_events())
        if metric is None:
            return evs
        return [e for e in evs if (e["included"]["metric"] or {}).get("attributes", {}).get("name") == metric]

    def list_members(self, name: str) -> set[str]:
        async def work(kl: KlaviyoClient) -> set[str]:
            found = await kl.find_list_by_name(name)
            assert found is not None, f"no list {name!r}"
            return {p["id"] for p in await kl.get_list_profiles(found["id"])}

        return self.klaviyo(work)


@pytest.fixture
def outbound_factory(sandbox_factory: Callable[..., SandboxHandle], hub_factory: Callable[..., SqliteHub],
                     tmp_path: Path) -> Iterator[Callable[..., OutboundEnv]]:
    """Build an :class:`OutboundEnv`: ``outbound_factory(revision=..., generate_events=..., **sandbox_options)``
    (its hub from ``hub_factory``: on each backend)."""

    def make(*, revision: str = "2023-10-15", generate_events: bool = True, lists: tuple[str, ...] = (
            "Sms Subscribers", "Preview List"), name: str = "hub.db", **sandbox_options: Any) -> OutboundEnv:
        sandbox = sandbox_factory(**sandbox_options)
        for list_name in lists:
            sandbox.state.add_list(list_name)
        hub = hub_factory(name, outbound_triggers={"Customer", "Transaction"}, secrets=[OUTBOUND_KEY])
        settings = Settings(api_url=sandbox.url, api_key=Secret(OUTBOUND_KEY), api_revision=revision,
                            generate_events=generate_events, hub_path=tmp_path / name)
        report = load_collections([settings.collections_dir])
        assert report.errors == []
        return OutboundEnv(sandbox, hub, settings, report.collections, dict(FAST_CLIENT))

    yield make


@pytest.fixture
def outbound(outbound_factory: Callable[..., OutboundEnv]) -> OutboundEnv:
    """Sandbox (limits off, lists "Sms Subscribers" and "Preview List") + hub, revision 2023-10-15."""
    return outbound_factory()
