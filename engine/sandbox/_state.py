"""The sandbox's data: profiles, lists, metrics, events and jobs, with Klaviyo's rules.

Everything here is plain Python guarded by one re-entrant lock, so the HTTP
handlers (in the server's event loop) and test helpers (in the test thread) can
both use it.  Rules implemented (``API-NOTES.md``): identifiers (email, phone,
external id) are unique and a clash is a 409 ``duplicate_profile`` carrying the
existing id; PATCH changes only what it mentions and ``null`` clears; every
change bumps ``updated`` (second precision, as Klaviyo shows it); events are
de-duplicated on profile + metric + ``unique_id``; consent jobs change
``subscriptions``.  Tests may seed with :meth:`SandboxState.add_profile` /
:meth:`SandboxState.add_list` but check results through the HTTP API.
"""

from __future__ import annotations

import json
import random
import re
import string
import threading
from collections.abc import Callable, Mapping
from copy import deepcopy
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from engine.errors import SandboxApiError
from engine.sandbox._filters import Condition, matches

IDENTIFIERS = ("email", "phone_number", "external_id")
INDEXED = (*IDENTIFIERS, "anonymous_id")
PROFILE_FIELDS = (
    "email", "phone_number", "external_id", "anonymous_id", "first_name", "last_name",
    "organization", "locale", "title", "image",
)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def invalid(detail: str, *, pointer: str | None = None, parameter: str | None = None) -> SandboxApiError:
    """Klaviyo's 400 ``invalid`` error."""
    return SandboxApiError(400, "invalid", "Invalid input.", detail, pointer=pointer, parameter=parameter)


def not_found(detail: str) -> SandboxApiError:
    """Klaviyo's 404 ``not_found`` error."""
    return SandboxApiError(404, "not_found", "Not found.", detail, pointer="/data/")


def now_utc() -> datetime:
    """The current time truncated to the second, as Klaviyo stores it."""
    return datetime.now(UTC).replace(microsecond=0)


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt else None


def _default_subscriptions() -> dict[str, Any]:
    return {
        "email": {"marketing": {
            "can_receive_email_marketing": False, "consent": "NEVER_SUBSCRIBED",
            "consent_timestamp": None, "last_updated": None, "method": None, "method_detail": None,
            "custom_method_detail": None, "double_optin": None, "suppression": [], "list_suppressions": [],
        }},
        "sms": {"marketing": {
            "can_receive_sms_marketing": False, "consent": "NEVER_SUBSCRIBED", "consent_timestamp": None,
            "method": None, "method_detail": None, "last_updated": None,
        }},
    }


STATE_KEYS = ("profiles", "lists", "metrics", "events", "jobs")


def _when(value: Any, default: datetime | None) -> datetime | None:
    """A datetime of a state file: a saved ``{"$dt": ...}`` (already converted) or, in a
    hand-written file, an ISO 8601 string; missing: ``default``."""
    if value is None:
        return default
    if isinstance(value, str):
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a date and time, got {type(value).__name__}")
    return value


def _completed(d: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A loaded state with what a hand-written seed file may leave out filled in.

    A saved file has everything; a seed may hold only ``profiles`` and/or ``lists``, each
    keyed by its id, with a profile's ``attributes`` (and optional ``created`` / ``updated``
    as ISO strings) and a list's ``name`` (and optional ``members``: profile ids).  Another
    top-level key, or neither ``profiles`` nor ``lists``, means it is not a state file (so a
    stray JSON file is refused rather than overwritten on exit).
    """
    unknown = [k for k in d if k not in STATE_KEYS]
    if unknown or not ({"profiles", "lists"} & set(d)):
        raise ValueError(f"not a sandbox state file: expected the keys {', '.join(STATE_KEYS)}"
                         + (f", got {str(unknown[0])[:40]!r}" if unknown else ""))
    for key, empty in (("profiles", {}), ("lists", {}), ("metrics", {}), ("events", []), ("jobs", {})):
        d.setdefault(key, empty)
    for pid, p in d["profiles"].items():
        if p.setdefault("id", pid) != pid:
            raise ValueError(f"profile {pid!r} has the id {p['id']!r}")
        attrs = p.setdefault("attributes", {})
        attrs.setdefault("location", {})
        attrs.setdefault("properties", {})
        if isinstance(attrs.get("email"), str):
            attrs["email"] = attrs["email"].lower()  # Klaviyo stores emails in lower case
        p["created"] = _when(p.get("created"), now)
        p["updated"] = _when(p.get("updated"), p["created"])
        p["last_event_date"] = _when(p.get("last_event_date"), None)
        p.setdefault("subscriptions", _default_subscriptions())
    for lid, lst in d["lists"].items():
        if lst.setdefault("id", lid) != lid:
            raise ValueError(f"list {lid!r} has the id {lst['id']!r}")
        if not isinstance(lst.get("name"), str):
            raise ValueError(f"list {lid!r} needs a name")
        lst["created"] = _when(lst.get("created"), now)
        lst["updated"] = _when(lst.get("updated"), lst["created"])
        members = lst.get("members") or {}
        if isinstance(members, list):  # a seed lists the member ids
            members = dict.fromkeys(members, lst["created"])
        lst["members"] = {m: _when(at, lst["created"]) for m, at in members.items()}
    return d


class SandboxState:
    """All data of one sandbox account."""

    def __init__(self, *, seed: int | None = None, clock: Callable[[], datetime] = now_utc) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self._rng = random.Random(seed)
        self._counter = 0
        self.profiles: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._event_keys: set[tuple[str, str, str]] = set()
        self.jobs: dict[str, dict[str, Any]] = {}
        # Identifier indexes: field -> normalised value -> the first profile holding it; further
        # holders (Klaviyo can hold two profiles with one email after a merge; tests seed that) in
        # _extra_holders.  Writes and lookups cost O(1) in the number of profiles.
        self._holder: dict[str, dict[Any, str]] = {f: {} for f in INDEXED}
        self._extra_holders: dict[tuple[str, Any], list[str]] = {}
        self._metric_by_name: dict[str, str] = {}
        #: bumped on every change; caches of sorted query results are valid for one version
        self.version = 0
        self.page_cache: dict[Any, tuple[int, Any]] = {}
        self._dirty = False

    @property
    def dirty(self) -> bool:
        """True when the state changed since it was last saved."""
        return self._dirty

    @dirty.setter
    def dirty(self, value: bool) -> None:
        if value:
            self.version += 1
        self._dirty = value

    # -- ids -------------------------------------------------------------------------

    def new_id(self) -> str:
        """A 26-character, time-ordered id like Klaviyo's profile ids."""
        self._counter += 1
        ms = int(datetime.now(UTC).timestamp() * 1000)
        n = (ms << 80) | (self._counter << 40) | self._rng.getrandbits(40)
        return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))

    def _short_id(self) -> str:
        return "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(6))

    # -- profiles --------------------------------------------------------------------

    @staticmethod
    def _norm(field: str, value: Any) -> Any:
        return value.lower() if field == "email" and isinstance(value, str) else value

    def _index(self, field: str, value: Any) -> str | None:
        """The first profile whose ``field`` equals ``value`` (emails ignore case), or None."""
        if value is None or field not in self._holder:
            return None
        try:
            return self._holder[field].get(self._norm(field, value))
        except TypeError:  # an unhashable value (a list sent as an email) matches nobody
            return None

    def holders(self, field: str, value: Any) -> list[str]:
        """Every profile whose ``field`` equals ``value``, first holder first."""
        first = self._index(field, value)
        if first is None:
            return []
        return [first, *self._extra_holders.get((field, self._norm(field, value)), [])]

    def _hold(self, field: str, value: Any, pid: str) -> None:
        if value is None:
            return
        norm = self._norm(field, value)
        try:
            current = self._holder[field].setdefault(norm, pid)
        except TypeError:
            return
        if current != pid:
            extra = self._extra_holders.setdefault((field, norm), [])
            if pid not in extra:
                extra.append(pid)

    def _release(self, field: str, value: Any, pid: str) -> None:
        if value is None:
            return
        norm = self._norm(field, value)
        try:
            current = self._holder[field].get(norm)
        except TypeError:
            return
        extra = self._extra_holders.get((field, norm))
        if current == pid:
            if extra:
                self._holder[field][norm] = extra.pop(0)
            else:
                del self._holder[field][norm]
        elif extra and pid in extra:
            extra.remove(pid)
        if extra is not None and not extra:
            del self._extra_holders[(field, norm)]

    def reindex(self) -> None:
        """Rebuild the identifier and metric indexes (after changing ``profiles`` directly)."""
        with self.lock:
            self._holder = {f: {} for f in INDEXED}
            self._extra_holders = {}
            for pid, p in self.profiles.items():
                for f in INDEXED:
                    self._hold(f, p["attributes"].get(f), pid)
            self._metric_by_name = {m["name"]: mid for mid, m in self.metrics.items()}
            self.dirty = True

    def _check_values(self, attrs: Mapping[str, Any]) -> None:
        email = attrs.get("email")
        if email is not None and not _EMAIL_RE.match(str(email)):
            raise invalid(f"Invalid email address: {email}", pointer="/data/attributes/email")
        phone = attrs.get("phone_number")
        if phone is not None and not _PHONE_RE.match(str(phone)):
            raise invalid(
                "Invalid phone number format (Example of a valid format: +12345678901)",
                pointer="/data/attributes/phone_number",
            )

    def _duplicate_of(self, attrs: Mapping[str, Any], exclude: str | None = None) -> str | None:
        for field in IDENTIFIERS:
            pid = self._index(field, attrs.get(field))
            if pid is not None and pid != exclude:
                return pid
        return None

    @staticmethod
    def duplicate(pid: str) -> SandboxApiError:
        """Klaviyo's real 409 body for a profile whose identifiers already exist."""
        return SandboxApiError(
            409, "duplicate_profile", "Conflict.", "A profile already exists with one of these identifiers.",
            pointer="/data/attributes", meta={"duplicate_profile_id": pid},
        )

    def _apply(self, p: dict[str, Any], attrs: Mapping[str, Any], patch: Mapping[str, Any] | None) -> None:
        a = p["attributes"]
        for key, value in attrs.items():
            if key in PROFILE_FIELDS:
                if key in INDEXED:
                    self._release(key, a.get(key), p["id"])
                if value is None:
                    a.pop(key, None)
                else:
                    a[key] = value.lower() if key == "email" else value
                if key in INDEXED:
                    self._hold(key, a.get(key), p["id"])
            elif key == "location":
                if value is None:
                    a["location"] = {}
                else:
                    loc = a.setdefault("location", {})
                    for lk, lv in value.items():
                        if lv is None:
                            loc.pop(lk, None)
                        else:
                            loc[lk] = lv
            elif key == "properties":
                props = a.setdefault("properties", {})
                for pk, pv in (value or {}).items():
                    props[pk] = pv
        if patch:
            props = a.setdefault("properties", {})
            for pk, pv in (patch.get("append") or {}).items():
                cur = props.get(pk)
                cur = cur if isinstance(cur, list) else ([] if cur is None else [cur])
                props[pk] = cur + (pv if isinstance(pv, list) else [pv])
            for pk, pv in (patch.get("unappend") or {}).items():
                if isinstance(props.get(pk), list):
                    drop = pv if isinstance(pv, list) else [pv]
                    props[pk] = [x for x in props[pk] if x not in drop]
            unset = patch.get("unset") or []
            for pk in [unset] if isinstance(unset, str) else unset:
                props.pop(pk, None)
        p["updated"] = self.clock()
        self.dirty = True

    def create_profile(self, attrs: Mapping[str, Any], patch: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Create; 409 ``duplicate_profile`` when an identifier already exists."""
        with self.lock:
            self._check_values(attrs)
            if not any(attrs.get(k) for k in (*IDENTIFIERS, "anonymous_id")):
                raise invalid(
                    "One of email, phone_number, external_id or anonymous_id is required to create a profile.",
                    pointer="/data/attributes",
                )
            dup = self._duplicate_of(attrs)
            if dup is not None:
                raise self.duplicate(dup)
            now = self.clock()
            p: dict[str, Any] = {"id": self.new_id(), "attributes": {"location": {}, "properties": {}}, "created": now,
                 "updated": now, "subscriptions": _default_subscriptions(), "last_event_date": None}
            self._apply(p, attrs, patch)
            self.profiles[p["id"]] = p
            return p

    def update_profile(self, pid: str, attrs: Mapping[str, Any],
                       patch: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Partial update; 404 for an unknown id, 409 when a new identifier belongs to another profile."""
        with self.lock:
            p = self.profiles.get(pid)
            if p is None:
                raise not_found(f"A profile with id {pid} does not exist.")
            self._check_values(attrs)
            dup = self._duplicate_of(attrs, exclude=pid)
            if dup is not None:
                raise self.duplicate(dup)
            self._apply(p, attrs, patch)
            return p

    def import_profile(
        self, attrs: Mapping[str, Any], pid: str | None = None, patch: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], bool]:
        """``profile-import``: update the profile matched by id or identifiers, else create."""
        with self.lock:
            if pid:
                if pid not in self.profiles:
                    raise not_found(f"A profile with id {pid} does not exist.")
                return self.update_profile(pid, attrs, patch), False
            # In identifier order (email, phone, external id): a clash names the email's profile.
            matched = list(dict.fromkeys(m for f in IDENTIFIERS if (m := self._index(f, attrs.get(f)))))
            if len(matched) > 1:
                raise self.duplicate(matched[0])
            if matched:
                return self.update_profile(matched[0], attrs, patch), False
            return self.create_profile(attrs, patch), True

    def resolve_profile(self, pid: str | None, attrs: Mapping[str, Any], *, create: bool = True) -> dict[str, Any]:
        """The profile an event or job names (by id, then identifiers), created when missing."""
        with self.lock:
            if pid:
                if pid not in self.profiles:
                    raise invalid(f"A profile with id {pid} does not exist.",
                                  pointer="/data/attributes/profile/data/id")
                p = self.profiles[pid]
                if attrs:
                    self.update_profile(pid, {k: v for k, v in attrs.items() if k != "subscriptions"})
                return p
            for f in (*IDENTIFIERS, "anonymous_id"):
                found = self._index(f, attrs.get(f))
                if found:
                    extra = {k: v for k, v in attrs.items() if k in PROFILE_FIELDS or k in ("location", "properties")}
                    if self._duplicate_of(extra, exclude=found) is None:
                        self.update_profile(found, extra)
                    return self.profiles[found]
            if not create:
                raise invalid("The profile could not be identified.", pointer="/data/attributes/profile")
            return self.create_profile({k: v for k, v in attrs.items() if k != "subscriptions"})

    def query_profiles(self, conds: list[Condition], ids: set[str] | None = None) -> list[dict[str, Any]]:
        """Profiles matching every condition (unsorted)."""
        with self.lock:
            narrowed = self._candidates(conds)
            if narrowed is not None:
                ids = narrowed if ids is None else ids & narrowed
            pool = self.profiles.values() if ids is None else [self.profiles[i] for i in ids if i in self.profiles]
            return [p for p in pool if matches(conds, partial(self.profile_field, p))]

    def _candidates(self, conds: list[Condition]) -> set[str] | None:
        """The ids an ``equals``/``any`` condition on an identifier allows (None: no such condition)."""
        out: set[str] | None = None
        for c in conds:
            if c.op not in ("equals", "any") or c.field not in ("id", *INDEXED):
                continue
            values = c.value if isinstance(c.value, list) else [c.value]
            if c.field == "id":
                found = {v for v in values if isinstance(v, str) and v in self.profiles}
            else:
                found = {pid for v in values for pid in self.holders(c.field, v)}
            out = found if out is None else out & found
        return out

    @staticmethod
    def profile_field(p: dict[str, Any], field: str) -> Any:
        """A filter or sort field of a profile."""
        if field == "id":
            return p["id"]
        if field in ("created", "updated"):
            return p[field]
        value = p["attributes"].get(field)
        return value.lower() if field == "email" and isinstance(value, str) else value

    def add_profile(self, profile_id: str | None = None, **attributes: Any) -> str:
        """Test/demo helper: create a profile directly and return its id.

        ``profile_id`` gives it a chosen id instead of a generated one (e.g. an older
        numeric id such as ``44552``); a taken id is a ``ValueError``.
        """
        with self.lock:
            if profile_id is not None and profile_id in self.profiles:
                raise ValueError(f"profile id {profile_id!r} is already taken")
            p = self.create_profile(attributes)
            if profile_id is not None:
                old_id = p["id"]
                for f in INDEXED:
                    self._release(f, p["attributes"].get(f), old_id)
                del self.profiles[old_id]
                p["id"] = profile_id
                self.profiles[profile_id] = p
                for f in INDEXED:
                    self._hold(f, p["attributes"].get(f), profile_id)
                self.dirty = True
            return str(p["id"])

    # -- consent ---------------------------------------------------------------------

    def set_consent(self, p: dict[str, Any], channel: str, consent: str, source: str | None) -> None:
        """Change one channel's marketing consent and bump ``updated``."""
        with self.lock:
            now = self.clock()
            m = p["subscriptions"][channel]["marketing"]
            subscribed = consent == "SUBSCRIBED"
            m.update({
                f"can_receive_{channel}_marketing": subscribed, "consent": consent,
                "consent_timestamp": iso(now), "last_updated": iso(now),
                "method": "API", "method_detail": source or "API",
            })
            if channel == "email":
                m["suppression"] = [] if subscribed else [{"reason": "UNSUBSCRIBE", "timestamp": iso(now)}]
            p["updated"] = now
            self.dirty = True

    # -- lists -----------------------------------------------------------------------

    def add_list(self, name: str) -> str:
        """Create a list (also the ``POST /api/lists`` action) and return its id."""
        with self.lock:
            now = self.clock()
            lid = self._short_id()
            self.lists[lid] = {"id": lid, "name": name, "created": now, "updated": now, "members": {}}
            self.dirty = True
            return lid

    def get_list(self, lid: str) -> dict[str, Any]:
        with self.lock:
            if lid not in self.lists:
                raise not_found(f"A list with id {lid} does not exist.")
            return self.lists[lid]

    def change_members(self, lid: str, pids: list[str], add: bool) -> None:
        """Add or remove list members by profile id (unknown ids are an error)."""
        with self.lock:
            lst = self.get_list(lid)
            for i, pid in enumerate(pids):
                if pid not in self.profiles:
                    raise invalid(f"A profile with id {pid} does not exist.", pointer=f"/data/{i}/id")
            now = self.clock()
            for pid in pids:
                if add:
                    lst["members"].setdefault(pid, now)
                else:
                    lst["members"].pop(pid, None)
            lst["updated"] = now
            self.dirty = True

    # -- events ----------------------------------------------------------------------

    def metric_for(self, name: str) -> dict[str, Any]:
        with self.lock:
            mid = self._metric_by_name.get(name)
            if mid is not None and mid in self.metrics:
                return self.metrics[mid]
            now = self.clock()
            m: dict[str, Any] = {"id": self._short_id(), "name": name, "created": now, "updated": now}
            self.metrics[m["id"]] = m
            self._metric_by_name[name] = m["id"]
            return m

    def record_event(
        self, profile: dict[str, Any], metric_name: str, properties: dict[str, Any],
        time: datetime | None, value: Any, unique_id: str | None,
    ) -> bool:
        """Store an event unless profile + metric + unique_id was seen; returns whether stored."""
        with self.lock:
            metric = self.metric_for(metric_name)
            when = (time or self.clock()).replace(microsecond=0)
            uid = unique_id or when.isoformat()
            key = (profile["id"], metric["id"], uid)
            if key in self._event_keys:
                return False
            self._event_keys.add(key)
            self.events.append({
                "id": self.new_id(), "metric_id": metric["id"], "profile_id": profile["id"],
                "properties": properties, "datetime": when, "value": value, "unique_id": uid,
            })
            if profile["last_event_date"] is None or when > profile["last_event_date"]:
                profile["last_event_date"] = when
            self.dirty = True
            return True

    # -- persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-able data (datetimes as ISO strings)."""
        def conv(x: Any) -> Any:
            if isinstance(x, datetime):
                return {"$dt": x.isoformat()}
            if isinstance(x, dict):
                return {k: conv(v) for k, v in x.items()}
            if isinstance(x, list):
                return [conv(v) for v in x]
            return x
        with self.lock:
            data: dict[str, Any] = conv({"profiles": self.profiles, "lists": self.lists, "metrics": self.metrics,
                                         "events": self.events, "jobs": self.jobs})
            return data

    def load_json(self, data: Mapping[str, Any]) -> None:
        """Replace the state with :meth:`to_json` output."""
        def back(x: Any) -> Any:
            if isinstance(x, dict):
                if set(x) == {"$dt"}:
                    return datetime.fromisoformat(x["$dt"])
                return {k: back(v) for k, v in x.items()}
            if isinstance(x, list):
                return [back(v) for v in x]
            return x
        d = _completed(back(deepcopy(dict(data))), self.clock())
        with self.lock:
            self.profiles, self.lists, self.metrics = d["profiles"], d["lists"], d["metrics"]
            self.events, self.jobs = d["events"], d.get("jobs", {})
            self._event_keys = {(e["profile_id"], e["metric_id"], e["unique_id"]) for e in self.events}
            self.reindex()

    def save(self, path: Path) -> None:
        """Write the state atomically to ``path``."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()), encoding="utf-8")
        tmp.replace(path)
        self.dirty = False

    def load(self, path: Path) -> None:
        """Read a state file written by :meth:`save`."""
        self.load_json(json.loads(path.read_text(encoding="utf-8")))

    # -- asynchronous jobs (engine.sandbox._jobs) ------------------------------------

    def drain_jobs(self, limit: int | None = None) -> int:
        """Apply every queued job now (at most ``limit`` profiles); returns how many were applied.

        Klaviyo applies subscribe, unsubscribe and bulk import jobs some time after its 202; a
        test calls this to see their effect without waiting, or with ``limit`` to catch a bulk
        import in ``processing``.
        """
        from engine.sandbox import _jobs

        return _jobs.drain(self, limit)


__all__ = ["SandboxState", "invalid", "not_found", "iso", "now_utc"]
