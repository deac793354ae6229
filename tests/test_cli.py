"""The command line's top level."""

from click.testing import CliRunner

from engine.cli import main


def test_help_lists_the_program() -> None:
    """`klaviyo-sync --help` describes the product and exits 0."""
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "declarative YAML mapping" in result.output
