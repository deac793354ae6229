"""Hub commands: ``hub import|show|export``, ``errors``, ``status``, ``settings show``.

Every command that reads the hub or the settings takes ``--hub PATH`` (env
``KLAVIYO_SYNC_HUB``) and ``--config PATH`` (env ``KLAVIYO_SYNC_CONFIG``).
The hub path comes from ``--hub``, else the settings' ``hub`` key, else
``klaviyo-sync.db`` beside the settings file (or in the current folder).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from engine.cli._output import COUNT, RECORD_ID, emit_json, fail, report
from engine.cli._progress import count_lines, progress
from engine.connect import open_hub
from engine.errors import ExportTargetError, HubNotFoundError, KlaviyoSyncError, Location
from engine.hub import SqliteHub, export_jsonl, import_jsonl
from engine.hub._sqlite import SIDE_FILES, is_sqlite_file
from engine.klaviyo import revision as rev
from engine.settings import Settings, is_hub_url, load_settings

KINDS = click.Choice(["customers", "transactions"])


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config`` and ``--hub`` and turn our errors into ``fail()``."""

    @click.option("--config", "config", type=click.Path(dir_okay=False), envvar="KLAVIYO_SYNC_CONFIG",
                  help="Settings file (default ./klaviyo-sync.yaml; env KLAVIYO_SYNC_CONFIG).")
    @click.option("--hub", "hub_path", type=click.Path(dir_okay=False), envvar="KLAVIYO_SYNC_HUB",
                  help="Hub SQLite file or PostgreSQL URL (default: settings 'hub'; env KLAVIYO_SYNC_HUB).")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except KlaviyoSyncError as err:
            fail(err)

    return wrapper


def load_cli_settings(config: str | None) -> Settings:
    return load_settings(config)


def open_settings_hub(config: str | None, hub_path: str | None) -> tuple[Settings, SqliteHub]:
    settings = load_cli_settings(config)
    return settings, open_hub(settings, hub_path)


def _echo_record(record: dict[str, Any], indent: str = "") -> None:
    """Print a record as aligned ``Key: value`` lines, nested lists indented."""
    width = max((len(k) for k in record), default=0)
    for key, value in record.items():
        if isinstance(value, list):
            click.echo(f"{indent}{key}:" + (" (none)" if not value else ""))
            for i, item in enumerate(value):
                click.echo(f"{indent}  [{i}]")
                _echo_record(item, indent + "    ")
        elif isinstance(value, dict):
            click.echo(f"{indent}{key.ljust(width)}  {json.dumps(value, ensure_ascii=False)}")
        else:
            click.echo(f"{indent}{key.ljust(width)}  {'' if value is None else value}")


# -- hub ----------------------------------------------------------------------------------


@click.group("hub")
def hub_group() -> None:
    """Import, show and export hub records (Customers, Transactions)."""


@hub_group.command("import")
@click.argument("kind", type=KINDS)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the counts and every skipped line's error as JSON.")
@common_options
def import_cmd(kind: str, file: str, as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Import KIND (customers or transactions) from a JSONL FILE.

    One JSON object per line in the PascalCase record shape (nested Addresses or
    Lines).  Bad lines are reported as FILE:LINE: CODE message and skipped; the
    rest import.  Re-importing a record updates it.  Exits 1 if any line was skipped.
    On a terminal a progress bar runs on standard error (lines read of the file's lines).
    """
    _, store = open_settings_hub(config, hub_path)
    with store, progress(f"hub import {kind}", as_json=as_json, total=lambda: count_lines(file)) as bar:
        result = import_jsonl(store, kind, file, on_progress=lambda line, so_far: bar.set(line, {
            "added": so_far.added, "updated": so_far.updated, "unchanged": so_far.unchanged,
            "skipped": len(so_far.errors)}))
    if as_json:
        emit_json({"kind": kind, "file": file, "imported": result.imported, "added": result.added,
                   "updated": result.updated, "unchanged": result.unchanged, "skipped": len(result.errors),
                   "errors": [err.to_dict() for err in result.errors]})
    else:
        for err in result.errors:
            report(err)
        click.echo(result.summary(kind))
    if result.errors:
        sys.exit(1)


@hub_group.command("show")
@click.argument("entity", type=click.Choice(["customer", "transaction"]))
@click.argument("record_id", type=RECORD_ID)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@common_options
def show_cmd(entity: str, record_id: int, as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Show one customer (with addresses) or transaction (with lines) and its Klaviyo link."""
    _, store = open_settings_hub(config, hub_path)
    with store:
        if entity == "customer":
            record = store.get_customer(record_id)
            link = store.get_klaviyo_id("Customer", record_id)
        else:
            record = store.get_transaction(record_id)
            link = store.get_klaviyo_id("Transaction", record_id)
    if record is None:
        raise HubNotFoundError(f"no {entity.capitalize()} with Id {record_id}",
                               location=Location(record_id=str(record_id)))
    record = {**record, "KlaviyoId": link}
    if as_json:
        emit_json(record)
    else:
        _echo_record(record)


@hub_group.command("export")
@click.argument("kind", type=KINDS)
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="With FILE: print what was written as JSON (without FILE, standard output carries the JSONL).")
@common_options
def export_cmd(kind: str, file: str | None, as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Write every record of KIND as JSONL to FILE (default standard output).

    Each record carries its Klaviyo link as "_links": {"klaviyo": ID} (null when
    it has none); `hub import` restores it.

    FILE is written whole or not at all (a temporary file beside it, then renamed),
    owner-only (0600).  A FILE that is a SQLite database (a hub, the hub in use
    included) is refused, and so is a FILE whose folder does not exist.
    """
    if as_json and not file:
        raise click.UsageError("--json needs FILE: without one, standard output carries the JSONL records")
    if file:
        settings = load_cli_settings(config)
        in_use = hub_path or settings.hub_url or str(settings.hub_path)
        _check_export_target(Path(file), None if is_hub_url(in_use) else Path(in_use))
    _, store = open_settings_hub(config, hub_path)
    with store:
        if file:
            count = _export_atomically(store, kind, Path(file))
            if as_json:
                emit_json({"kind": kind, "file": file, "exported": count})
            else:
                click.echo(f"Exported {count} {kind} to {file}", err=True)
        else:
            # click 8.5 deprecates get_text_stream (a module __getattr__, so typed object) for removal in 9.0
            export_jsonl(store, kind, click.get_text_stream("stdout"))  # type: ignore[operator]


def _check_export_target(target: Path, hub: Path | None) -> None:
    """Refuse an export FILE that would overwrite the hub file (or its -wal/-shm), any SQLite file,
    or whose folder is missing; nothing is touched.  ``hub``: None for a PostgreSQL hub."""
    resolved = target.resolve()
    hub_file = hub.resolve() if hub is not None else None
    if hub_file is not None and resolved in {hub_file, *(hub_file.with_name(hub_file.name + s) for s in SIDE_FILES)}:
        raise ExportTargetError(f"refusing to export over the hub in use ({hub}); choose another FILE",
                                location=Location(file=str(target)))
    if is_sqlite_file(resolved):
        raise ExportTargetError(f"refusing to export over {target}: it is a SQLite database (a hub?); "
                                "choose another FILE", location=Location(file=str(target)))
    if not resolved.parent.is_dir():
        raise ExportTargetError(f"cannot export to {target}: the folder {target.parent} does not exist; "
                                "create it first", location=Location(file=str(target)))


def _export_atomically(store: SqliteHub, kind: str, target: Path) -> int:
    """Export into a temporary file in FILE's folder, then rename it over FILE (all or nothing)."""
    tmp: str | None = None
    try:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.resolve().parent,
                                         prefix=f".{target.name}.", suffix=".tmp", delete=False) as out:
            tmp = out.name
            count = export_jsonl(store, kind, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise ExportTargetError(f"cannot write {target}: {exc.strerror or exc}",
                                location=Location(file=str(target))) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return count


# -- errors ----------------------------------------------------------------------------


@click.command("errors")
@click.option("--json", "as_json", is_flag=True, help="Print entries as JSON.")
@click.option("--flow", help="Only entries of this flow (collection title).")
@click.option("--level", type=click.Choice(["error", "warning"]), help="Only errors or only warnings.")
@click.option("--all", "show_all", is_flag=True, help="Include resolved entries.")
@click.option("--limit", type=COUNT, default=50, show_default=True, help="At most this many entries.")
@click.option("--resolve", "resolve_id", type=RECORD_ID, help="Mark entry ID resolved.")
@common_options
def errors_cmd(as_json: bool, flow: str | None, level: str | None, show_all: bool, limit: int,
               resolve_id: int | None, config: str | None, hub_path: str | None) -> None:
    """List the error log (newest first; unresolved only unless --all), or resolve an entry."""
    _, store = open_settings_hub(config, hub_path)
    with store:
        if resolve_id is not None:
            entry = store.errors.resolve(resolve_id)
            if as_json:
                emit_json(entry)
            else:
                click.echo(f"Resolved error {resolve_id}")
            return
        entries = store.errors.list(flow=flow, level=level, unresolved_only=not show_all, limit=limit)
    if as_json:
        emit_json(entries)
        return
    if not entries:
        click.echo("No errors.")
    for e in entries:
        ids = ", ".join(p for p in (f"{e['Entity'] or 'hub'} {e['HubId']}" if e["HubId"] is not None else "",
                                    f"Klaviyo {e['KlaviyoId']}" if e["KlaviyoId"] else "") if p)
        state = " [resolved]" if e["ResolvedAt"] else ""
        click.echo(f"#{e['Id']} {e['At']} {e['Level'].upper()} {e['Flow']}{state}"
                   + (f" ({ids})" if ids else ""))
        click.echo(f"  {(e['Code'] + ' ') if e['Code'] else ''}{e['Message']}")
        if e["Detail"]:
            click.echo(f"  {e['Detail']}")


# -- status ------------------------------------------------------------------------------


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@common_options
def status_cmd(as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Counts, last polls, queue length and recent errors."""
    settings, store = open_settings_hub(config, hub_path)
    with store:
        data: dict[str, Any] = {
            "hub": store.target,
            "settings": str(settings.source) if settings.source else None,
            "authentication": "api key" if settings.api_key else "none configured",
            "api_revision": settings.api_revision,
            "revision_support": rev.support(settings.api_revision).to_dict(),
            "outbound_triggers": sorted(settings.outbound_triggers.entities()),
            "counts": store.counts(),
            "last_polls": store.cursors(),
            "recent_errors": store.errors.list(unresolved_only=True, limit=5),
        }
    if as_json:
        emit_json(data)
        return
    click.echo(f"Hub:        {data['hub']}")
    click.echo(f"Settings:   {data['settings'] or '(defaults; no settings file)'}")
    click.echo(f"Auth:       {data['authentication']}")
    support = data["revision_support"]
    until = "" if not support["retired"] else (
        f" since {support['retired']}" if support["state"] == "retired" else f", supported until {support['retired']}")
    click.echo(f"Revision:   {data['api_revision']} ({support['state']}{until})")
    if support["warning"]:
        click.echo(f"Warning: {support['warning']}", err=True)
    click.echo(f"Triggers:   {', '.join(data['outbound_triggers']) or 'none enabled'}")
    for key, value in data["counts"].items():
        click.echo(f"{key.replace('_', ' ').capitalize() + ':':<22}{value}")
    if data["last_polls"]:
        for name, cursor in data["last_polls"].items():
            click.echo(f"Last poll {name}: {cursor['updated_at']} (cursor {cursor['value']})")
    else:
        click.echo("Last poll:  never")
    for e in data["recent_errors"]:
        click.echo(f"  #{e['Id']} {e['At']} {e['Level']} {e['Flow']}: {e['Message']}")


# -- settings ----------------------------------------------------------------------------


@click.group("settings")
def settings_group() -> None:
    """Subscription settings (klaviyo-sync.yaml)."""


@settings_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
@common_options
def settings_show_cmd(as_json: bool, config: str | None, hub_path: str | None) -> None:
    """Print every setting with its resolved value; secrets are masked."""
    settings = load_cli_settings(config)
    data = settings.display()
    if hub_path:
        data["hub"] = hub_path
    if as_json:
        emit_json(data)
        return
    _echo_settings(data)


def _setting_text(value: Any) -> str:
    """A setting's value as the specification writes it: booleans TRUE / FALSE ("Generate
    Events (TRUE/FALSE)"), no value "(none)"."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return "(none)" if value is None else str(value)


# Alike _echo_record in shape only: settings nest as ``key:`` blocks with lists on one line,
# records align their keys and number list items.
def _echo_settings(data: dict[str, Any], indent: str = "") -> None:
    for key, value in data.items():
        if isinstance(value, dict):
            click.echo(f"{indent}{key}:")
            _echo_settings(value, indent + "  ")
        elif isinstance(value, list):
            click.echo(f"{indent}{key}: {', '.join(map(_setting_text, value))}")
        else:
            click.echo(f"{indent}{key}: {_setting_text(value)}")


def register(group: click.Group) -> None:
    """Add the hub, errors, status and settings commands."""
    for command in (hub_group, errors_cmd, status_cmd, settings_group):
        group.add_command(command)
