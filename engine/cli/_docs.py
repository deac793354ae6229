"""``klaviyo-sync docs``: the mapping documentation, generated from the collections."""

from __future__ import annotations

import click

from engine.cli._collections import collections_or_exit
from engine.cli._output import emit_json, fail
from engine.docgen import FORMATS, render_document, render_pages, write_pages
from engine.errors import KlaviyoSyncError


@click.command("docs")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True,
              help="Markdown, or HTML pages.")
@click.option("--out", "out", type=click.Path(file_okay=False),
              help="Write one page per collection and an index (README.md / index.html) into this folder, "
                   "made if missing; without it, print everything as one document.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"format", "out", "files"} (with --out) or {"format", "document"} as JSON.')
def docs_cmd(paths: tuple[str, ...], fmt: str, out: str | None, as_json: bool) -> None:
    """Generate the mapping documentation from the collections.

    PATHS are collection files or directories (default: the shipped collections/).  Per
    collection: its title, description, status, parent and children, filter, the mapping table
    (Mapping Type | Source Field | Destination Field | Description) with every formula in
    full, and the messages it can write to the error log.  Collections with errors are
    reported as validate reports them (exit 1) and nothing is written.  --out replaces only
    pages it generated before; a folder holding another file of a page's name is refused
    (exit 2).
    """
    collections = collections_or_exit(list(paths) or None)
    try:
        if out is None:
            document = render_document(collections, fmt)
            if as_json:
                emit_json({"format": fmt, "document": document})
            else:
                click.echo(document, nl=False)
            return
        written = write_pages(render_pages(collections, fmt), out)
    except KlaviyoSyncError as exc:
        fail(exc)
    if as_json:
        emit_json({"format": fmt, "out": out, "files": [str(p) for p in written]})
    else:
        click.echo(f"{len(written)} page(s) written to {out}", err=True)


def register(group: click.Group) -> None:
    group.add_command(docs_cmd)
