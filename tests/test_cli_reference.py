"""docs/cli.md documents every command exactly as its --help does."""

from pathlib import Path

from engine.cli._reference import render


def test_cli_reference_is_current() -> None:
    """The committed command reference equals the one generated from the commands."""
    expected = render()
    actual = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    assert expected == actual, "docs/cli.md is stale: .venv/bin/python -m engine.cli._reference > docs/cli.md"
