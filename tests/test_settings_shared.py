"""The settings of a shared deployment: subscription, a PostgreSQL hub, the shared rate budget, the account."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SettingsErrors
from engine.settings import load_settings


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_keep_one_subscription_in_a_file_with_a_budget_per_process(tmp_path: Path) -> None:
    """Without the keys: subscription "default", the SQLite file, no shared budget, no account name."""
    settings = load_settings(_file(tmp_path, "name: x\n"), env={})
    assert ("default", None, tmp_path / "klaviyo-sync.db", None, None) == (
        settings.subscription, settings.hub_url, settings.hub_path, settings.rate_budget, settings.account)


def test_shared_keys_resolve_and_their_passwords_are_masked(tmp_path: Path) -> None:
    """${ENV} in hub and rate_budget is expanded; the passwords are secrets, masked in settings show."""
    path = _file(tmp_path, "hub: postgresql://ks:${PGPW}@db.internal/klaviyo\nsubscription: shop_eu\n"
                           "rate_budget: redis://:${REDISPW}@cache.internal:6379/2\naccount: acct.eu-1\n")
    settings = load_settings(path, env={"PGPW": "pg-secret-1", "REDISPW": "redis-secret-2"})
    assert "postgresql://ks:pg-secret-1@db.internal/klaviyo" == settings.hub_url
    assert ("shop_eu", "acct.eu-1") == (settings.subscription, settings.account)
    assert {"pg-secret-1", "redis-secret-2"} <= set(settings.secrets())
    shown = repr(settings.display())
    assert "pg-secret-1" not in shown and "redis-secret-2" not in shown and "db.internal" in shown


def test_the_environment_overrides_the_hub_and_the_budget(tmp_path: Path) -> None:
    """$KLAVIYO_SYNC_HUB and $KLAVIYO_SYNC_RATE_BUDGET win over the file's keys."""
    path = _file(tmp_path, "hub: local.db\nrate_budget: redis://a:6379/0\n")
    settings = load_settings(path, env={"KLAVIYO_SYNC_HUB": "postgres://h/db", "KLAVIYO_SYNC_RATE_BUDGET": "redis://b/1"})
    assert ("postgres://h/db", "redis://b/1") == (settings.hub_url, settings.rate_budget)


@pytest.mark.parametrize(("text", "message"), [
    ("subscription: Shop-EU\n", "subscription: must be 1 to 40 lower-case letters, digits or underscores"),
    ("rate_budget: http://cache:6379\n", "rate_budget: must be a redis:// or rediss:// URL"),
    ("account: 'has space'\n", "account: must be 1 to 80 letters, digits or . _ : -"),
    ("hub: ${UNSET_PG}\n", "hub: environment variable UNSET_PG is not set"),
])
def test_bad_shared_keys_are_located_errors(tmp_path: Path, text: str, message: str) -> None:
    """Each bad key is one located S002/S003 error naming the key."""
    path = _file(tmp_path, text)
    with pytest.raises(SettingsErrors) as info:
        load_settings(path, env={})
    assert 1 == len(info.value.errors) and message in str(info.value.errors[0])
    assert str(info.value.errors[0]).startswith(f"{path}:1:")
