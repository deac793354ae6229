"""The CLI reference (docs/cli.md), generated from the commands' own help so it cannot drift.

Regenerate with ``.venv/bin/python -m engine.cli._reference > docs/cli.md``; a test fails when
the committed file differs from what the commands say.
"""

from __future__ import annotations

import click

from engine.cli import main


def _walk(cmd: click.Command, name: str, parent: click.Context | None) -> list[tuple[click.Context, click.Command]]:
    # Contexts are chained as a real invocation chains them, so inherited settings (the -h
    # alias of --help) show exactly as the user sees them.
    settings = {"terminal_width": 100, "max_content_width": 100, **cmd.context_settings}
    ctx = click.Context(cmd, info_name=name, parent=parent, **settings)
    out = [(ctx, cmd)]
    if isinstance(cmd, click.Group):
        for sub in sorted(cmd.commands):
            out.extend(_walk(cmd.commands[sub], sub, ctx))
    return out


def render() -> str:
    """docs/cli.md as text."""
    lines = ["# Command reference", "",
             "Generated from the commands' own `--help` "
             "(`.venv/bin/python -m engine.cli._reference > docs/cli.md`).", ""]
    for ctx, cmd in _walk(main, "klaviyo-sync", None):
        lines += [f"## `{ctx.command_path}`", "", "```text", cmd.get_help(ctx).rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
