"""``klaviyo-sync validate`` and ``klaviyo-sync map``: the collection commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from engine._json import nested_deeper_than
from engine.cli._auth import validate_scopes
from engine.cli._output import emit_json
from engine.collection import CollectionSet, load_collections
from engine.errors import KlaviyoSyncError, Location, RevisionPastSupportWarning
from engine.formula.helpers import bind_helpers
from engine.klaviyo import revision as rev
from engine.runner import INVALID, Runner, flatten_jsonapi
from engine.settings import load_settings


class StaticResolver:
    """A resolver answering from a JSON links file, for ``map`` runs without a hub.

    The file looks like ``{"Customer": {"17": "01H8..."}, "emails": {"ann@example.com": "01H8..."}}``.
    """

    def __init__(self, links: dict[str, Any] | None = None) -> None:
        self.links = links or {}

    def get_external_id(self, entity: str, hub_id: Any) -> str | None:
        return (self.links.get(entity) or {}).get(str(hub_id))

    def get_customer_id_by_email(self, email: str) -> str | None:
        return (self.links.get("emails") or {}).get(email)


MAX_JSON_BYTES = 16 * 1024 * 1024  # a record file for ``map`` larger than this is refused
MAX_JSON_DEPTH = 64  # lists/objects nested deeper than this are refused (a record is a few levels deep)


def _read_json(path: str, what: str) -> Any:
    """Read a JSON file (or stdin for ``-``) for ``map``; any problem is a one-line error, never a traceback."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_JSON_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_JSON_BYTES:
        raise click.ClickException(f"{path}: {what} is larger than {MAX_JSON_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise click.ClickException(f"{path}:{line}:{column}: {what} is not UTF-8 text") from None
    if nested_deeper_than(text, MAX_JSON_DEPTH):  # refused before the parser recurses that deep
        raise click.ClickException(f"{path}: {what} is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"{path}:{exc.lineno}:{exc.colno}: {what} is not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise click.ClickException(f"{path}: {what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:  # an integer of more than 4300 digits
        raise click.ClickException(f"{path}: {what} holds an integer with too many digits") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise click.ClickException(f"{path}: {what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (walked without recursion; stops past the limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _print_problem(err: KlaviyoSyncError, kind: str) -> None:
    click.echo(f"{kind}: {err}" if kind == "warning" else str(err), err=True)


def collections_or_exit(paths: list[str] | None) -> CollectionSet:
    """The collections at ``paths`` (default: the shipped ones); with any error, each is printed
    as ``validate`` prints it and the command exits 1."""
    report = load_collections(paths)
    if report.errors:
        for e in report.errors:
            _print_problem(e, "error")
        sys.exit(1)
    return report.collections


def revision_warnings(config: str | None, hub_path: str | None) -> list[KlaviyoSyncError]:
    """``validate --config``: a warning (W021) at the settings' ``api_revision`` line when that
    revision is past Klaviyo's support window (two years after its release)."""
    if config is None and hub_path is None:
        return []
    try:
        settings = load_settings(config)
    except KlaviyoSyncError:
        return []  # the scope check reports the settings' own errors
    text = rev.support(settings.api_revision).warning()
    if text is None:
        return []
    location = Location()
    if settings.source:
        location = Location(file=str(settings.source))
        try:
            lines = Path(settings.source).read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for n, line in enumerate(lines, 1):
            if line.startswith("api_revision:"):
                location = Location(file=str(settings.source), line=n, column=1)
                break
    return [RevisionPastSupportWarning(text, location=location)]


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--strict", is_flag=True,
              help="Treat warnings (placeholders, unmapped SubscribeProfile, missing OAuth scopes) as errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@click.option("--config", "config", type=click.Path(dir_okay=False), envvar="KLAVIYO_SYNC_CONFIG",
              help="Settings file: also check the OAuth scopes of the connection stored in its hub (W020) "
                   "and the api_revision's support window (W021).")
@click.option("--hub", "hub_path", type=click.Path(dir_okay=False), envvar="KLAVIYO_SYNC_HUB",
              help="Hub SQLite file whose stored OAuth connection's scopes are checked (W020).")
def validate_cmd(paths: tuple[str, ...], strict: bool, as_json: bool, config: str | None,
                 hub_path: str | None) -> None:
    """Check collections: schema, formulas, names, parents. Exit 1 on any error.

    PATHS are collection files or directories (default: the shipped collections/).
    Every problem is listed as FILE:LINE:COL: CODE message.  With --config or --hub,
    each scope the enabled collections need that the stored OAuth connection lacks is
    a warning (W020) at the row that needs it, and an api_revision past Klaviyo's
    support window is a warning (W021) at its line in the settings file.
    """
    report = load_collections(list(paths) or None)
    scope_errors, scope_warnings = validate_scopes(config, hub_path, report.collections)
    report.errors.extend(scope_errors)
    report.warnings.extend(scope_warnings)
    report.warnings.extend(revision_warnings(config, hub_path))
    failed = bool(report.errors) or (strict and bool(report.warnings))
    if as_json:
        emit_json({
            "ok": not failed,
            "collections": [c.title for c in report.collections],
            "errors": [e.to_dict() for e in report.errors],
            "warnings": [w.to_dict() for w in report.warnings],
        })
    else:
        for e in report.errors:
            _print_problem(e, "error")
        for w in report.warnings:
            _print_problem(w, "warning")
        click.echo(
            f"{len(report.collections)} collection(s) valid, {len(report.errors)} error(s), "
            f"{len(report.warnings)} warning(s)",
            err=failed,
        )
    sys.exit(1 if failed else 0)


@click.command("map")
@click.argument("collection")
@click.argument("record", type=click.Path(allow_dash=True))
@click.option("--existing", type=click.Path(), help="JSON file: the existing destination record (Update collections).")
@click.option("--links", type=click.Path(),
              help='JSON file of links for get_external_id / get_customer_id_by_email: '
                   '{"Customer": {"17": "01H..."}, "emails": {"a@x.com": "01H..."}}.')
@click.option("--collections", "collections_dir", type=click.Path(),
              help="Collections directory (default: the shipped collections/).")
@click.option("--parent", "parent", type=click.Path(),
              help="JSON file: the parent's source record (child collections run alone).")
@click.option("--parent-mapped", "parent_mapped", type=click.Path(),
              help="JSON file: the parent's mapped payload (child collections run alone).")
@click.option("--no-children", is_flag=True, help="Do not run child collections.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (map always does; accepted like "
                                                      "every command's --json).")
def map_cmd(collection: str, record: str, existing: str | None, links: str | None,
            collections_dir: str | None, parent: str | None, parent_mapped: str | None,
            no_children: bool, as_json: bool) -> None:
    """Run one RECORD (a JSON file, or - for stdin) through COLLECTION and print the outcome.

    COLLECTION is a title ("Add Klaviyo Profile TO Hub") or a file name / stem
    (add-profile-to-hub). A Klaviyo JSON:API resource is accepted as is. Exit 1
    when the record is invalid or the collections do not load.
    """
    collections = collections_or_exit([collections_dir] if collections_dir else None)
    try:
        coll = collections.find(collection)
    except KlaviyoSyncError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    data = _read_json(record, "record")
    if not isinstance(data, dict):
        raise click.ClickException(f"{record}: a record must be a JSON object")
    if coll.direction == "to_hub":
        data = flatten_jsonapi(data)
    existing_data = _read_json(existing, "existing record") if existing else None
    resolver = StaticResolver(_read_json(links, "links") if links else None)
    runner = Runner(collections, functions=bind_helpers(resolver))
    outcome = runner.run(coll, data, existing=existing_data, with_children=not no_children,
                         parent=_read_json(parent, "parent record") if parent else None,
                         parent_mapped=_read_json(parent_mapped, "parent payload") if parent_mapped else None)
    emit_json(outcome.to_dict())
    sys.exit(1 if outcome.status == INVALID else 0)


def register(group: click.Group) -> None:
    group.add_command(validate_cmd)
    group.add_command(map_cmd)
