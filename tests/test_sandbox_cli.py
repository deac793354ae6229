"""The ``klaviyo-sync sandbox serve`` command line."""

from __future__ import annotations

from click.testing import CliRunner

from engine.cli import main


def test_serve_help_lists_the_sandbox_options() -> None:
    """`sandbox serve --help` documents port, keys, latency, faults, limits and state file."""
    result = CliRunner().invoke(main, ["sandbox", "serve", "--help"])
    assert 0 == result.exit_code
    for option in ("--port", "--api-key", "--latency-ms", "--fault-5xx", "--fault-timeout", "--fault-drop",
                   "--no-rate-limits", "--state"):
        assert option in result.output


def test_serve_rejects_tiers_that_are_not_json() -> None:
    """A malformed --tiers value is a usage error naming the option."""
    result = CliRunner().invoke(main, ["sandbox", "serve", "--tiers", "{nope"])
    assert 2 == result.exit_code
    assert "--tiers" in result.output
