"""Shared pytest fixtures. Fixture modules live beside this file as ``_*_fixtures.py``
and are re-exported here, one import line each."""
from _hub_fixtures import hub, hub_backend, hub_factory  # noqa: F401,E402
from _inbound_fixtures import inbound, inbound_factory  # noqa: F401,E402
from _log_fixtures import engine_logging_reset  # noqa: F401,E402
from _outbound_fixtures import outbound, outbound_factory  # noqa: F401,E402
from _sandbox_fixtures import sandbox, sandbox_api_key, sandbox_factory  # noqa: F401,E402
from _worker_fixtures import jobs_url  # noqa: F401,E402


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Deselect the PostgreSQL variant of tests marked ``sqlite_only`` (they are about the file)."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("hub_backend") if callspec is not None else None
        (dropped if backend == "postgresql" and item.get_closest_marker("sqlite_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
