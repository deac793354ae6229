"""The CLI reference (docs/cli.md), generated from the commands' own help so it cannot drift.

Regenerate with ``.venv/bin/python -m engine.cli._reference > docs/cli.md``; a test fails when
the committed file differs from what the commands say.
"""

from __future__ import annotations

import click

from engine.cli import main


def _walk(cmd: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out.extend(_walk(cmd.commands[name], path + [name]))
    return out


def render() -> str:
    """docs/cli.md as text."""
    lines = ["# Command reference", "",
             "Generated from the commands' own `--help` "
             "(`.venv/bin/python -m engine.cli._reference > docs/cli.md`).", ""]
    for path, cmd in _walk(main, ["klaviyo-sync"]):
        ctx = click.Context(cmd, info_name=" ".join(path), terminal_width=100, max_content_width=100)
        lines += [f"## `{' '.join(path)}`", "", "```text", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
