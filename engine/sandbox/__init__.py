"""A local Klaviyo: a real HTTP server on loopback that answers like Klaviyo's REST API.

It implements every endpoint :class:`engine.klaviyo.KlaviyoClient` uses, at
revision 2023-10-15 (``application/json``, trailing slashes) and 2026-07-15
(``application/vnd.api+json``, no slash) — both path styles are accepted at any
revision, as Klaviyo does.  See ``docs/klaviyo.md`` for the options.

Use in tests and the demo::

    handle = SandboxServer(SandboxOptions(rate_limits=False)).start_in_thread()
    try:
        pid = handle.state.add_profile(email="a@example.com")   # seed directly
        ...  # talk to handle.url with KlaviyoClient; check results over HTTP
    finally:
        handle.stop()

or inside a running event loop: ``url = await server.start()`` ... ``await server.stop()``.

With ``SandboxOptions(accounts_by_key=True)`` each private key is its own Klaviyo account
(:mod:`engine.sandbox._accounts`); ``handle.state_for(key)`` reaches one account's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from engine.errors import SandboxStateFileError
from engine.sandbox._accounts import DEFAULT, Accounts, key_account
from engine.sandbox._oauth import SandboxOAuth
from engine.sandbox._server import AuthHook, SandboxOptions, build_app, private_key_auth
from engine.sandbox._state import SandboxState

log = logging.getLogger("engine.sandbox")

MAX_STATE_BYTES = 1024 * 1024 * 1024  # a state file larger than this is refused, not read


class SandboxServer:
    """A sandbox served over HTTP: one shared account, or one per key (``accounts_by_key``).

    Args:
        options: behaviour (:class:`SandboxOptions`); defaults are Klaviyo's real limits.
        state: data of the default account (a fresh :class:`SandboxState` by default): every
            key's when shared; under ``accounts_by_key`` the first of ``api_keys``' (else an
            account named ``default`` no key reaches, see :mod:`engine.sandbox._accounts`).
        auth: the auth hook; ``None`` = :func:`private_key_auth` plus the Bearer tokens
            issued by :attr:`oauth` (``/oauth/authorize|token|revoke``, see ``_oauth``).
            Reassign :attr:`auth` at any time.
    """

    def __init__(
        self, options: SandboxOptions | None = None, *, state: SandboxState | None = None,
        auth: AuthHook | None = None,
    ) -> None:
        self.options = options or SandboxOptions()
        self.state = state or SandboxState(seed=self.options.seed)
        keys = self.options.api_keys
        default_id = key_account(keys[0]) if self.options.accounts_by_key and keys else DEFAULT
        #: every account's state (one shared one unless ``accounts_by_key``)
        self.accounts = Accounts(self.state, separate=self.options.accounts_by_key, seed=self.options.seed,
                                 default_id=default_id)
        self.oauth = SandboxOAuth(self.options)
        self.auth: AuthHook = auth or self.oauth.auth_hook(private_key_auth)
        self.app = build_app(self.state, self.options, lambda: self.auth, self.accounts)
        self.oauth.mount(self.app)
        self._runner: web.AppRunner | None = None
        self._saver: asyncio.Task[None] | None = None
        self.url = ""

    def state_for(self, api_key: str) -> SandboxState:
        """The state of the account ``api_key`` reaches (created if it has none yet); the shared
        state unless ``accounts_by_key``.  The key is not kept: the account is found by its digest."""
        return self.accounts.state_of(key_account(api_key))

    def account_id(self, api_key: str) -> str:
        """The account id (digest) of ``api_key``, as the state file and ``/__sandbox__/accounts`` show it."""
        return key_account(api_key)

    async def start(self) -> str:
        """Listen (in the running loop) and return the base URL, e.g. ``http://127.0.0.1:8123``.

        Raises:
            SandboxStateFileError: the state file cannot be read or is not one :meth:`SandboxState.save`
                wrote (it is left as it is).
            OSError: the address cannot be listened on (port in use, not a local address).
        """
        path = Path(self.options.state_file) if self.options.state_file else None
        if path is not None and path.exists():
            self._load_state(path)
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()
        server = getattr(site, "_server", None)
        port = server.sockets[0].getsockname()[1] if server and server.sockets else self.options.port
        self.url = f"http://{self.options.host}:{port}"
        if path is not None:
            self._saver = asyncio.create_task(self._autosave(path))
        log.info("Klaviyo sandbox listening on %s", self.url)
        return self.url

    def _load_state(self, path: Path) -> None:
        try:
            if path.stat().st_size > MAX_STATE_BYTES:
                raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
            self.accounts.load(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            if isinstance(exc, (KeyError, TypeError, AttributeError)):
                reason = f"not a sandbox state file ({type(exc).__name__}: {str(exc)[:80]})"
            elif isinstance(exc, RecursionError):
                reason = "nested too deeply"
            raise SandboxStateFileError(f"{path}: cannot load the sandbox state: {reason[:200]}") from None

    async def _autosave(self, path: Path) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.accounts.dirty:
                self.accounts.save(path)

    async def stop(self) -> None:
        """Stop listening and save the state file if one is configured."""
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.options.state_file:
            self.accounts.save(Path(self.options.state_file))

    def start_in_thread(self) -> SandboxHandle:
        """Run the server in a background thread with its own loop; returns a handle."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        thread = threading.Thread(target=run, name="klaviyo-sandbox", daemon=True)
        thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return SandboxHandle(self, loop, thread)


@dataclass
class SandboxHandle:
    """A sandbox running in a thread: ``url``, ``state``, ``options``, ``stop()``."""

    server: SandboxServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def state(self) -> SandboxState:
        return self.server.state

    @property
    def options(self) -> SandboxOptions:
        return self.server.options

    def state_for(self, api_key: str) -> SandboxState:
        """The state of ``api_key``'s account (:meth:`SandboxServer.state_for`)."""
        return self.server.state_for(api_key)

    def stop(self) -> None:
        """Stop the server and wait for its thread to end."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


__all__ = ["SandboxServer", "SandboxHandle", "SandboxOptions", "SandboxState", "private_key_auth", "AuthHook",
           "Accounts", "key_account"]
