"""Subscription settings: defaults, resolution, validation with exact located messages, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SettingsError, SettingsErrors
from engine.settings import SHIPPED_COLLECTIONS, Secret, TierLimit, load_settings, parse_duration

KEY = "pk_0123456789abcdef0123456789abcdef01"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_missing_default_file_means_all_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no settings file every default applies (the sandbox demo needs none)."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert ("https://a.klaviyo.com", "2023-10-15", True, None) == (
        settings.api_url, settings.api_revision, settings.generate_events, settings.api_key)
    assert (300.0, frozenset()) == (settings.poll_interval, settings.outbound_triggers.entities())
    assert TierLimit(75, 700) == settings.throttling.tiers["L"]
    assert (tmp_path / "klaviyo-sync.db", SHIPPED_COLLECTIONS) == (settings.hub_path, settings.collections_dir)


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    """A settings path given explicitly must exist."""
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path / "nope.yaml", env={})
    assert f"S004 settings file not found: {tmp_path / 'nope.yaml'}" == str(info.value)


def test_env_config_names_the_file(tmp_path: Path) -> None:
    """KLAVIYO_SYNC_CONFIG points at the settings file when no path is given."""
    path = _file(tmp_path, "name: From env\n")
    assert "From env" == load_settings(env={"KLAVIYO_SYNC_CONFIG": str(path)}).name


def test_every_key_resolves(tmp_path: Path) -> None:
    """A full file resolves every key, paths relative to the file's folder."""
    path = _file(tmp_path, """\
name: Shop
version: v2.0
api_url: http://127.0.0.1:8080/
api_key: ${MY_KEY}
api_revision: 2026-07-15
generate_events: FALSE
throttling: {L: {burst: 5}, max_concurrency: 2}
oauth: {client_id: cid, client_secret: "${SECRET}", redirect_url: "https://x.example/cb", scopes: [profiles:read]}
outbound_triggers: {customer: true}
poll_interval: 30s
hub: data/hub.db
collections: mine
""")
    s = load_settings(path, env={"MY_KEY": KEY, "SECRET": "shh-123"})
    assert ("Shop", "v2.0", "http://127.0.0.1:8080", "2026-07-15", False) == (
        s.name, s.version, s.api_url, s.api_revision, s.generate_events)
    assert (KEY, "env:MY_KEY", "shh-123") == (s.api_key.reveal(), s.api_key.source, s.oauth.client_secret.reveal())
    assert (TierLimit(5, 750), 2) == (s.throttling.tiers["L"], s.throttling.max_concurrency)  # L is 750/min at 2026-07-15
    assert (("profiles:read",), "cid") == (s.oauth.scopes, s.oauth.client_id)
    assert frozenset({"Customer"}) == s.outbound_triggers.entities()
    assert (30.0, tmp_path / "data/hub.db", tmp_path / "mine") == (s.poll_interval, s.hub_path, s.collections_dir)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("generate_events: TRUE", True), ("generate_events: 'FALSE'", False), ("generate_events: 'true'", True),
     ("generate_events: false", False), ("api_revision:", True), ("api_revision: ''", True)],
)
def test_generate_events_and_blank_revision(tmp_path: Path, text: str, expected: bool) -> None:
    """Generate Events takes TRUE/FALSE in any quoting; a blank API Revision means 2023-10-15."""
    s = load_settings(_file(tmp_path, text + "\n"), env={})
    assert (expected, "2023-10-15") == (s.generate_events, s.api_revision)


def test_api_key_falls_back_to_the_environment(tmp_path: Path) -> None:
    """Without api_key in the file, KLAVIYO_API_KEY is used."""
    s = load_settings(_file(tmp_path, "name: x\n"), env={"KLAVIYO_API_KEY": KEY})
    assert (KEY, "env:KLAVIYO_API_KEY") == (s.api_key.reveal(), s.api_key.source)


@pytest.mark.parametrize(
    ("text", "messages"),
    [
        ("api_url: ftp://x\n",
         ['1:10: S002 api_url: must be an http(s) URL such as https://a.klaviyo.com, got "ftp://x"']),
        ("name: x\napi_revision: 15-10-2023\n",
         ['2:15: S002 api_revision: must be a revision date such as 2023-10-15, got "15-10-2023"']),
        ("generate_events: maybe\n", ['1:18: S002 generate_events: must be TRUE or FALSE, got "maybe"']),
        ("throttling:\n  L: {burst: 0}\n  Q: {}\n",
         ["2:14: S002 throttling.L.burst: must be at least 1, got 0",
          "3:3: S002 throttling.Q: unknown key (valid: XS, S, M, L, XL, max_concurrency)"]),
        ("outbound_triggers: {customer: yes please}\n",
         ['1:31: S002 outbound_triggers.customer: must be true or false, got a string "yes please"']),
        ("oauth:\n  scopes: [bad]\n",
         ['2:12: S002 oauth.scopes[0]: must be a Klaviyo scope such as profiles:read, got a string (value not shown)']),
        ("poll_interval: 5 minutes\n",
         ['1:16: S002 poll_interval: must be a duration such as 30s, 5m or 1h, got "5 minutes"']),
        ("api_key: ${NOT_SET}\n", ["1:10: S003 api_key: environment variable NOT_SET is not set"]),
        ("api_key: 98765432101234\n",
         ["1:10: S002 api_key: must be a string or ${ENV_VAR} reference (value not shown)"]),
        ("oauth: {client_secret: [s3cr3t-value]}\n",
         ["1:24: S002 oauth.client_secret: must be a string or ${ENV_VAR} reference (value not shown)"]),
        ("colour: blue\n",
         ["1:1: S002 colour: unknown key (valid: name, version, api_url, api_key, api_revision, generate_events, default_phone_region, "
          "throttling, oauth, outbound_triggers, poll_interval, request_timeout, request_deadline, "
          "max_response_bytes, hub, subscription, rate_budget, account, collections, service)"]),
        ("- a\n- b\n", ["1:1: S002 the settings file must be a mapping of keys to values"]),
        ("name: [unclosed\n",
         ["2:1: S001 invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence)"]),
        ("api_revision: 2023-13-45\n",
         ['1:15: S002 api_revision: must be a real calendar date YYYY-MM-DD, got "2023-13-45"']),
        ("poll_interval: 0s\n", ['1:16: S002 poll_interval: must be between 1s and 7 days (168h), got "0s"']),
        ("poll_interval: 0.5s\n", ['1:16: S002 poll_interval: must be between 1s and 7 days (168h), got "0.5s"']),
        ("poll_interval: 169h\n", ['1:16: S002 poll_interval: must be between 1s and 7 days (168h), got "169h"']),
        ("poll_interval: 0\n", ["1:16: S002 poll_interval: must be at least 1, got 0"]),
        ("poll_interval: -5\n", ["1:16: S002 poll_interval: must be at least 1, got -5"]),
        ("poll_interval: 99999999999\n", ["1:16: S002 poll_interval: must be at most 604800, got 99999999999"]),
        ("name: a\nhub: x.db\nname: b\n",
         ["3:1: S001 invalid YAML: duplicate key 'name' (first defined on line 1); the later value would silently "
          "replace the earlier one"]),
        ("throttling:\n  L: {burst: 2}\n  L: {burst: 3}\n",
         ["3:3: S001 invalid YAML: duplicate key 'L' (first defined on line 2); the later value would silently "
          "replace the earlier one"]),
    ],
)
def test_invalid_settings_have_exact_located_messages(tmp_path: Path, text: str, messages: list[str]) -> None:
    """Every problem is reported at file:line:col with the key path and an exact message."""
    path = _file(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    errors = info.value.errors if isinstance(info.value, SettingsErrors) else [info.value]
    assert [f"{path}:{m}" for m in messages] == [str(e) for e in errors]
    assert 2 == info.value.exit_code


def test_secrets_are_masked_in_repr_and_display(tmp_path: Path) -> None:
    """Neither repr(settings) nor display() shows the API key or client secret."""
    path = _file(tmp_path, f"api_key: {KEY}\noauth: {{client_secret: shh-secret-1}}\n")
    s = load_settings(path, env={})
    shown = repr(s) + str(s.display()) + str(s.api_key)
    assert KEY not in shown and "shh-secret-1" not in shown
    assert "******** (file)" == s.display()["api_key"]
    assert (KEY, "shh-secret-1") == s.secrets()


def test_secret_compares_by_value_and_never_prints() -> None:
    """A Secret equals another with the same value and prints as ********."""
    assert Secret("a1b2c3") == Secret("a1b2c3", "env:X")
    assert ("********", "Secret('********', source='file')") == (str(Secret("a1b2c3")), repr(Secret("a1b2c3")))


@pytest.mark.parametrize(("text", "seconds"), [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0)])
def test_durations_parse(text: str, seconds: float) -> None:
    """Poll intervals read as seconds, minutes or hours."""
    assert seconds == parse_duration(text)


def test_formulas_see_settings_without_secrets(tmp_path) -> None:
    """for_formulas() gives plain values and never the API key or the OAuth client secret."""
    from engine.settings import load_settings

    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text("api_key: pk_formula_secret_1234\noauth: {client_id: c, client_secret: s3cr3t-value}\n")
    seen = load_settings(path).for_formulas()
    assert {"name", "version", "api_url", "api_revision", "generate_events", "default_phone_region"} == set(seen)
    assert "pk_formula_secret_1234" not in repr(seen) and "s3cr3t-value" not in repr(seen)


@pytest.mark.parametrize("revision", ["1999-01-01", "2021-01-01", "2023-02-21.pre", "2023-10-16", "2099-01-15"])
def test_a_revision_klaviyo_does_not_publish_is_a_located_error(tmp_path: Path, revision: str) -> None:
    """Any date that is no Klaviyo revision (past, between two revisions, future) is S002 at its
    line:column, naming the revisions Klaviyo publishes."""
    path = _file(tmp_path, f"name: x\napi_revision: {revision}\n")
    with pytest.raises(SettingsErrors) as info:
        load_settings(path, env={})
    [error] = info.value.errors
    text = str(error)
    assert text.startswith(f'{path}:2:15: S002 api_revision: "{revision}" is not a Klaviyo API revision; '
                           "Klaviyo's revisions are 2022-10-17, 2023-02-22, ")
    assert "2023-10-15, 2023-12-15, 2024-02-15" in text and "2026-07-15" in text


def test_every_revision_of_the_table_and_its_beta_are_accepted(tmp_path: Path) -> None:
    """Each revision of engine.klaviyo.revision.REVISIONS, and the same with .pre, loads."""
    from engine.klaviyo.revision import REVISIONS

    for entry in REVISIONS:
        for revision in (entry.name, f"{entry.name}.pre"):
            assert revision == load_settings(_file(tmp_path, f"api_revision: {revision}\n"), env={}).api_revision
