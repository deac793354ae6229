"""Subscription settings: ``klaviyo-sync.yaml``, checked by ``schemas/settings.schema.json``.

The seeds' subscription settings (Name, Version, API Url, API Key, API
Revision, Generate Events, throttling, OAuth) plus what our product adds
(outbound triggers, poll interval, hub file, collections folder).  Every key
is optional, and a missing default file means all defaults, so the sandbox
demo runs with no settings file at all.

:func:`load_settings` reads the file, validates it, and resolves it into a
frozen :class:`Settings`.  Every problem is reported, each as
``file:line:col: CODE key.path: message`` (lines and columns from the YAML
nodes).  Secrets (the API key, the OAuth client secret) are held in
:class:`Secret`, whose ``repr``/``str`` are masked; call ``reveal()`` only
where the value is sent.

The file is read within bounds (1 MiB, nesting 100 levels, aliases limited, only
plain YAML tags, UTF-8; see :mod:`engine._yaml`), duplicate keys are refused,
and error messages never show a value in a secret's place (``api_key``,
``oauth``, tokens) nor one that looks like a key or token wherever it was put:
they give the path and the type instead.

Codes, one class each in :mod:`engine.errors`: S001 invalid YAML (syntax, encoding,
limits, tags, duplicate keys), S002 schema or value violation, S003 environment variable
not set, S004 settings file not found or unreadable.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import jsonschema

from engine._shipped import shipped
from engine._yaml import load_with_marks, read_yaml_file
from engine.errors import (
    CollectionError,
    Location,
    SettingsError,
    SettingsErrors,
    SettingsReadError,
    SettingsValueError,
    SettingsYamlError,
    UnsetVariableError,
)
from engine.klaviyo.ratelimit import tiers_for
from engine.logconfig import register_secret

DEFAULT_FILE: Final = "klaviyo-sync.yaml"
DEFAULT_API_URL: Final = "https://a.klaviyo.com"
DEFAULT_REVISION: Final = "2023-10-15"
DEFAULT_HUB: Final = "klaviyo-sync.db"
DEFAULT_POLL: Final = "5m"
MIN_POLL_SECONDS: Final = 1.0  # poll_interval and poll --every: at least one second ...
MAX_POLL_SECONDS: Final = 7 * 86400.0  # ... and at most a week
DEFAULT_REQUEST_TIMEOUT: Final = "30s"  # per read/connect of one HTTP attempt (httpx timeout)
DEFAULT_REQUEST_DEADLINE: Final = "60s"  # whole HTTP attempt: request sent and answer read
DEFAULT_MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
#: ``oauth.scopes`` lists scopes to request ON TOP of those derived from the enabled collections
#: (engine.klaviyo.scopes.required_scopes); none by default.
DEFAULT_SCOPES: Final[tuple[str, ...]] = ()
ENV_CONFIG: Final = "KLAVIYO_SYNC_CONFIG"
ENV_API_KEY: Final = "KLAVIYO_API_KEY"
ENV_HUB: Final = "KLAVIYO_SYNC_HUB"
ENV_RATE_BUDGET: Final = "KLAVIYO_SYNC_RATE_BUDGET"
DEFAULT_SUBSCRIPTION: Final = "default"
SCHEMA_PATH: Final = shipped("schemas", "settings.schema.json")
SHIPPED_COLLECTIONS: Final = shipped("collections")
MASK: Final = "********"

# Klaviyo's rate-limit tiers: (burst per second, steady per minute); see API-NOTES.
DEFAULT_TIERS: Final = {"XS": (1, 15), "S": (3, 60), "M": (10, 150), "L": (75, 700), "XL": (350, 3500)}
DEFAULT_MAX_CONCURRENCY: Final = 128  # a cap: below it the client adapts per tier (engine.klaviyo.ratelimit.InFlight)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smh])$")
_UNITS = {"s": 1, "m": 60, "h": 3600}


class Secret:
    """A secret string whose ``repr`` and ``str`` are ``********``.

    ``source`` says where it came from (``"file"`` or ``"env:NAME"``), which is
    safe to show.  ``reveal()`` returns the value; call it only where it is sent.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "file") -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r}, source={self.source!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class TierLimit:
    """One Klaviyo rate-limit tier: requests per second (burst) and per minute (steady)."""

    burst: int
    steady: int


@dataclass(frozen=True)
class Throttling:
    """Per-tier limits (defaults overridden by the file) and the concurrency cap."""

    tiers: Mapping[str, TierLimit]
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY


@dataclass(frozen=True)
class OAuthSettings:
    """OAuth client settings; any may be missing until OAuth is used."""

    client_id: str | None = None
    client_secret: Secret | None = None
    redirect_url: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    authorize_url: str | None = None  # None: Klaviyo's, or <api_url>/oauth/authorize off Klaviyo


@dataclass(frozen=True)
class ServiceSettings:
    """``service:`` -- the long-running ``serve`` process (address, API token, body limit)."""

    token: Secret | None = None
    host: str = "127.0.0.1"
    port: int = 8780
    max_body_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class OutboundTriggers:
    """Which hub changes are queued for Klaviyo (both off by default, as the seeds ship)."""

    customer: bool = False
    transaction: bool = False

    def entities(self) -> frozenset[str]:
        """The hub entity names to pass to ``SqliteHub(outbound_triggers=...)``."""
        return frozenset(n for n, on in (("Customer", self.customer), ("Transaction", self.transaction)) if on)


@dataclass(frozen=True)
class Settings:
    """The resolved subscription settings (every default applied, paths absolute)."""

    name: str = "Klaviyo Integration"
    version: str = "v1.0"
    api_url: str = DEFAULT_API_URL
    api_key: Secret | None = None
    api_revision: str = DEFAULT_REVISION
    generate_events: bool = True
    default_phone_region: str = "US"
    throttling: Throttling = field(default_factory=lambda: Throttling(_default_tiers()))
    oauth: OAuthSettings = field(default_factory=OAuthSettings)
    outbound_triggers: OutboundTriggers = field(default_factory=OutboundTriggers)
    poll_interval: float = 300.0
    poll_interval_text: str = DEFAULT_POLL
    request_timeout: float = 30.0
    request_deadline: float = 60.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    hub_path: Path = Path(DEFAULT_HUB)
    #: a PostgreSQL URL when the hub is shared (``hub: postgresql://...``); None: the SQLite file ``hub_path``
    hub_url: str | None = None
    subscription: str = DEFAULT_SUBSCRIPTION
    #: a Redis URL when the rate budget is shared by processes (``rate_budget: redis://...``)
    rate_budget: str | None = None
    account: str | None = None
    collections_dir: Path = SHIPPED_COLLECTIONS
    source: Path | None = None
    service: ServiceSettings = field(default_factory=ServiceSettings)

    def secrets(self) -> tuple[str, ...]:
        """The literal secret values, for masking (``SqliteHub(secrets=...)``)."""
        found = [s.reveal() for s in (self.api_key, self.oauth.client_secret, self.service.token) if s is not None]
        for url in (self.api_url, self.hub_url, self.rate_budget):
            found.append(_url_password(url or "") or "")
        return tuple(v for v in found if v)

    @property
    def hub_target(self) -> str:
        """The hub as shown to people: the PostgreSQL URL (password masked) or the SQLite file."""
        return mask_url(self.hub_url) if self.hub_url else str(self.hub_path)

    def for_formulas(self) -> dict[str, Any]:
        """What formulas see as ``settings``: plain values, never a secret or a path."""
        return {"name": self.name, "version": self.version, "api_url": mask_url(self.api_url),
                "api_revision": self.api_revision, "generate_events": self.generate_events,
                "default_phone_region": self.default_phone_region}

    def display(self) -> dict[str, Any]:
        """Every setting as plain data with secrets masked (``settings show``)."""

        def secret(s: Secret | None) -> str | None:
            return None if s is None or not s.reveal() else f"{MASK} ({s.source})"

        return {
            "source": str(self.source) if self.source else None,
            "name": self.name,
            "version": self.version,
            "api_url": mask_url(self.api_url),
            "api_key": secret(self.api_key),
            "api_revision": self.api_revision,
            "generate_events": self.generate_events,
            "default_phone_region": self.default_phone_region,
            "throttling": {
                **{t: {"burst": v.burst, "steady": v.steady} for t, v in self.throttling.tiers.items()},
                "max_concurrency": self.throttling.max_concurrency,
            },
            "oauth": {
                "client_id": self.oauth.client_id,
                "client_secret": secret(self.oauth.client_secret),
                "redirect_url": self.oauth.redirect_url,
                "scopes": list(self.oauth.scopes),
                "authorize_url": self.oauth.authorize_url,
            },
            "outbound_triggers": {
                "customer": self.outbound_triggers.customer,
                "transaction": self.outbound_triggers.transaction,
            },
            "poll_interval": self.poll_interval_text,
            "request_timeout": f"{self.request_timeout:g}s",
            "request_deadline": f"{self.request_deadline:g}s",
            "max_response_bytes": self.max_response_bytes,
            "hub": self.hub_target,
            "subscription": self.subscription,
            "rate_budget": mask_url(self.rate_budget) if self.rate_budget else None,
            "account": self.account,
            "collections": str(self.collections_dir),
            "service": {"token": secret(self.service.token), "host": self.service.host,
                        "port": self.service.port, "max_body_bytes": self.service.max_body_bytes},
        }


def mask_url(url: str) -> str:
    """``url`` with the password of its userinfo (``https://user:pw@host``) replaced by the mask."""
    if _url_password(url) is None:
        return url
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}:{MASK}@{host}").geturl()


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:  # e.g. an unclosed [IPv6 bracket: no usable userinfo either
        return None


def _default_tiers() -> Mapping[str, TierLimit]:
    return MappingProxyType({t: TierLimit(b, s) for t, (b, s) in DEFAULT_TIERS.items()})


def _revision_tiers(revision: Any) -> dict[str, tuple[int, int]]:
    """Klaviyo's tier figures at ``revision`` (its L tier is 750/min from 2026-01-15), else the defaults."""
    try:
        return {t: (v.burst, v.steady) for t, v in tiers_for(str(revision or DEFAULT_REVISION)).items()}
    except ValueError:  # a malformed revision is reported on its own (S002); the defaults stand meanwhile
        return dict(DEFAULT_TIERS)


def default_path(env: Mapping[str, str] | None = None) -> Path:
    """The settings file used when none is given: ``$KLAVIYO_SYNC_CONFIG`` or ``./klaviyo-sync.yaml``."""
    env = os.environ if env is None else env
    return Path(env.get(ENV_CONFIG) or DEFAULT_FILE)


def load_settings(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and resolve the settings file (see :func:`_load`); its secrets are
    registered with :mod:`engine.logconfig`, so no log record can show them."""
    settings = _load(path, env=env)
    for value in settings.secrets():
        register_secret(value)
    return settings


def _load(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and resolve the settings file.

    Args:
        path: the file; None means ``$KLAVIYO_SYNC_CONFIG`` or ``./klaviyo-sync.yaml``,
            and then a missing file means all defaults.  A path given explicitly must exist.
        env: environment for ``${NAME}`` references and ``KLAVIYO_API_KEY`` (default ``os.environ``).

    Returns:
        The frozen :class:`Settings`.

    Raises:
        SettingsYamlError: the file is not YAML (S001).
        SettingsReadError: the file given is missing or unreadable (S004).
        SettingsErrors: one or more schema or environment problems, each located.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get(ENV_CONFIG))
    file = Path(path) if path is not None else default_path(env)
    if not file.exists():
        if explicit:
            raise SettingsReadError(f"settings file not found: {file}")
        return _resolve({}, None, env)
    key_marks: dict[Any, Any] = {}
    try:
        data, value_marks = load_with_marks(read_yaml_file(file, str(file)), str(file), key_marks=key_marks)
    except OSError as err:
        raise SettingsReadError(f"cannot read the settings file: {err.strerror or err}",
                                location=Location(file=str(file))) from None
    except CollectionError as err:  # YAML syntax, encoding, size/depth/alias limits, tags, duplicate keys
        message = err.message.removeprefix("YAML syntax error: ").removeprefix("YAML error: ")
        raise SettingsYamlError(f"invalid YAML: {message}", location=err.location) from None
    data = _plain({} if data is None else data)
    marks = _marks(value_marks, key_marks)
    if not isinstance(data, dict):
        raise SettingsErrors([_error(file, marks, (), "the settings file must be a mapping of keys to values")])
    problems = [_schema_error(file, marks, e) for e in _validator().iter_errors(data)]
    problems += _env_problems(data, file, marks, env)
    problems += _client_problems(data, file, marks)
    problems += _value_problems(data, file, marks)
    if problems:
        problems.sort(key=lambda e: (e.location.line or 0, e.location.column or 0))
        raise SettingsErrors(problems)
    return _resolve(data, file, env)


# -- resolution ------------------------------------------------------------------------

_ENV_KEYS: Final = (("api_key",), ("oauth", "client_id"), ("oauth", "client_secret"), ("service", "token"), ("hub",),
                    ("rate_budget",))


def _env_problems(data: dict[str, Any], file: Path, marks: dict[Any, tuple[int, int]],
                  env: Mapping[str, str]) -> list[SettingsError]:
    """An S003 error for each ``${NAME}`` reference whose variable is not set."""
    problems = []
    for key in _ENV_KEYS:
        value: Any = data
        for part in key:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str):
            for name in _ENV_REF.findall(value):
                if name not in env:
                    problems.append(_error(file, marks, key, f"environment variable {name} is not set",
                                           kind=UnsetVariableError))
    return problems


_DURATION_KEYS: Final = ("request_timeout", "request_deadline")


def _client_problems(data: dict[str, Any], file: Path, marks: dict[Any, tuple[int, int]]) -> list[SettingsError]:
    """S002 for an ``http://`` API URL off loopback and for a zero request timeout or deadline."""
    problems = []
    url = data.get("api_url")
    if isinstance(url, str) and url.lower().startswith("http://") and not _loopback(url):
        problems.append(_error(file, marks, ("api_url",), "must use https:// (plain http:// is allowed only for a "
                                                        "loopback host such as 127.0.0.1), "
                                                        f"got {_short(mask_url(url))}"))
    for key in _DURATION_KEYS:
        value = data.get(key)
        try:
            seconds = parse_duration(value) if isinstance(value, str) else None  # integers: the schema's minimum
        except ValueError:
            continue  # the schema reports the malformed text
        if seconds is not None and seconds <= 0:
            problems.append(_error(file, marks, (key,),
                                   f"must be a positive duration such as 30s, got {_short(value)}"))
    return problems


def is_loopback(host: str) -> bool:
    """Whether ``host`` is localhost, 127.0.0.0/8 or ::1 (the service's bind check uses it too)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _loopback(url: str) -> bool:
    """Whether ``url``'s host is localhost, 127.0.0.0/8 or ::1."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return is_loopback(host)


def _resolve(data: dict[str, Any], file: Path | None, env: Mapping[str, str]) -> Settings:
    base = file.resolve().parent if file is not None else Path.cwd()

    def expand(value: str | None) -> tuple[str | None, str]:
        """Replace ``${NAME}`` references; return the value and where it came from."""
        if value is None:
            return None, "file"
        names = _ENV_REF.findall(value)
        source = f"env:{names[0]}" if names else "file"
        return _ENV_REF.sub(lambda m: env.get(m.group(1), ""), value), source

    api_key: Secret | None = None
    raw_key, key_source = expand(data.get("api_key"))
    if raw_key:
        api_key = Secret(raw_key, key_source)
    elif "api_key" not in data and env.get(ENV_API_KEY):
        api_key = Secret(env[ENV_API_KEY], f"env:{ENV_API_KEY}")

    oauth_data = data.get("oauth") or {}
    client_id, _ = expand(oauth_data.get("client_id"))
    raw_secret, secret_source = expand(oauth_data.get("client_secret"))
    oauth = OAuthSettings(
        client_id=client_id or None,
        client_secret=Secret(raw_secret, secret_source) if raw_secret else None,
        redirect_url=oauth_data.get("redirect_url") or None,
        scopes=tuple(oauth_data.get("scopes") or DEFAULT_SCOPES),
        authorize_url=oauth_data.get("authorize_url") or None,
    )

    throttle = data.get("throttling") or {}
    tiers = {
        t: TierLimit(throttle.get(t, {}).get("burst", b), throttle.get(t, {}).get("steady", s))
        for t, (b, s) in _revision_tiers(data.get("api_revision")).items()
    }
    triggers = data.get("outbound_triggers") or {}
    poll_text = str(data.get("poll_interval", DEFAULT_POLL))
    collections = data.get("collections")
    return Settings(
        name=data.get("name", Settings.name),
        version=data.get("version", Settings.version),
        api_url=str(data.get("api_url") or DEFAULT_API_URL).rstrip("/"),
        api_key=api_key,
        api_revision=data.get("api_revision") or DEFAULT_REVISION,
        generate_events=_truthy(data.get("generate_events", True)),
        default_phone_region=str(data.get("default_phone_region") or "US").upper(),
        throttling=Throttling(MappingProxyType(tiers), throttle.get("max_concurrency", DEFAULT_MAX_CONCURRENCY)),
        oauth=oauth,
        outbound_triggers=OutboundTriggers(bool(triggers.get("customer", False)),
                                           bool(triggers.get("transaction", False))),
        poll_interval=parse_duration(poll_text),
        poll_interval_text=poll_text,
        request_timeout=parse_duration(data.get("request_timeout", DEFAULT_REQUEST_TIMEOUT)),
        request_deadline=parse_duration(data.get("request_deadline", DEFAULT_REQUEST_DEADLINE)),
        max_response_bytes=int(data.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)),
        **_hub(data, base, env, expand),
        subscription=data.get("subscription") or DEFAULT_SUBSCRIPTION,
        rate_budget=(expand(env.get(ENV_RATE_BUDGET) or data.get("rate_budget"))[0] or None),
        account=data.get("account") or None,
        collections_dir=(base / collections) if collections else SHIPPED_COLLECTIONS,
        source=file,
        service=_service(data.get("service") or {}, expand),
    )


def is_hub_url(value: str) -> bool:
    """Whether a ``hub`` value names a PostgreSQL database rather than a SQLite file."""
    return value.lower().startswith(("postgresql://", "postgres://"))


def _hub(data: dict[str, Any], base: Path, env: Mapping[str, str], expand: Any) -> dict[str, Any]:
    """``hub_path`` / ``hub_url`` from ``$KLAVIYO_SYNC_HUB`` or the ``hub`` key (``${NAME}`` expanded)."""
    raw = env.get(ENV_HUB) or expand(data.get("hub"))[0] or DEFAULT_HUB
    if is_hub_url(raw):
        return {"hub_url": raw}
    return {"hub_path": base / raw}


def _service(data: dict[str, Any], expand: Any) -> ServiceSettings:
    raw, source = expand(data.get("token"))
    return ServiceSettings(token=Secret(raw, source) if raw else None,
                           host=data.get("host", ServiceSettings.host), port=data.get("port", ServiceSettings.port),
                           max_body_bytes=data.get("max_body_bytes", ServiceSettings.max_body_bytes))


def _plain(value: Any) -> Any:
    """YAML reads ``2023-10-15`` as a date; settings want the text as written."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def _truthy(value: bool | str) -> bool:
    return value if isinstance(value, bool) else value.lower() == "true"


def parse_duration(value: str | int) -> float:
    """Seconds in ``30``, ``"30s"``, ``"5m"`` or ``"1h"``; ValueError otherwise."""
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


# -- validation and locations ----------------------------------------------------------

_VALIDATOR: jsonschema.protocols.Validator | None = None


def _validator() -> jsonschema.protocols.Validator:
    global _VALIDATOR  # a cache of an immutable compiled schema, not mutable state
    if _VALIDATOR is None:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _VALIDATOR = cls(schema)
    return _VALIDATOR


def _marks(values: Mapping[Any, Any], keys: Mapping[Any, Any]) -> dict[Any, tuple[int, int]]:
    """Map each key path to its value's (line, column), and ("key", path) to the key's."""
    found: dict[Any, tuple[int, int]] = {path: (m.line, m.column) for path, m in values.items()}
    found.update({("key", path): (m.line, m.column) for path, m in keys.items()})
    return found


def _revision_problem(value: str) -> str | None:
    """Why ``value`` (``YYYY-MM-DD`` or ``YYYY-MM-DD.pre``) is not a Klaviyo revision, or None."""
    from engine.klaviyo import revision as rev

    try:
        datetime.date.fromisoformat(value.removesuffix(".pre"))
    except ValueError:
        return f"must be a real calendar date YYYY-MM-DD, got {_short(value)}"
    if not rev.is_known(value):
        return (f"{_short(value)} is not a Klaviyo API revision; Klaviyo's revisions are "
                f"{', '.join(rev.known_names())} (a beta one ends in .pre)")
    return None


def _value_problems(data: dict[str, Any], file: Path, marks: dict[Any, tuple[int, int]]) -> list[SettingsError]:
    """S002 for values the schema's shapes allow but that cannot work: an api_revision that is no real
    Klaviyo revision date, a poll_interval under a second or over a week."""
    problems = []
    region = data.get("default_phone_region")
    if isinstance(region, str):
        from engine.formula.helpers import is_phone_region

        if not is_phone_region(region.upper()):
            problems.append(_error(file, marks, ("default_phone_region",),
                                   f"must be a region code phonenumbers knows, such as US or GB, got {_short(region)}"))
    revision = data.get("api_revision")
    if isinstance(revision, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}(\.pre)?", revision):
        why = _revision_problem(revision)
        if why:
            problems.append(_error(file, marks, ("api_revision",), why))
    poll = data.get("poll_interval")
    if isinstance(poll, str):
        try:
            seconds = parse_duration(poll)
        except ValueError:
            seconds = None  # the schema reports the malformed text
        if seconds is not None and not MIN_POLL_SECONDS <= seconds <= MAX_POLL_SECONDS:
            problems.append(_error(file, marks, ("poll_interval",),
                                   f"must be between 1s and 7 days (168h), got {_short(poll)}"))
    return problems


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):  # keys JSON cannot write (dates); such values are never shown anyway
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# A run of 16+ token characters holding both letters and digits, or a Klaviyo private key prefix.
_SECRET_LIKE = re.compile(r"pk_|(?=[A-Za-z0-9_\-]*\d)(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{16,}")
_SECRET_WORDS = re.compile(r"secret|token|password|api_key|apikey", re.IGNORECASE)


def _looks_secret(text: str) -> bool:
    """Whether ``text`` may be a key or token (random letters and digits), wherever it was written."""
    return bool(_SECRET_LIKE.search(text))


def _secret_path(path: tuple[Any, ...]) -> bool:
    """Whether ``path`` is in (or holds) a secret's place: ``api_key``, anything under ``oauth``,
    or a key named like a secret or token."""
    return (path[:1] in (("api_key",), ("oauth",)) or path in _SECRET_KEYS
            or any(isinstance(p, str) and _SECRET_WORDS.search(p) for p in path))


def _shown(path: tuple[Any, ...], value: Any) -> str:
    """How an offending value is quoted in an error: its type only for a secret's place, a list or
    mapping (it may hold anything) or text that looks like a key; else the shortened value."""
    if _secret_path(path) or (isinstance(value, str) and _looks_secret(value)):
        return f"{_json_type(value)} (value not shown)"
    if isinstance(value, (dict, list)):
        return _json_type(value)
    return _short(value)


def _error(file: Path | None, marks: dict[Any, tuple[int, int]], path: tuple[Any, ...], text: str,
           *, kind: type[SettingsError] = SettingsValueError, at_key: bool = False) -> SettingsError:
    line, column = marks.get(("key", path) if at_key else path, (None, None))
    where = _dotted(path)
    return kind(f"{where}: {text}" if where else text,
                location=Location(file=str(file) if file else None, line=line, column=column))


_JSON_TYPES = {"string": "a string", "integer": "an integer", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "empty", "number": "a number"}


def _json_type(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "a mapping"


_SECRET_KEYS: Final = (("api_key",), ("oauth", "client_secret"), ("service", "token"))


def _schema_error(file: Path, marks: dict[Any, tuple[int, int]], err: jsonschema.ValidationError) -> SettingsError:
    # Every text is built here from the path, the schema and _shown(): jsonschema's own messages
    # embed the offending value, which may be a secret.
    path = tuple(err.absolute_path)
    if path in _SECRET_KEYS:
        # Never echo what is in a secret's place, even when it is malformed.
        expected = "a string or ${ENV_VAR} reference" if err.validator == "type" else "valid"
        return _error(file, marks, path, f"must be {expected} (value not shown)")
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = list((schema.get("properties") or {}).keys())
        extras = [k for k in err.instance if k not in allowed]
        key = (*path, extras[0])
        if _looks_secret(str(extras[0])):
            return _error(file, marks, path, "unknown key that looks like a key or token (not shown; valid: "
                          f"{', '.join(allowed)})")
        return _error(file, marks, key, f"unknown key (valid: {', '.join(allowed)})", at_key=True)
    got = _shown(path, err.instance)
    if "x-error" in schema and err.validator in ("pattern", "enum", "type"):
        return _error(file, marks, path, f"{schema['x-error']}, got {got}")
    if err.validator == "type":
        rule: Any = err.validator_value  # a "type" rule's value: a JSON type name or a list of them
        types: list[str] = rule if isinstance(rule, list) else [rule]
        expected = " or ".join(_JSON_TYPES.get(t, t) for t in types)
        kind = _json_type(err.instance)
        return _error(file, marks, path, f"must be {expected}, got {got if got.startswith(kind) else f'{kind} {got}'}")
    if err.validator in ("minimum", "maximum"):
        word = "at least" if err.validator == "minimum" else "at most"
        return _error(file, marks, path, f"must be {word} {err.validator_value}, got {got}")
    if err.validator == "minLength":
        return _error(file, marks, path, "must not be empty")
    if err.validator == "pattern":
        return _error(file, marks, path, f"does not match {err.validator_value}, got {got}")
    return _error(file, marks, path, f"is not valid (schema rule {err.validator}: {_short(err.validator_value)}), "
                                     f"got {got}")
