"""Bad input never crashes a command: hostile YAML (collections and settings), secrets in the wrong
place, out-of-range CLI arguments, corrupt sandbox state.  Each gives a located error, never a
traceback, a hang or an exhausted memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from engine._yaml import load_with_marks
from engine.cli import main
from engine.collection import load_collections
from engine.errors import CollectionError, SettingsError, SettingsErrors
from engine.settings import SCHEMA_PATH, load_settings

SHIPPED = Path(__file__).resolve().parent.parent / "collections"
BIG = str(2**63)

_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))

# Hostile YAML documents and the error each gives (line:col: CODE message after the file name).
HOSTILE_YAML = [
    pytest.param(_BOMB.encode(), "5:4: C017 more than 100000 values once aliases are expanded", id="alias-bomb"),
    pytest.param(("a: " + "[" * 100_000 + "]" * 100_000).encode(), "1:103: C017 nested deeper than 100 levels",
                 id="flow-nesting-100000"),
    pytest.param("".join(" " * i + "k:\n" for i in range(150)).encode(), "101:101: C017 nested deeper than 100 levels",
                 id="block-nesting-150"),
    pytest.param(b"a: &a [*a]\n", "1:4: C017 nested deeper than 100 levels", id="recursive-alias"),
    pytest.param(b"a: !!python/object/apply:os.system [echo hi]\n",
                 "1:4: C018 unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' (only plain "
                 "strings, numbers, booleans, null, dates, lists and mappings)", id="python-tag"),
    pytest.param(b"a: !foo bar\n", "1:4: C018 unsupported YAML tag '!foo' (only plain strings, numbers, booleans, "
                 "null, dates, lists and mappings)", id="local-tag"),
    pytest.param(b"x: 1\na: \xff\xfe\n", "2:4: C019 not UTF-8 text: byte 0xff cannot be decoded", id="non-utf8"),
    pytest.param(b"a: \x00\n", "1:4: C001 YAML error: character U+0000 is not allowed in YAML", id="nul-character"),
    pytest.param(b"a: " + b"9" * 5000 + b"\n", "1:4: C017 integer with 5000 characters is too large", id="huge-int"),
    pytest.param(b"a: b\na: c\n", "2:1: C003 duplicate key 'a' (first defined on line 1); the later value would "
                 "silently replace the earlier one", id="duplicate-key"),
]


@pytest.mark.parametrize(("data", "expected"), HOSTILE_YAML)
def test_hostile_yaml_is_refused_with_a_located_error(data: bytes, expected: str) -> None:
    """Alias bombs, deep nesting, unknown tags, bad bytes and huge numbers are located YAML errors."""
    with pytest.raises(CollectionError) as info:
        load_with_marks(data, "x.yaml")
    assert f"x.yaml:{expected}" == str(info.value)


def test_a_yaml_file_over_one_mebibyte_is_refused_unread() -> None:
    """A document larger than 1 MiB is refused before it is parsed."""
    with pytest.raises(CollectionError) as info:
        load_with_marks(b"a: " + b"x" * (1024 * 1024), "x.yaml")
    assert "x.yaml: C017 file is larger than 1048576 bytes" == str(info.value)


def test_an_impossible_date_stays_the_text_as_written() -> None:
    """A date-shaped scalar that is no real date (2023-13-45) is read as the string, not a traceback."""
    assert {"a": "2023-13-45", "b": "="} == load_with_marks("a: 2023-13-45\nb: =\n", "x.yaml")[0]


@pytest.mark.parametrize(("data", "expected"), HOSTILE_YAML)
def test_validate_reports_hostile_collections_at_file_line_col(tmp_path: Path, data: bytes, expected: str) -> None:
    """`validate` lists a hostile collection as FILE:LINE:COL: CODE message, exit 1, and still checks the others."""
    folder = tmp_path / "collections"
    folder.mkdir()
    (folder / "bad.yaml").write_bytes(data)
    good = SHIPPED / "add-profile-to-hub.yaml"
    (folder / good.name).write_text(good.read_text(encoding="utf-8"), encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(folder / "bad.yaml"), str(folder / good.name)],
                                catch_exceptions=False)
    assert 1 == result.exit_code
    assert f"{folder / 'bad.yaml'}:{expected}" == result.stderr.splitlines()[0]
    assert "1 collection(s) valid, 1 error(s), 0 warning(s)" in result.stderr


def test_load_collections_reports_a_non_utf8_collection_and_loads_the_others(tmp_path: Path) -> None:
    """A collection file with bytes that are not UTF-8 is a C019 error at its line and column; the others still load."""
    (tmp_path / "bad.yaml").write_bytes(b"title: \xff\n")
    good = SHIPPED / "add-profile-to-hub.yaml"
    report = load_collections([tmp_path / "bad.yaml", good])
    [error] = report.errors
    assert (f"{tmp_path / 'bad.yaml'}:1:8: C019 not UTF-8 text: byte 0xff cannot be decoded",
            ["Add Klaviyo Profile TO Hub"]) == (str(error), [c.title for c in report.collections])


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), HOSTILE_YAML)
def test_hostile_settings_files_are_located_settings_errors(tmp_path: Path, data: bytes, expected: str) -> None:
    """Every hostile YAML document in a settings file gives one S001 SettingsError at its line and column."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_bytes(data)
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    where, _, rest = expected.partition(" ")
    message = rest.partition(" ")[2].removeprefix("YAML error: ")
    assert f"{path}:{where} S001 invalid YAML: {message}" == str(info.value)


def test_a_settings_file_over_one_mebibyte_is_refused(tmp_path: Path) -> None:
    """A settings file larger than 1 MiB is an S001 error, not read into memory."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_bytes(b"name: " + b"x" * (2 * 1024 * 1024))
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    assert f"{path}: S001 invalid YAML: file is larger than 1048576 bytes" == str(info.value)


def test_a_settings_path_that_is_a_folder_is_an_error(tmp_path: Path) -> None:
    """A settings path naming a folder gives S004 'cannot read', not a traceback."""
    with pytest.raises(SettingsError) as info:
        load_settings(tmp_path, env={})
    assert f"{tmp_path}: S004 cannot read the settings file: Is a directory" == str(info.value)


CANARY = "pk_CANARY0123456789abcdef0123456789"
TOP_KEYS = list(json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))["properties"])  # the settings keys, in order
SECRET = "CanarySecret0123456789xyz"

# Settings whose errors must name the place and the type but never the canary value.
SECRET_CASES = [
    pytest.param(f"oauth:\n  - client_secret: {SECRET}\n", ["2:3: S002 oauth: must be a mapping, got a list (value not shown)"],
                 id="oauth-as-a-list"),
    pytest.param(f"oauth: {SECRET}\n", ["1:8: S002 oauth: must be a mapping, got a string (value not shown)"],
                 id="oauth-as-a-string"),
    pytest.param(f"api_key: [{CANARY}]\n",
                 ["1:10: S002 api_key: must be a string or ${ENV_VAR} reference (value not shown)"], id="api-key-list"),
    pytest.param(f"oauth: {{client_secret: {{nested: {SECRET}}}}}\n",
                 ["1:24: S002 oauth.client_secret: must be a string or ${ENV_VAR} reference (value not shown)"],
                 id="client-secret-mapping"),
    pytest.param(f"oauth: {{redirect_url: {SECRET}}}\n",
                 ["1:23: S002 oauth.redirect_url: must be an http(s) URL, got a string (value not shown)"],
                 id="secret-as-redirect-url"),
    pytest.param(f"api_revision: {CANARY}\n",
                 ["1:15: S002 api_revision: must be a revision date such as 2023-10-15, got a string "
                  "(value not shown)"], id="key-as-revision"),
    pytest.param(f"api_url: {CANARY}\n",
                 ["1:10: S002 api_url: must be an http(s) URL such as https://a.klaviyo.com, got a string "
                  "(value not shown)"], id="key-as-api-url"),
    pytest.param(f"generate_events: {SECRET}\n",
                 ["1:18: S002 generate_events: must be TRUE or FALSE, got a string (value not shown)"],
                 id="secret-as-generate-events"),
    pytest.param(f"name: {{client_secret: {SECRET}}}\n", ["1:7: S002 name: must be a string, got a mapping"],
                 id="secret-under-name"),
    pytest.param(f"throttling:\n  L: {CANARY}\n",
                 ["2:6: S002 throttling.L: must be a mapping, got a string (value not shown)"], id="key-as-tier"),
    pytest.param(f"throttling: {{client_secret: {SECRET}}}\n",
                 ["1:14: S002 throttling.client_secret: unknown key (valid: XS, S, M, L, XL, max_concurrency)"],
                 id="secret-under-throttling"),
    pytest.param(f"{CANARY}: 1\n",
                 [f"1:1: S002 unknown key that looks like a key or token (not shown; valid: {', '.join(TOP_KEYS)})"],
                 id="key-as-a-key"),
    pytest.param(f"hub: [{CANARY}]\n", ["1:6: S002 hub: must be a string, got a list"], id="key-in-hub-list"),
]


@pytest.mark.parametrize(("text", "messages"), SECRET_CASES)
def test_settings_errors_never_show_a_secret(tmp_path: Path, text: str, messages: list[str]) -> None:
    """A secret written in the wrong place or shape is reported by path and type, never by value."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsErrors) as info:
        load_settings(path, env={})
    assert [f"{path}:{m}" for m in messages] == [str(e) for e in info.value.errors]
    assert (CANARY not in str(info.value)) and (SECRET not in str(info.value))


def test_settings_show_prints_no_secret_for_a_broken_file(tmp_path: Path) -> None:
    """`settings show` (a real process) on a file with secrets in wrong places exits 2, prints no secret."""
    path = tmp_path / "klaviyo-sync.yaml"
    path.write_text(f"oauth:\n  - {SECRET}\napi_revision: {CANARY}\nname: {{api_key: {CANARY}}}\n", encoding="utf-8")
    for args in (["settings", "show"], ["settings", "show", "--json"], ["status"]):
        proc = subprocess.run([sys.executable, "-m", "engine", *args, "--config", str(path)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert (2, "") == (proc.returncode, proc.stdout)
        assert "Traceback" not in proc.stderr and CANARY not in proc.stderr and SECRET not in proc.stderr
        assert f"{path}:2:3: S002 oauth: must be a mapping, got a list (value not shown)" in proc.stderr


# -- CLI arguments ------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with a settings file whose hub is hub.db."""
    (tmp_path / "klaviyo-sync.yaml").write_text("api_key: pk_test\nhub: hub.db\n", encoding="utf-8")
    return tmp_path


def _run(workdir: Path, *args: str) -> Result:
    env = {"KLAVIYO_SYNC_CONFIG": str(workdir / "klaviyo-sync.yaml"), "KLAVIYO_API_KEY": ""}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


RANGE = "must be between 1 and 9223372036854775807"


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(["hub", "show", "customer", BIG], f"Invalid value for 'RECORD_ID': {RANGE}, got {BIG}",
                 id="hub-show-2**63"),
    pytest.param(["hub", "show", "transaction", "0"], f"Invalid value for 'RECORD_ID': {RANGE}, got 0",
                 id="hub-show-0"),
    pytest.param(["hub", "show", "customer", "9" * 5000], "Invalid value for 'RECORD_ID': '99999999999999999999999"
                 "99999999999999...' is not an integer", id="hub-show-5000-digits"),
    pytest.param(["push", "customer", BIG], f"Invalid value for 'RECORD_ID': {RANGE}, got {BIG}", id="push-2**63"),
    pytest.param(["push", "transaction", "--", "-1"], f"Invalid value for 'RECORD_ID': {RANGE}, got -1", id="push-negative"),
    pytest.param(["errors", "--resolve", BIG], f"Invalid value for '--resolve': {RANGE}, got {BIG}",
                 id="errors-resolve-2**63"),
    pytest.param(["errors", "--limit", "0"], f"Invalid value for '--limit': {RANGE}, got 0", id="errors-limit-0"),
    pytest.param(["dispatch", "--limit", BIG], f"Invalid value for '--limit': {RANGE}, got {BIG}",
                 id="dispatch-limit-2**63"),
    pytest.param(["dispatch", "--batch", "0"], "Invalid value for '--batch': must be between 1 and 100000, got 0",
                 id="dispatch-batch-0"),
    pytest.param(["dispatch", "--lease", "nan"], "Invalid value for '--lease': must be between 1 and 86400, got nan",
                 id="dispatch-lease-nan"),
    pytest.param(["dispatch", "--lease", "1e999"], "Invalid value for '--lease': must be between 1 and 86400, got 1e999",
                 id="dispatch-lease-inf"),
    pytest.param(["auth", "login", "--timeout", "nan"],
                 "Invalid value for '--timeout': must be between 1 and 3600, got nan", id="auth-timeout-nan"),
    pytest.param(["auth", "login", "--timeout", "inf"],
                 "Invalid value for '--timeout': must be between 1 and 3600, got inf", id="auth-timeout-inf"),
    pytest.param(["sandbox", "serve", "--port", "99999"],
                 "Invalid value for '--port': must be between 0 and 65535, got 99999", id="sandbox-port-99999"),
    pytest.param(["sandbox", "serve", "--fault-5xx", "7"],
                 "Invalid value for '--fault-5xx': must be between 0 and 1, got 7", id="sandbox-fault-7"),
    pytest.param(["sandbox", "serve", "--fault-drop", "-0.1"],
                 "Invalid value for '--fault-drop': must be between 0 and 1, got -0.1", id="sandbox-drop-negative"),
    pytest.param(["sandbox", "serve", "--latency-ms", "inf"],
                 "Invalid value for '--latency-ms': must be between 0 and 60000, got inf", id="sandbox-latency-inf"),
    pytest.param(["sandbox", "serve", "--tiers", '{"Q": {"burst": 1}}'],
                 "Invalid value for --tiers: unknown Klaviyo rate tier 'Q'; known: XS, S, M, L, XL",
                 id="sandbox-unknown-tier"),
    pytest.param(["sandbox", "serve", "--tiers", '{"L": 5}'],
                 'Invalid value for --tiers: must be a JSON object of tiers, e.g. {"L": {"burst": 10, "steady": 100}}',
                 id="sandbox-tier-not-an-object"),
])
def test_out_of_range_arguments_are_usage_errors(workdir: Path, args: list[str], expected: str) -> None:
    """An out-of-range number or id is a click usage error (exit 2) naming the range, never a traceback."""
    result = _run(workdir, *args)
    assert 2 == result.exit_code
    assert f"Error: {expected}" == result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("every", ["0s", "0", "999999h", "0.2s"])
def test_poll_every_out_of_range_is_refused(workdir: Path, every: str) -> None:
    """`poll --every` below 1 s or above a week is an S010 error (exit 2) before anything is polled."""
    result = _run(workdir, "poll", "--every", every)
    assert (2, f"S010 --every must be between 1s and 7 days, got {every!r}") == (
        result.exit_code, result.stderr.strip())


def test_map_refuses_deeply_nested_json(tmp_path: Path) -> None:
    """`map` with a 100,000-deep JSON record gives a clear error, exit 1, no traceback."""
    record = tmp_path / "deep.json"
    record.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    result = CliRunner().invoke(main, ["map", "add-profile-to-hub", str(record)], catch_exceptions=False)
    assert (1, f"Error: {record}: record is nested deeper than 64 levels") == (result.exit_code, result.stderr.strip())


def test_map_refuses_a_record_that_is_not_utf8(tmp_path: Path) -> None:
    """`map` with bytes that are not UTF-8 names the file, line and column."""
    record = tmp_path / "bad.json"
    record.write_bytes(b'{\n  "a": "\xff"\n}\n')
    result = CliRunner().invoke(main, ["map", "add-profile-to-hub", str(record)], catch_exceptions=False)
    assert (1, f"Error: {record}:2:9: record is not UTF-8 text") == (result.exit_code, result.stderr.strip())


# -- sandbox serve (real processes) ------------------------------------------------------------


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine", "sandbox", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("content", "reason"), [
    pytest.param(b"{not json", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
                 id="not-json"),
    pytest.param(b"[1, 2]", "not a sandbox state file (TypeError: cannot convert dictionary update sequence "
                 "element #0 to a sequence)", id="a-list"),
    pytest.param(b'{"profiles": {}, "settings": {}}', "not a sandbox state file: expected the keys profiles, "
                 "lists, metrics, events, jobs, got 'settings'", id="other-keys"),
    pytest.param(b'{"metrics": {}}', "not a sandbox state file: expected the keys profiles, lists, metrics, "
                 "events, jobs", id="no-profiles-nor-lists"),
    pytest.param(b"\xff\xfe", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
                 id="not-utf8"),
    pytest.param(b"[" * 100_000, "nested too deeply", id="deep"),
])
def test_serve_refuses_a_corrupt_state_file_and_leaves_it_alone(tmp_path: Path, content: bytes, reason: str) -> None:
    """A corrupt --state file is a usage error naming the file; it is not overwritten."""
    state = tmp_path / "state.json"
    state.write_bytes(content)
    proc = _serve("--state", str(state))
    assert 2 == proc.returncode
    assert f"Error: Invalid value for --state: {state}: cannot load the sandbox state: {reason}" == (
        proc.stderr.strip().splitlines()[-1])
    assert content == state.read_bytes()


def test_serve_reports_a_port_it_cannot_listen_on(tmp_path: Path) -> None:
    """A host that is not an address of this machine is a one-line error, exit 1, no traceback."""
    proc = _serve("--host", "192.0.2.1")
    assert 1 == proc.returncode
    assert proc.stderr.startswith("Error: cannot listen on 192.0.2.1:0: ")
    assert "Traceback" not in proc.stderr


def test_serve_refuses_rates_outside_zero_to_one_in_a_real_process() -> None:
    """`sandbox serve --fault-5xx 7` exits 2 with the range, in a real process."""
    proc = _serve("--fault-5xx", "7")
    assert (2, "Error: Invalid value for '--fault-5xx': must be between 0 and 1, got 7") == (
        proc.returncode, proc.stderr.strip().splitlines()[-1])


def test_export_and_import_round_trip_with_hostile_lines(workdir: Path) -> None:
    """`hub import` (in-process CLI) stores the good lines around hostile ones and exits 1."""
    path = workdir / "c.jsonl"
    path.write_bytes(b'{"EmailAddress": "a@example.com", "CustomerNumber": "1"}\n'
                     b'{"Id": 9223372036854775808, "EmailAddress": "b@example.com", "CustomerNumber": "2"}\n'
                     b'{"EmailAddress": "c@example.com", "CustomerNumber": "\\ud800"}\n'
                     b'{"EmailAddress": "d@example.com", "CustomerNumber": "4"}\n')
    result = _run(workdir, "hub", "import", "customers", str(path))
    assert 1 == result.exit_code
    assert [f"{path}:2: H001 Customer.Id {RANGE}, got {BIG} (record {BIG})",
            f"{path}:3: H001 Customer.CustomerNumber contains a lone surrogate (\\ud800), which is not valid text",
            ] == result.stderr.splitlines()
    shown = _run(workdir, "hub", "show", "customer", "2", "--json")
    assert "d@example.com" == json.loads(shown.output)["EmailAddress"]
