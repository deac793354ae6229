"""External-id links, sync state, the outbound queue and OAuth tokens (a mixin of SqliteHub)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.errors import HubRecordError
from engine.hub._protocol import QueuedChange
from engine.hub._util import utc_now

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

ENTITIES = ("Customer", "Transaction", "TransactionLine")


def _check_entity(entity: str) -> None:
    if entity not in ENTITIES:
        raise HubRecordError(f"unknown entity {entity!r} (valid: {', '.join(ENTITIES)})")


class StateMixin:
    """Links both ways, cursors and key-value state, the queue, and OAuth tokens."""

    _conn: sqlite3.Connection

    if TYPE_CHECKING:
        def transaction(self, *, enqueue: bool = True, flat: bool = False) -> AbstractContextManager[Any]: ...

    # -- external-id links ------------------------------------------------------------

    def set_link(self, entity: str, hub_id: int, klaviyo_id: str) -> None:
        """Link a hub record to its Klaviyo id (profile id, or event unique id).

        One link per hub record and per Klaviyo id: setting a new one replaces
        the record's previous link, and takes the Klaviyo id away from any other
        record of the same entity that held it.
        """
        _check_entity(entity)
        with self.transaction():
            self._conn.execute(
                "DELETE FROM links WHERE entity = ? AND klaviyo_id = ? AND hub_id != ?",
                (entity, klaviyo_id, hub_id),
            )
            self._conn.execute(
                "INSERT INTO links(entity, hub_id, klaviyo_id, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(entity, hub_id) DO UPDATE SET klaviyo_id = excluded.klaviyo_id,"
                " updated_at = excluded.updated_at",
                (entity, hub_id, klaviyo_id, utc_now()),
            )

    def get_klaviyo_id(self, entity: str, hub_id: int) -> str | None:
        """The Klaviyo id linked to this hub record, or None."""
        _check_entity(entity)
        row = self._conn.execute(
            "SELECT klaviyo_id FROM links WHERE entity = ? AND hub_id = ?", (entity, hub_id)
        ).fetchone()
        return None if row is None else str(row[0])

    def get_hub_id(self, entity: str, klaviyo_id: str) -> int | None:
        """The hub Id linked to this Klaviyo id, or None."""
        _check_entity(entity)
        row = self._conn.execute(
            "SELECT hub_id FROM links WHERE entity = ? AND klaviyo_id = ?", (entity, klaviyo_id)
        ).fetchone()
        return None if row is None else int(row[0])

    def klaviyo_ids(self, entity: str, hub_ids: Iterable[int]) -> dict[int, str]:
        """The Klaviyo ids linked to these hub records (those without a link are left out)."""
        _check_entity(entity)
        ids = list(hub_ids)
        found: dict[int, str] = {}
        for start in range(0, len(ids), 500):  # well below SQLite's limit of bound parameters
            chunk = ids[start:start + 500]
            rows = self._conn.execute(
                f"SELECT hub_id, klaviyo_id FROM links WHERE entity = ? AND hub_id IN ({','.join('?' * len(chunk))})",
                (entity, *chunk),
            )
            found.update((int(r[0]), str(r[1])) for r in rows)
        return found

    def link_count(self, entity: str) -> int:
        """How many records of ``entity`` are linked to Klaviyo."""
        _check_entity(entity)
        return int(self._conn.execute("SELECT COUNT(*) FROM links WHERE entity = ?", (entity,)).fetchone()[0])

    def remove_link(self, entity: str, hub_id: int) -> bool:
        """Forget a record's link; True if there was one."""
        _check_entity(entity)
        with self.transaction():
            cur = self._conn.execute("DELETE FROM links WHERE entity = ? AND hub_id = ?", (entity, hub_id))
        return cur.rowcount > 0

    # -- sync state -------------------------------------------------------------------

    def get_cursor(self, name: str) -> str | None:
        """The last successful poll cursor of subscription ``name``, or None."""
        value = self.get_state(f"cursor:{name}")
        return None if value is None else str(value)

    def set_cursor(self, name: str, value: str) -> None:
        """Record a successful poll's cursor (also remembered as the last poll time)."""
        self.set_state(f"cursor:{name}", value)

    def get_state(self, key: str, default: Any = None) -> Any:
        """A small JSON value stored under ``key``, or ``default``."""
        row = self._conn.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_state(self, key: str, value: Any) -> None:
        """Store a small JSON-serialisable value under ``key``."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO sync_state(key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, json.dumps(value), utc_now()),
            )

    def cursors(self) -> dict[str, dict[str, str]]:
        """Every poll cursor: ``{name: {"value": ..., "updated_at": ...}}``."""
        rows = self._conn.execute(
            "SELECT key, value, updated_at FROM sync_state WHERE key LIKE 'cursor:%' ORDER BY key"
        )
        return {r[0][7:]: {"value": json.loads(r[1]), "updated_at": r[2]} for r in rows}

    # -- outbound queue ---------------------------------------------------------------

    def queued_change(self, entity: str, hub_id: int) -> QueuedChange | None:
        """The record's row in the outbound queue, or None when nothing waits for it."""
        row = self._conn.execute(
            "SELECT * FROM outbound_queue WHERE entity = ? AND hub_id = ?", (entity, hub_id)
        ).fetchone()
        return None if row is None else _change(row)

    def pending_changes(self, limit: int | None = 100) -> list[QueuedChange]:
        """Queued changes not yet acknowledged, oldest first (claimed ones included)."""
        if limit is None:
            rows = self._conn.execute("SELECT * FROM outbound_queue ORDER BY id")
        else:
            rows = self._conn.execute("SELECT * FROM outbound_queue ORDER BY id LIMIT ?", (limit,))
        return [_change(r) for r in rows]

    def claim_changes(self, limit: int = 100, *, lease_seconds: float = 300.0) -> list[QueuedChange]:
        """Lease up to ``limit`` unleased (or lease-expired) changes, oldest first.

        A sender that crashes without acknowledging loses nothing: the lease
        runs out and the change is claimed again.  A claim is not an attempt:
        ``attempts`` counts only sends that were tried and failed for a reason
        that may pass (see :meth:`release_change`), so a process killed before
        it sent anything costs the change none of its attempts.
        """
        now = time.time()
        with self.transaction():
            rows = self._conn.execute(
                "SELECT * FROM outbound_queue WHERE lease_until IS NULL OR lease_until <= ?"
                " ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
            ids = [r["id"] for r in rows]
            self._conn.executemany(
                "UPDATE outbound_queue SET lease_until = ? WHERE id = ?",
                [(now + lease_seconds, i) for i in ids],
            )
        return [_change(r) for r in rows]

    def ack_change(self, change: QueuedChange | int) -> bool:
        """Remove a change after it was sent (or its error logged); True if removed.

        Given a :class:`QueuedChange`, the row goes only if no newer change was
        coalesced into it meanwhile; otherwise it stays (as an ``update``, lease
        cleared) so the newer state is sent too.  Given a bare id, it goes.
        """
        with self.transaction():
            if isinstance(change, QueuedChange):
                cur = self._conn.execute(
                    "DELETE FROM outbound_queue WHERE id = ? AND version = ?", (change.id, change.version)
                )
                if cur.rowcount == 0:
                    self._conn.execute(
                        "UPDATE outbound_queue SET op = 'update', lease_until = NULL WHERE id = ?",
                        (change.id,),
                    )
                return cur.rowcount > 0
            cur = self._conn.execute("DELETE FROM outbound_queue WHERE id = ?", (change,))
            return cur.rowcount > 0

    def release_change(self, change: QueuedChange | int, *, delay: float = 0.0, failed: bool = False) -> None:
        """Give a claimed change back, claimable again after ``delay`` seconds.

        ``failed=True``: a send was tried and failed for a reason that may pass;
        it counts as one of the change's ``attempts``.  Otherwise (the run
        stopped before sending it, or for a reason that is not the record's)
        the change goes back exactly as it was.
        """
        change_id = change.id if isinstance(change, QueuedChange) else change
        with self.transaction():
            self._conn.execute(
                "UPDATE outbound_queue SET lease_until = ?, attempts = attempts + ? WHERE id = ?",
                (time.time() + delay if delay > 0 else None, 1 if failed else 0, change_id),
            )

    def queue_length(self) -> int:
        """How many changes wait to be sent."""
        return int(self._conn.execute("SELECT COUNT(*) FROM outbound_queue").fetchone()[0])

    # -- OAuth tokens -----------------------------------------------------------------

    def save_token(
        self,
        provider: str,
        *,
        access_token: str | None,
        refresh_token: str | None,
        expires_at: float | None,
        scopes: list[str] | tuple[str, ...] = (),
    ) -> None:
        """Store (replace) a provider's OAuth tokens; the hub file is owner-only (0600).

        Storing tokens clears a recorded refresh failure (:meth:`token_failure`).
        """
        with self.transaction():
            self._conn.execute("DELETE FROM sync_state WHERE key = ?", (_token_key("failure", provider),))
            self._conn.execute(
                "INSERT INTO oauth_tokens(provider, access_token, refresh_token, expires_at, scopes,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(provider) DO UPDATE SET"
                " access_token = excluded.access_token, refresh_token = excluded.refresh_token,"
                " expires_at = excluded.expires_at, scopes = excluded.scopes,"
                " updated_at = excluded.updated_at",
                (provider, access_token, refresh_token, expires_at, " ".join(scopes), utc_now()),
            )

    def get_token(self, provider: str) -> dict[str, Any] | None:
        """``{"provider", "access_token", "refresh_token", "expires_at", "scopes"}`` or None."""
        row = self._conn.execute("SELECT * FROM oauth_tokens WHERE provider = ?", (provider,)).fetchone()
        if row is None:
            return None
        return {
            "provider": row["provider"],
            "access_token": row["access_token"],
            "refresh_token": row["refresh_token"],
            "expires_at": row["expires_at"],
            "scopes": row["scopes"].split() if row["scopes"] else [],
        }

    def delete_token(self, provider: str) -> bool:
        """Forget a provider's tokens (and a recorded refresh failure); True if there were any."""
        with self.transaction():
            self._conn.execute("DELETE FROM sync_state WHERE key = ?", (_token_key("failure", provider),))
            cur = self._conn.execute("DELETE FROM oauth_tokens WHERE provider = ?", (provider,))
        return cur.rowcount > 0

    def set_token_failure(self, provider: str, *, code: str, message: str, detail: str | None = None) -> None:
        """Record that refreshing the provider's tokens failed for good (no secret in the texts):
        ``auth status`` reports it until tokens are stored again (login or a successful refresh)."""
        failure = {"code": code, "message": message, "detail": detail, "at": utc_now()}
        self.set_state(_token_key("failure", provider), failure)

    def token_failure(self, provider: str) -> dict[str, Any] | None:
        """The recorded refresh failure ``{"code", "message", "detail", "at"}``, or None."""
        value = self.get_state(_token_key("failure", provider))
        return value if isinstance(value, dict) else None

    def acquire_token_lock(self, provider: str, owner: str, *, ttl: float) -> bool:
        """Take the provider's refresh lock for ``owner`` (for ``ttl`` seconds); False if another
        owner holds it unexpired.

        The lock serialises token refreshes across processes sharing this hub (a
        refresh rotates the refresh token, so two at once would make one fail).
        It is a row, not a held transaction: waiting never blocks other writers,
        and a holder that dies frees it when ``ttl`` runs out.
        """
        key, now = _token_key("lock", provider), time.time()
        with self.transaction():
            row = self._conn.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
            held = json.loads(row[0]) if row is not None else None
            if isinstance(held, dict) and held.get("owner") != owner and float(held.get("until") or 0) > now:
                return False
            self._conn.execute(
                "INSERT INTO sync_state(key, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, json.dumps({"owner": owner, "until": now + ttl}), utc_now()),
            )
        return True

    def release_token_lock(self, provider: str, owner: str) -> None:
        """Free the refresh lock if ``owner`` still holds it."""
        key = _token_key("lock", provider)
        with self.transaction():
            row = self._conn.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
            if row is not None and (json.loads(row[0]) or {}).get("owner") == owner:
                self._conn.execute("DELETE FROM sync_state WHERE key = ?", (key,))

    # -- overview ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Row counts for ``status``: records, links, queue, unresolved errors and warnings."""
        def one(sql: str) -> int:
            return int(self._conn.execute(sql).fetchone()[0])
        return {
            "customers": one("SELECT COUNT(*) FROM customers"),
            "addresses": one("SELECT COUNT(*) FROM customer_addresses"),
            "transactions": one("SELECT COUNT(*) FROM transactions"),
            "transaction_lines": one("SELECT COUNT(*) FROM transaction_lines"),
            "links": one("SELECT COUNT(*) FROM links"),
            "queued_changes": one("SELECT COUNT(*) FROM outbound_queue"),
            "unresolved_errors": one(
                "SELECT COUNT(*) FROM error_log WHERE resolved_at IS NULL AND level = 'error'"
            ),
            "unresolved_warnings": one(
                "SELECT COUNT(*) FROM error_log WHERE resolved_at IS NULL AND level = 'warning'"
            ),
        }


def _token_key(kind: str, provider: str) -> str:
    """The sync_state key of a provider's refresh lock or recorded refresh failure."""
    return f"oauth_{kind}:{provider}"


def _change(row: sqlite3.Row) -> QueuedChange:
    return QueuedChange(
        id=row["id"],
        entity=row["entity"],
        hub_id=row["hub_id"],
        op=row["op"],
        version=row["version"],
        queued_at=row["queued_at"],
        changed_at=row["changed_at"],
        attempts=row["attempts"],
        lease_until=row["lease_until"],
    )
