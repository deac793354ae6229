"""Shared pytest fixtures. Fixture modules live beside this file as ``_*_fixtures.py``
and are re-exported here, one import line each."""
from _hub_fixtures import hub, hub_factory  # noqa: F401,E402
from _inbound_fixtures import inbound, inbound_factory  # noqa: F401,E402
from _log_fixtures import engine_logging_reset  # noqa: F401,E402
from _outbound_fixtures import outbound, outbound_factory  # noqa: F401,E402
from _sandbox_fixtures import sandbox, sandbox_api_key, sandbox_factory  # noqa: F401,E402
