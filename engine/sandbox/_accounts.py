"""The sandbox's accounts: one :class:`SandboxState` per Klaviyo account, or one for everybody.

Real Klaviyo keeps each account's data apart: a profile created with one account's
private key is invisible to another's.  The sandbox does the same when
:attr:`SandboxOptions.accounts_by_key` is on (``sandbox serve --accounts-by-key``):

* the auth hook names the request's account (:func:`key_account` for a private key,
  :func:`oauth_account` for a Bearer token: one account per OAuth client id, since the
  sandbox's authorize page has no account to pick) and the pipeline stores it on the
  request (:data:`ACCOUNT_KEY`); :meth:`Accounts.state_of` then finds that account's
  state with one dict lookup, creating it on the account's first request;
* an account id is a digest (``key-`` + 16 hex digits of the key's SHA-256), so it can be
  shown, logged and saved; the key itself is never stored;
* the default account (:attr:`SandboxServer.state`) is the first of ``api_keys`` when keys
  are listed, else one named ``default`` that no key reaches over HTTP (a test seeds it,
  an old single-account state file loads into it).

Off (the default) every key shares the default state, as before; rate limits are per
key either way.  The state file holds every account (:meth:`Accounts.to_json`):
``{"accounts": {"key-…": {<one account's state>}, …}}`` when separate, the old
single-account shape otherwise; both shapes load in both modes (a multi-account file
with more than one account is refused by a shared sandbox).

Read-only introspection, outside ``/api/`` (no rate limit, no latency, no faults):

* ``GET /__sandbox__/accounts``: every account's counts keyed by account id;
* ``GET /__sandbox__/account`` with the usual ``Authorization`` header: the counts of the
  account that credential reaches (401 like the API for a bad one).

Counts are ``profiles``, ``lists``, ``metrics``, ``events`` (per metric name),
``jobs_pending`` and ``throttled`` (429 answers sent to that account).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from engine.errors import SandboxApiError
from engine.sandbox._state import SandboxState

if TYPE_CHECKING:
    from engine.sandbox._server import SandboxOptions

DEFAULT = "default"
#: the account the auth hook named for this request (set by the pipeline for ``/api/`` requests)
ACCOUNT_KEY: web.RequestKey[str] = web.RequestKey("account", str)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def key_account(key: str) -> str:
    """The account id of a private key: ``key-`` and a digest of it (the key never appears)."""
    return "key-" + _digest(key)


def oauth_account(client_id: str) -> str:
    """The account id of an OAuth client's tokens: ``oauth-`` and a digest of the client id."""
    return "oauth-" + _digest(client_id)


class Accounts:
    """The states of a sandbox's accounts, keyed by account id.

    Args:
        default: the default account's state (:attr:`SandboxServer.state`).
        separate: one state per account (``accounts_by_key``); False: ``default`` for all.
        seed: the sandbox's seed; each further account gets one derived from it and its id,
            so two accounts never generate the same ids.
        default_id: the default account's id.
    """

    def __init__(self, default: SandboxState, *, separate: bool, seed: int | None = None,
                 default_id: str = DEFAULT) -> None:
        self.separate = separate
        self.default = default
        self.default_id = default_id
        self._seed = seed
        self._states: dict[str, SandboxState] = {default_id: default}
        self._lock = threading.Lock()
        #: account id -> 429 answers sent to it (counted in both modes: rate limits are per key)
        self.throttled: dict[str, int] = {}

    def state_of(self, account: str | None) -> SandboxState:
        """The state of ``account`` (created on first use); the default state when shared."""
        if not self.separate or account is None:
            return self.default
        state = self._states.get(account)
        return state if state is not None else self._create(account)

    def _create(self, account: str) -> SandboxState:
        with self._lock:  # a test thread and the server's loop may meet a new account together
            state = self._states.get(account)
            if state is None:
                seed = None if self._seed is None else int(_digest(f"{self._seed}/{account}"), 16)
                state = self._states[account] = SandboxState(seed=seed)
            return state

    def existing(self, account: str) -> SandboxState | None:
        """The state of ``account`` if it has one (never creates); the default state when shared."""
        return self._states.get(account) if self.separate else self.default

    def ids(self) -> list[str]:
        """Every account id with a state, default first."""
        return list(self._states)

    def states(self) -> list[SandboxState]:
        return list(self._states.values())

    # -- counts -------------------------------------------------------------------------

    def counts_of(self, state: SandboxState, throttled: int) -> dict[str, Any]:
        """One account's counts (see the module docstring)."""
        with state.lock:
            names = {mid: m["name"] for mid, m in state.metrics.items()}
            events: dict[str, int] = {}
            for e in state.events:
                name = names.get(e["metric_id"], e["metric_id"])
                events[name] = events.get(name, 0) + 1
            pending = sum(1 for j in state.jobs.values()
                          if j.get("attributes", {}).get("status") in ("queued", "processing"))
            return {"profiles": len(state.profiles), "lists": len(state.lists), "metrics": len(state.metrics),
                    "events": events, "jobs_pending": pending, "throttled": throttled}

    def all_counts(self) -> dict[str, dict[str, Any]]:
        """Counts of every account keyed by id (shared: the one default account, all 429s)."""
        if not self.separate:
            return {self.default_id: self.counts_of(self.default, sum(self.throttled.values()))}
        return {aid: self.counts_of(s, self.throttled.get(aid, 0)) for aid, s in list(self._states.items())}

    # -- persistence --------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True when any account changed since the last save."""
        return any(s.dirty for s in list(self._states.values()))

    def to_json(self) -> dict[str, Any]:
        """The state file's content: one account's shape when shared, ``{"accounts": {...}}`` when separate
        (an account without any data, e.g. one that only read, is left out)."""
        if not self.separate:
            return self.default.to_json()
        return {"accounts": {aid: s.to_json() for aid, s in list(self._states.items()) if not _empty(s)}}

    def load_json(self, data: Mapping[str, Any]) -> None:
        """Replace every account with a state file's content (either shape); ValueError when it is not one."""
        if not isinstance(data, Mapping) or "accounts" not in data:  # the single-account shape
            self.default.load_json(data)
            return
        accounts = data["accounts"]
        if set(data) != {"accounts"} or not isinstance(accounts, dict):
            raise ValueError("not a sandbox state file: 'accounts' must be the only key, an object of accounts")
        if not self.separate:
            if len(accounts) > 1:
                raise ValueError(f"it holds {len(accounts)} accounts; serve it with accounts by key "
                                 "(--accounts-by-key) or keep one")
            self.default.load_json(next(iter(accounts.values()), {"profiles": {}}))
            return
        loaded: dict[str, SandboxState] = {}
        for aid, body in accounts.items():
            if not isinstance(body, Mapping):
                raise ValueError(f"account {str(aid)[:40]!r}: expected an object")
            try:
                if aid == self.default_id:
                    SandboxState().load_json(body)  # check it before the default state is replaced
                else:
                    seed = None if self._seed is None else int(_digest(f"{self._seed}/{aid}"), 16)
                    loaded[aid] = SandboxState(seed=seed)
                    loaded[aid].load_json(body)
            except ValueError as exc:
                raise ValueError(f"account {str(aid)[:40]!r}: {exc}") from None
        with self._lock:
            if self.default_id in accounts:
                self.default.load_json(accounts[self.default_id])
            self._states = {self.default_id: self.default, **loaded}
            for s in loaded.values():
                s.dirty = False

    def save(self, path: Path) -> None:
        """Write every account atomically to ``path``."""
        states = list(self._states.values())
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json()), encoding="utf-8")
        tmp.replace(path)
        for s in states:
            s.dirty = False

    def load(self, path: Path) -> None:
        """Read a state file (either shape)."""
        self.load_json(json.loads(path.read_text(encoding="utf-8")))


def _empty(state: SandboxState) -> bool:
    with state.lock:
        return not (state.profiles or state.lists or state.metrics or state.events or state.jobs)


AuthRef = Callable[[], Callable[[web.Request, "SandboxOptions"], Awaitable[str]]]
ACCOUNTS_KEY: web.AppKey[Accounts] = web.AppKey("accounts", Accounts)


def mount(app: web.Application, accounts: Accounts, options: SandboxOptions, auth_ref: AuthRef) -> None:
    """Add the read-only ``/__sandbox__/accounts`` and ``/__sandbox__/account`` routes."""
    from engine.sandbox._render import body_response
    from engine.sandbox._server import error_body

    async def all_accounts(_request: web.Request) -> web.Response:
        return body_response({"accounts_by_key": accounts.separate, "accounts": accounts.all_counts()})

    async def one_account(request: web.Request) -> web.Response:
        try:
            account = await auth_ref()(request, options)
        except SandboxApiError as exc:
            return body_response(error_body(exc), exc.status)
        state = accounts.existing(account) or SandboxState()  # an account not seen yet: all zero
        return body_response({"account": account, "accounts_by_key": accounts.separate,
                              **accounts.counts_of(state, accounts.throttled.get(account, 0))})

    app[ACCOUNTS_KEY] = accounts
    app.router.add_get("/__sandbox__/accounts", all_accounts)
    app.router.add_get("/__sandbox__/account", one_account)


__all__ = ["Accounts", "ACCOUNT_KEY", "ACCOUNTS_KEY", "DEFAULT", "key_account", "oauth_account", "mount"]
