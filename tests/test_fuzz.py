"""Fuzzing the four ways bad input gets in: JSONL lines, collection YAML, settings YAML and CLI arguments.

Each test runs a bounded number of derandomized examples (a few seconds each, so CI runs them
every time) built from valid structure with hostile values mixed in: huge and negative integers,
lone surrogates, NaN, deep nesting, aliases, tags, bytes that are not UTF-8.  A test fails on any
exception that is not one of ours (or click's usage errors): that is, on any traceback.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.cli import main
from engine.collection import load_collections
from engine.errors import HubError, KlaviyoSyncError, SettingsError
from engine.hub import SqliteHub, import_jsonl
from engine.settings import load_settings

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
SHIPPED = Path(__file__).resolve().parent.parent / "collections"
CANARY = "pk_FUZZCANARY0123456789abcdef012345"


def _printable(text: str) -> bool:
    """Whether an error text can be printed as UTF-8 (a lone surrogate in it would crash the CLI)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- hostile values -------------------------------------------------------------------------

HUGE_INTS = st.sampled_from([2**63, 2**63 - 1, -(2**63) - 1, 2**64, 10**30, -1, 0, 10**4000])
SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udbff\udc00", "\udc80"])
ODD_TEXT = st.one_of(st.text(max_size=30), SURROGATES, st.sampled_from(["", " ", "\x00", "\u2028", "=", "~"]))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), HUGE_INTS, st.floats(allow_nan=True), ODD_TEXT)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(ODD_TEXT, inner, max_size=3)),
                           max_leaves=12)


def _deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


@st.composite
def hostile_lines(draw: st.DrawFn) -> bytes:
    """One JSONL line that may or may not be acceptable, never a valid record with a real Id."""
    fields = ["Id", "EmailAddress", "CustomerNumber", "FirstName", "CustomFields", "Addresses", "Phone", "Bogus"]
    kind = draw(st.sampled_from(["record", "value", "bytes", "deep", "nan", "digits"]))
    if kind == "record":
        record = {f: draw(JSON_VALUES) for f in draw(st.lists(st.sampled_from(fields), max_size=5, unique=True))}
        if isinstance(record.get("Id"), int) and 0 < record["Id"] < 2**63:
            record["Id"] = 2**63 + record["Id"]  # an in-range Id could update a good line's record
        if isinstance(record.get("EmailAddress"), str):
            record["EmailAddress"] += "@hostile.test"
        return json.dumps(record, allow_nan=True).encode()
    if kind == "value":
        return json.dumps(draw(JSON_VALUES), allow_nan=True).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=40)).replace(b"\n", b" ")
    if kind == "deep":
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return ('{"EmailAddress": "x@hostile.test", "CustomerNumber": "1", "CustomFields": '
                + _deep(draw(st.integers(60, 5000)), opener, closer)[: 10**6] + "}").encode()
    if kind == "nan":
        return b'{"EmailAddress": "n@hostile.test", "CustomerNumber": "1", "CustomFields": {"x": NaN}}'
    return b'{"Id": ' + b"9" * draw(st.integers(19, 6000)) + b', "EmailAddress": "d@hostile.test"}'


@FUZZ
@given(st.lists(st.tuples(st.booleans(), hostile_lines()), min_size=1, max_size=12), st.integers(1, 5))
def test_fuzzed_jsonl_stores_every_good_line_and_raises_nothing(lines: list[tuple[bool, bytes]], batch: int) -> None:
    """Random hostile lines mixed with good ones: nothing raises, every good line is stored, only bad lines are reported."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.jsonl"
        content, good = [], {}
        for number, (is_good, hostile) in enumerate(lines, start=1):
            if is_good:
                good[number] = f"good{number}@example.com"
                content.append(json.dumps({"EmailAddress": good[number], "CustomerNumber": str(number)}).encode())
            else:
                content.append(hostile)
        path.write_bytes(b"\n".join(content) + b"\n")
        hub = SqliteHub(Path(tmp) / "hub.db")
        try:
            report = import_jsonl(hub, "customers", path, batch=batch)
            stored = {c["EmailAddress"] for c in hub.iter_customers()}
        finally:
            hub.close()
    assert set(good.values()) <= stored
    assert all(isinstance(e, HubError) and e.location.line not in good for e in report.errors)
    assert all(e.location.file == str(path) and _printable(str(e)) for e in report.errors)


# -- collection YAML --------------------------------------------------------------------------

YAML_FRAGMENTS = st.one_of(
    st.sampled_from([
        "x: &a [1, 2, 3]\ny: [*a, *a, *a]\n", "value: !!python/object:os.system {}\n", "value: !foo bar\n",
        "rows: *undefined\n", "<<: {a: 1}\n", "value: 2023-13-45\n", "value: " + "9" * 5000 + "\n",
        "\t- tab\n", "? [a, b]\n: c\n", "title: dup\ntitle: dup\n", "value: =\n", "%YAML 1.1\n---\n",
        "--- a\n--- b\n", "formula: \"\\ud800\"\n", "formula: __import__('os')\n",
        "formula: '9' * 10**9\n", "formula: [x for x in range(10**12)]\n",
    ]),
    st.integers(60, 3000).map(lambda n: "value: " + _deep(n) + "\n"),
    st.integers(101, 300).map(lambda n: "".join(" " * i + "k:\n" for i in range(n))),
    st.text(max_size=40),
    st.builds(lambda v: f"value: {v}\n", SCALARS.filter(lambda v: not isinstance(v, str)).map(repr)),
)


@st.composite
def collection_documents(draw: st.DrawFn) -> bytes:
    """A shipped collection with hostile fragments inserted at random lines (or raw random bytes)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    name = draw(st.sampled_from(sorted(p.name for p in SHIPPED.glob("*.yaml"))))
    lines = (SHIPPED / name).read_text(encoding="utf-8").splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(lines)))
        indent = " " * draw(st.sampled_from([0, 2, 4, 6]))
        fragment = "".join(indent + line + "\n" for line in draw(YAML_FRAGMENTS).splitlines())
        lines.insert(at, fragment)
    data = "".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=4)) + data[cut:]
    return data


@FUZZ
@given(collection_documents())
def test_fuzzed_collection_yaml_gives_located_errors_only(data: bytes) -> None:
    """A hostile collection file loads or gives located errors of our own; the shipped collection beside it loads."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.yaml"
        path.write_bytes(data)
        report = load_collections([path, SHIPPED / "add-profile-to-hub.yaml"])
    assert "Add Klaviyo Profile TO Hub" in [c.title for c in report.collections] or any(
        e.code == "C006" for e in report.errors)  # the fuzzed copy may have taken that title
    for error in [*report.errors, *report.warnings]:
        assert isinstance(error, KlaviyoSyncError) and error.location.file is not None
        assert _printable(str(error))


# -- settings YAML --------------------------------------------------------------------------

SETTINGS_KEYS = ["name", "version", "api_url", "api_key", "api_revision", "generate_events", "throttling",
                 "oauth", "outbound_triggers", "poll_interval", "hub", "collections", "request_timeout",
                 "client_secret", "L", "burst", "max_concurrency", "scopes"]
YAML_VALUES = st.one_of(
    st.sampled_from([CANARY, f"[{CANARY}]", f"{{client_secret: {CANARY}}}", f"- {CANARY}", "2023-13-45",
                     "1999-01-01", "2023-10-15", "0s", "-5", "5m", "99999999999h", "http://a.klaviyo.com",
                     "https://user:pw@a.klaviyo.com", "!!python/name:os.system", "!foo x", "&a [1]", "*a",
                     "~", "''", "'\\ud800'", "\"\\ud800\"", ".nan", "-.inf", "0x10", "yes", "1e999"]),
    st.integers(60, 2000).map(_deep),
    SCALARS.filter(lambda v: not isinstance(v, str)).map(repr),
    st.text(max_size=20).map(json.dumps),
)


@st.composite
def settings_documents(draw: st.DrawFn) -> bytes:
    """A settings mapping of known and misplaced keys with hostile values, nested and aliased."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        key = draw(st.sampled_from(SETTINGS_KEYS))
        if draw(st.booleans()):
            sub = draw(st.sampled_from(SETTINGS_KEYS))
            lines += [f"{key}:", f"  {sub}: {draw(YAML_VALUES)}"]
        else:
            lines.append(f"{key}: {draw(YAML_VALUES)}")
    data = "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n"
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=4)) + data[cut:]
    return data


@FUZZ
@given(settings_documents())
def test_fuzzed_settings_give_settings_errors_and_never_show_a_secret(data: bytes) -> None:
    """A hostile settings file loads or raises SettingsError; no error text contains the secret."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "klaviyo-sync.yaml"
        path.write_bytes(data)
        try:
            load_settings(path, env={})
        except SettingsError as err:
            text = str(err)
            assert CANARY not in text and _printable(text)
            errors = getattr(err, "errors", [err])
            assert all(e.location.file == str(path) for e in errors)


# -- CLI arguments --------------------------------------------------------------------------

ARG_VALUES = st.one_of(
    st.sampled_from([str(2**63), str(2**63 - 1), "0", "-1", "1", "99999", "65536", "nan", "inf", "-inf", "1e999",
                     "9" * 5000, "", " ", "-", "--", "0s", "5m", "-5s", "7", "0.5", "customer", "transaction",
                     "customers", "transactions", "error", "warning", "{}", '{"L": {"burst": 0}}', '{"Q": {}}',
                     "[", "2023-13-45", "\u2028", "é"]),
    st.integers().map(str),
    st.text(max_size=10),
)
# Commands that finish offline and quickly, invoked whole; their file arguments are drawn from FILES.
OFFLINE = [["validate"], ["map", "add-profile-to-hub"], ["hub", "show", "customer"], ["hub", "show", "transaction"],
           ["hub", "import", "customers"], ["hub", "export", "transactions"], ["errors"], ["status"],
           ["settings", "show"], ["docs"]]
OPTIONS = ["--json", "--limit", "--resolve", "--level", "--flow", "--all", "--strict", "--existing", "--links",
           "--no-children", "--hub", "--config", "--help"]
FILES = ["deep.json", "bad.jsonl", "folder", "missing.json", "hub.db", "-", "record.json", "bad.yaml"]


@st.composite
def offline_arguments(draw: st.DrawFn) -> list[str]:
    args = list(draw(st.sampled_from(OFFLINE)))
    for _ in range(draw(st.integers(0, 4))):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            args.append(draw(st.sampled_from(OPTIONS)))
        elif choice == 1:
            args.append(draw(ARG_VALUES))
        else:
            args.append("@" + draw(st.sampled_from(FILES)))
    return args


def _workspace(tmp: Path) -> None:
    (tmp / "deep.json").write_text(_deep(100_000), encoding="utf-8")
    (tmp / "record.json").write_text('{"email": "\\ud800", "phone_number": 1e999, "id": 18446744073709551616}',
                                     encoding="utf-8")
    (tmp / "bad.jsonl").write_bytes(b'{"Id": 9223372036854775808}\n\xff\n' + _deep(5000).encode() + b"\n")
    (tmp / "bad.yaml").write_bytes(b"a: &a [*a]\n")
    (tmp / "folder").mkdir()
    (tmp / "klaviyo-sync.yaml").write_text(f"api_key: {CANARY}\nhub: hub.db\napi_url: http://127.0.0.1:9\n",
                                           encoding="utf-8")


@FUZZ
@given(offline_arguments())
def test_fuzzed_offline_commands_never_raise_a_traceback(args: list[str]) -> None:
    """Random arguments to the offline commands (run whole, in-process) end in an exit code, never an exception."""
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        _workspace(tmp)
        argv = [str(tmp / a[1:]) if a.startswith("@") else a for a in args]
        env = {"KLAVIYO_SYNC_CONFIG": str(tmp / "klaviyo-sync.yaml"), "KLAVIYO_API_KEY": ""}
        result = runner.invoke(main, argv, env=env, input="")
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, result.exception)
    assert CANARY not in result.output


EVERY_COMMAND = [["push", "customer"], ["push", "transaction"], ["dispatch"], ["poll"], ["sync", "profile"],
                 ["sandbox", "serve"], ["auth", "login"], ["auth", "status"], ["demo"], ["serve"],
                 *OFFLINE]
ALL_OPTIONS = OPTIONS + ["--batch", "--lease", "--every", "--since", "--port", "--latency-ms", "--fault-5xx",
                         "--fault-timeout", "--fault-drop", "--timeout-hold", "--tiers", "--state", "--seed",
                         "--customers", "--transactions", "--profiles", "--timeout", "--dry-run", "--dir", "--host",
                         "--format", "--out"]


def _parse_only(argv: list[str]) -> None:
    """Parse ``argv`` as ``klaviyo-sync`` would, down to the last subcommand, without running it."""
    ctx = main.make_context("klaviyo-sync", list(argv))
    command: click.Command = main
    with ctx:
        while isinstance(command, click.Group) and ctx.args:  # click 8.2+: args holds every unparsed token
            name, sub, rest = command.resolve_command(ctx, list(ctx.args))
            assert sub is not None and name is not None
            ctx = sub.make_context(name, rest, parent=ctx)
            command = sub


@FUZZ
@given(st.sampled_from(EVERY_COMMAND), st.lists(st.one_of(st.sampled_from(ALL_OPTIONS), ARG_VALUES), max_size=6))
def test_fuzzed_arguments_of_every_command_parse_or_give_a_usage_error(command: list[str], extra: list[str]) -> None:
    """Every command's arguments (parsed, not run: some commands serve forever) convert or fail as click usage errors."""
    try:
        _parse_only([*command, *extra])
    except (click.exceptions.UsageError, click.exceptions.Exit):
        pass  # a usage error (exit 2) or --help / --version (exit 0)

