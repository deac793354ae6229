"""``klaviyo-sync demo``: the whole integration, both ways, on a local sandbox and a fresh hub.

What it does, in order:

1. starts the Klaviyo sandbox on a free loopback port (Klaviyo's real rate tiers enforced);
2. writes a settings file and creates a hub in the demo folder, with both outbound triggers on;
3. generates sample data: hub Customers (some without a phone, one with a phone that cannot be
   normalised, one incomplete address, one line repeating an email that the hub refuses) and
   multi-line Transactions (with their customers' emails, a few left to the Customer's email;
   one for a customer the hub does not know), imported through the
   same JSONL import as ``hub import``; and sample Klaviyo profiles (one sharing its email with a
   hub Customer, one without an email, some without a phone, complete and incomplete addresses,
   an older numeric id ``44552``);
4. runs every flow: ``dispatch`` (queued Customers and Transactions to Klaviyo), ``poll``
   (Klaviyo profiles into the hub), a Manual Sync each way (``sync profile 44552``,
   ``push customer``);
5. prints what happened: records per flow and outcome, warnings and errors from the error log,
   Klaviyo calls, time taken; saves the sandbox's state beside the hub and leaves both for the
   user to inspect with ``hub show``, ``errors`` and ``status``.

Everything goes through the same code as the commands; nothing here is demo-only but the data.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.collection import load_collections
from engine.connect import open_client, open_hub
from engine.errors import DemoFolderError, Location
from engine.flows.inbound import InboundFlow
from engine.flows.outbound import dispatch, push
from engine.flows.summary import RunSummary
from engine.hub import import_jsonl
from engine.sandbox import SandboxOptions, SandboxServer
from engine.settings import load_settings

#: Files the demo owns in its folder (and removes when it starts again).
DEMO_FILES = ("klaviyo-sync.yaml", "klaviyo-sync.db", "klaviyo-sync.db-wal", "klaviyo-sync.db-shm",
              "customers.jsonl", "transactions.jsonl", "sandbox-state.json")
#: The first line of the settings file the demo writes: how the demo knows a folder is its own.
DEMO_MARKER = "# Written by `klaviyo-sync demo`: a subscription pointed at the local sandbox."
#: A sandbox key: the sandbox accepts any key starting with pk_; this one is no secret.
DEMO_API_KEY = "pk_demo_sandbox_only"

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim",
         "Margaret", "John", "Katherine", "Dennis", "Hedy", "Linus"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
        "Berners-Lee", "Hamilton", "McCarthy", "Johnson", "Ritchie", "Lamarr", "Torvalds"]
CITIES = [("New York", "NY", "10017", "United States"), ("Boston", "MA", "02108", "United States"),
          ("London", None, "NW1 6XE", "United Kingdom"), ("Paris", "IDF", "75001", "France")]
PRODUCTS = [("MUG-01", "Mug", 12.5), ("TEE-M", "T-shirt M", 24.0), ("CAP-01", "Cap", 18.0),
            ("BOOK-7", "Notebook", 9.75), ("PEN-3", "Pen set", 6.2)]


@dataclass
class DemoResult:
    """What the demo did, for printing and for tests."""

    folder: Path
    sandbox_url: str = ""
    phases: list[RunSummary] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    import_errors: list[str] = field(default_factory=list)
    log_levels: Counter[str] = field(default_factory=Counter)
    log_messages: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    klaviyo: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: the command that runs klaviyo-sync from here (the CLI sets it from how it was started)
    command: str = "klaviyo-sync"

    def lines(self) -> list[str]:
        config = shown_path(self.folder / "klaviyo-sync.yaml")
        out = [f"klaviyo-sync demo: sandbox at {self.sandbox_url}, hub in {self.folder}", ""]
        out += ["Sample data"] + [f"  {line}" for line in self.imports]
        out += [f"  skipped: {e}" for e in self.import_errors]
        for phase in self.phases:
            out += [""] + phase.lines()
        out += ["", f"Error log: {self.log_levels['error']} error(s), {self.log_levels['warning']} warning(s)"]
        for (level, flow, message), n in sorted(self.log_messages.items()):
            out.append(f"  {n} x {level} [{flow}] {message}")
        out += ["", "In Klaviyo (the sandbox): " + ", ".join(f"{v} {k}" for k, v in self.klaviyo.items()),
                f"Total time: {self.seconds:.1f}s", "",
                "Inspect the results:",
                f"  {self.command} status --config {config}",
                f"  {self.command} errors --config {config}",
                f"  {self.command} hub show customer 1 --config {config}",
                f"  {self.command} sandbox serve --state {shown_path(self.folder / 'sandbox-state.json')}"
                "   (Klaviyo's side, as the demo left it; Ctrl-C to stop)"]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder), "sandbox_url": self.sandbox_url,
            "phases": [p.to_dict() for p in self.phases], "imports": self.imports,
            "import_errors": self.import_errors, "log": dict(self.log_levels),
            "log_messages": [{"level": lv, "flow": f, "message": m, "count": n}
                             for (lv, f, m), n in sorted(self.log_messages.items())],
            "klaviyo": self.klaviyo, "seconds": round(self.seconds, 2),
        }


def runnable_command(argv0: str | None = None, executable: str | None = None) -> str:
    """How to run klaviyo-sync again from the current folder, the way this process was started.

    ``klaviyo-sync`` when that is the script found on PATH; else the script's path (relative when
    it lies below the current folder, e.g. ``.venv/bin/klaviyo-sync`` from ``scripts/demo``);
    for ``python -m engine`` (or an embedding) ``<python> -m engine``.  The demo prints its
    "Inspect the results" commands with it, so they run as printed.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    if Path(argv0).name in ("klaviyo-sync", "klaviyo-sync.exe"):
        if Path(argv0).name == argv0:  # started by its name: found on PATH
            return "klaviyo-sync"
        found = shutil.which("klaviyo-sync")
        if found and Path(found).resolve() == Path(argv0).resolve():
            return "klaviyo-sync"
        return shown_path(Path(argv0))
    return f"{shown_path(Path(executable or sys.executable))} -m engine"


def shown_path(path: Path) -> str:
    """``path`` as a command word: relative below the current folder (``.venv/bin/x``, ``./x``), else absolute."""
    full = path.absolute()
    try:
        shown = str(full.relative_to(Path.cwd()))
    except ValueError:
        return shlex.quote(str(full))
    return shlex.quote(shown if os.sep in shown else os.path.join(".", shown))


def _customers(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(1, n + 1):
        first, last = FIRST[i % len(FIRST)], LAST[(i * 7) % len(LAST)]
        city, region, zipc, country = CITIES[i % len(CITIES)]
        c: dict[str, Any] = {
            "Id": i, "EmailAddress": f"{first}.{last}{i}@example.com".lower(), "CustomerNumber": f"C-{1000 + i}",
            "FirstName": first, "LastName": last, "Company": f"{last} & Co" if i % 3 == 0 else None,
            "Phone": f"+1 212 555 {1000 + i:04d}" if i % 4 else None,
            "Addresses": [
                {"Address1": f"{10 + i} Market St", "City": city, "Region": region, "PostalCode": zipc,
                 "Country": country, "IsPrimaryBilling": True},
                {"Address1": f"{200 + i} Dock Rd", "City": "Newark", "Country": "United States",
                 "IsPrimaryShipping": True},
            ],
        }
        if i == 5:
            c["Phone"] = "call me after 6"           # cannot be normalised: omitted, the profile still goes
        if i == 6:
            c["Addresses"][0].pop("City")            # incomplete billing address: sent without a city
        out.append({k: v for k, v in c.items() if v is not None})
    # a second Customer with an email the hub already has: refused, reported with its line number
    out.append({"Id": n + 1, "EmailAddress": out[1]["EmailAddress"], "CustomerNumber": "C-DUP", "FirstName": "Dup"})
    return out


def _transactions(n: int, customers: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Sample Transactions of the first ``count`` Customers.  Each carries its Customer's email,
    except every fourth, which leaves ``EmailAddress`` empty so the Placed Order event takes the
    Customer's email instead (the shipped EventProperties formula's fallback)."""
    out = []
    for i in range(1, n + 1):
        cid = (i % count) + 1
        email = None if i % 4 == 0 else customers[cid - 1]["EmailAddress"]
        lines: list[dict[str, Any]] = []
        for k in range(1 + i % 4):
            sku, name, price = PRODUCTS[(i + k) % len(PRODUCTS)]
            qty = 1 + (i + k) % 3
            lines.append({"Id": i * 10 + k, "Sku": sku, "Description": name, "Qty": qty,
                          "UnitPrice": price, "ExtendedPrice": round(qty * price, 2)})
        total = round(sum(line["ExtendedPrice"] for line in lines), 2)
        out.append({"Id": 55000 + i, "TransactionNumber": f"SO-{55000 + i}", "CustomerId": cid,
                    "EmailAddress": email, "Total": total, "TransactionDate": "2026-11-20T10:00:00Z", "Lines": lines})
    # an order whose customer is neither in the hub nor in Klaviyo: "Profile could not be resolved"
    out.append({"Id": 56000, "TransactionNumber": "SO-56000", "CustomerId": 9999, "EmailAddress": "ghost@example.com",
                "Total": 5.0, "Lines": [{"Id": 560000, "Sku": "PEN-3", "Description": "Pen set", "Qty": 1,
                                         "UnitPrice": 5.0, "ExtendedPrice": 5.0}]})
    return out


def _seed_profiles(state: Any, customers: list[dict[str, Any]], n: int) -> None:
    """Sample Klaviyo profiles and the template lists, made directly in the sandbox's state (as if
    created in Klaviyo's own app)."""
    state.add_list("Sms Subscribers")      # the lists the shipped outbound collections' flags name
    state.add_list("Preview List")
    for i in range(n):
        first, last = FIRST[(i + 3) % len(FIRST)], LAST[(i + 5) % len(LAST)]
        attrs: dict[str, Any] = {"email": f"{first}.{last}.k{i}@example.org".lower(), "first_name": first,
                                 "last_name": last, "properties": {"Last active": f"2026-11-{10 + i % 15:02d}"}}
        if i % 3:
            attrs["phone_number"] = f"+1617555{2000 + i:04d}"
        city, region, zipc, country = CITIES[i % len(CITIES)]
        if i % 4 == 0:
            attrs["location"] = {"address1": f"{i} Elm St", "city": city, "region": region, "zip": zipc,
                                 "country": country}
        elif i % 4 == 1:
            attrs["location"] = {"address1": f"{i} Elm St", "country": country}   # incomplete: not transferred
        state.add_profile(**attrs)
    # a profile with a hub Customer's email: linked, not duplicated
    state.add_profile(email=customers[2]["EmailAddress"], first_name="Klaviyo-side", organization="Kept by hub")
    # no email: "An email address is required"
    state.add_profile(phone_number="+16175550000", first_name="No", last_name="Email")
    # an older numeric id, for the Manual Sync
    state.add_profile(profile_id="44552", email="legacy.44552@example.org", first_name="Legacy",
                      location={"address1": "1 Old Rd", "city": "Boston", "country": "United States"})


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


async def _run(folder: Path, result: DemoResult) -> None:
    settings = load_settings(folder / "klaviyo-sync.yaml")
    report = load_collections([settings.collections_dir])
    if report.errors:
        raise report.errors[0]
    cs = report.collections
    hub = open_hub(settings)
    try:
        for kind in ("customers", "transactions"):
            rep = import_jsonl(hub, kind, folder / f"{kind}.jsonl")
            result.imports.append(rep.summary(kind))
            result.import_errors += [str(e) for e in rep.errors]
        async with open_client(settings, hub) as client:
            out = await dispatch(settings, hub, client, cs)
            out.summary.name = "dispatch (hub -> Klaviyo, queued changes)"
            result.phases.append(out.summary)
        async with open_client(settings, hub) as client:
            flow = InboundFlow(hub, client, cs, summary=RunSummary("poll (Klaviyo -> hub)"),
                               formula_settings=settings.for_formulas())
            await flow.poll()
            result.phases.append(flow.summary)
        async with open_client(settings, hub) as client:
            flow = InboundFlow(hub, client, cs, summary=RunSummary("sync profile 44552 (Manual Sync, Klaviyo -> hub)"),
                               formula_settings=settings.for_formulas())
            await flow.sync_profile("44552")
            result.phases.append(flow.summary)
        async with open_client(settings, hub) as client:
            out = await push(settings, hub, client, cs, "Customer", 1)
            out.summary.name = "push customer 1 (Manual Sync, hub -> Klaviyo)"
            result.phases.append(out.summary)
        for entry in hub.errors.list(limit=10_000):
            result.log_levels[entry["Level"]] += 1
            result.log_messages[(entry["Level"], entry["Flow"], entry["Message"])] += 1
    finally:
        hub.close()


def check_demo_folder(folder: Path) -> None:
    """Refuse a folder the demo may not take over; a missing or empty folder, or one holding
    only the demo's own files (its settings file starting with :data:`DEMO_MARKER`), is fine.

    Raises:
        DemoFolderError: ``folder`` is a file, holds any other file or folder (a real
            subscription's settings, a hub the demo did not make), or holds demo-named files
            without the demo's marked settings file.  Nothing in it is touched.
    """
    where = Location(file=str(folder))
    if folder.exists() and not folder.is_dir():
        raise DemoFolderError(f"the demo folder {folder} is a file; give --dir a folder", location=where)
    if not folder.exists():
        return
    try:
        names = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        raise DemoFolderError(f"cannot read the demo folder {folder}: {exc.strerror or exc}",
                              location=where) from None
    others = [n for n in names if n not in DEMO_FILES]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise DemoFolderError(
            f"refusing to run the demo in {folder}: it holds files the demo did not write ({shown}); "
            "the demo replaces its folder's hub and settings, so give --dir an empty or new folder",
            location=where)
    if names and not _is_demo_settings(folder / "klaviyo-sync.yaml"):
        raise DemoFolderError(
            f"refusing to run the demo in {folder}: its klaviyo-sync.yaml"
            + (" was not written by the demo" if (folder / "klaviyo-sync.yaml").exists() else " is missing")
            + " (a real subscription's hub or settings?); give --dir an empty or new folder",
            location=where)


def _is_demo_settings(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\r\n") == DEMO_MARKER
    except OSError:
        return False


def run_demo(folder: str | Path = "demo-hub", *, customers: int = 12, transactions: int = 10,
             profiles: int = 12, seed: int = 7) -> DemoResult:
    """Run the demo in ``folder`` (created; the demo's own files in it are replaced, and a
    folder holding anything else is refused: :func:`check_demo_folder`).

    Returns:
        A :class:`DemoResult`. Raises a :class:`KlaviyoSyncError` only when the demo itself
        cannot run (for example the folder cannot be written); record-level problems are in
        the error log and counted in the result.
    """
    started = time.monotonic()
    folder = Path(folder).resolve()
    check_demo_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoFolderError(f"cannot create the demo folder {folder}: {exc.strerror or exc}",
                              location=Location(file=str(folder))) from None
    for name in DEMO_FILES:
        (folder / name).unlink(missing_ok=True)
    cust = _customers(customers)
    _write_jsonl(folder / "customers.jsonl", cust)
    _write_jsonl(folder / "transactions.jsonl", _transactions(transactions, cust, customers))
    server = SandboxServer(SandboxOptions(port=0, seed=seed))
    handle = server.start_in_thread()
    result = DemoResult(folder, sandbox_url=handle.url)
    try:
        _seed_profiles(handle.state, cust, profiles)
        (folder / "klaviyo-sync.yaml").write_text(
            f"{DEMO_MARKER}\n"
            "name: Klaviyo Integration (demo)\n"
            "version: v1.0\n"
            f"api_url: {handle.url}\n"
            f"api_key: {DEMO_API_KEY}   # a sandbox key, not a secret: the sandbox takes any pk_ key\n"
            "api_revision: ''\n"
            "generate_events: TRUE\n"
            "outbound_triggers:\n  customer: true\n  transaction: true\n"
            "hub: klaviyo-sync.db\n", encoding="utf-8")
        asyncio.run(_run(folder, result))
        state = handle.state
        with state.lock:
            result.klaviyo = {"profiles": len(state.profiles), "events": len(state.events),
                              "lists": len(state.lists)}
            state.save(folder / "sandbox-state.json")
    finally:
        handle.stop()
    result.seconds = time.monotonic() - started
    return result


__all__ = ["DEMO_FILES", "DEMO_MARKER", "DemoResult", "check_demo_folder", "run_demo"]
