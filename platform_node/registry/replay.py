"""The replay store: each one-time token id (``jti``) is accepted once per namespace.

A claim is an INSERT under a unique (namespace, token_id) key, so of two concurrent
claims of the same id exactly one commits, on any backend, with no read-then-write race.
Rows are kept until the token expires (the caller passes its ``exp``) plus the clock-skew
allowance verifiers grant (``CLOCK_SKEW_S``): after that every verifier refuses the token
as expired anyway, so :meth:`ReplayGuard.purge` may forget it.

Namespaces keep issuers apart (``institution:<id>``, ``enterprise:<uscc>``): the ``jti``
of one issuer never blocks another's.  Keys are ``jti`` values, never token strings: ECDSA
signatures are malleable, so the same claims can be re-signed into a different string.

**Group commit.**  Every authorized call claims one id, and each claim is a durable
commit (SQLite ``synchronous=FULL``: one ``fsync``), so under load the commits, not the
CPU, bound the platform's request rate.  Claims that arrive while a commit is in progress
wait and are then committed together, in one transaction, by whichever of them goes
first; each learns its own outcome from its row (``INSERT … ON CONFLICT DO NOTHING
RETURNING``: no row = already claimed, also for two claims of one id in one batch).  No
claim returns before the transaction holding it has committed, so the guarantee is
unchanged; a claim that finds no commit in progress commits at once (no added latency).
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete

from platform_node.registry import _checks
from platform_node.registry.schema import create_schema, replay, utc_now
from veil.errors import InvalidArgument, Replayed
from veil.store import insert_if_new, insert_if_new_is_one_statement
from veil.tokens import CLOCK_SKEW_S

__all__ = ["ReplayGuard"]

MAX_BATCH = 256


def _claim_row(namespace: str, token_id: str, expires_at: dt.datetime) -> dict[str, object]:
    _checks.text(namespace, "namespace", max_len=128)
    _checks.text(token_id, "token id", max_len=256)
    if not isinstance(expires_at, dt.datetime) or expires_at.tzinfo is None:
        raise InvalidArgument("expires_at must be a timezone-aware datetime")
    return {"namespace": namespace, "token_id": token_id, "expires_at": expires_at}


def _claimed_before(conn: Connection, row: dict[str, object]) -> bool:
    """Claim ``row`` on ``conn``; True when it had been claimed before (then nothing
    was written and the transaction stays usable)."""
    return not insert_if_new(conn, replay, row)


def _replayed(namespace: str) -> Replayed:
    return Replayed(
        f"token id already used ({namespace}): replayed token refused",
        details={"namespace": namespace},
    )


@dataclass
class _Pending:
    row: dict[str, object]
    done: bool = False
    replayed: bool = False
    error: BaseException | None = None


class ReplayGuard:
    """Remembers claimed token ids until they expire."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine)
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        self.commits = 0  # transactions that committed claims (for tests and metrics)

    def claim(
        self,
        namespace: str,
        token_id: str,
        expires_at: dt.datetime,
        now: dt.datetime | None = None,
    ) -> None:
        """Record ``token_id`` as used in ``namespace`` until ``expires_at`` (the token's
        ``exp``; the claim is kept ``CLOCK_SKEW_S`` longer).

        Raises :class:`~veil.errors.Replayed` (UNAUTHENTICATED) when it was claimed before;
        the message names the namespace only, never the token id.
        """
        row = _claim_row(namespace, token_id, expires_at)
        utc_now(now)  # validates now; the expiry decides how long the claim is kept
        if insert_if_new_is_one_statement(self.engine):
            replayed = self._group_claim(row)
        else:  # pragma: no cover - other backends: one transaction per claim
            with self.engine.begin() as conn:
                replayed = _claimed_before(conn, row)
        if replayed:
            raise _replayed(namespace)

    def claim_on(
        self, conn: Connection, namespace: str, token_id: str, expires_at: dt.datetime
    ) -> None:
        """:meth:`claim` inside the caller's write transaction on this guard's database
        (a handler that writes anyway saves a commit).  It counts once that commits."""
        if _claimed_before(conn, _claim_row(namespace, token_id, expires_at)):
            raise _replayed(namespace)

    def _group_claim(self, row: dict[str, object]) -> bool:
        """Claim ``row`` in the next group commit; True when it was claimed before."""
        item = _Pending(row)
        with self._cond:
            self._queue.append(item)
        while True:
            with self._cond:
                while self._committing and not item.done:
                    self._cond.wait()
                if item.done:
                    break
                # lead: commit the oldest queued claims (this one, unless > MAX_BATCH wait)
                self._committing = True
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    for pending in batch:
                        pending.done = True
                    self._committing = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        return item.replayed

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            with self.engine.begin() as conn:
                for pending in batch:
                    pending.replayed = _claimed_before(conn, pending.row)
            self.commits += 1
        except Exception as exc:  # nothing of the batch committed: every claim fails
            for pending in batch:
                pending.error = exc

    def purge(self, now: dt.datetime | None = None) -> int:
        """Forget claims whose tokens expired, with the skew allowance, before ``now``.

        Returns how many were forgotten.
        """
        cutoff = utc_now(now) - dt.timedelta(seconds=CLOCK_SKEW_S)
        with self.engine.begin() as conn:
            result = conn.execute(delete(replay).where(replay.c.expires_at < cutoff))
            return int(result.rowcount)
