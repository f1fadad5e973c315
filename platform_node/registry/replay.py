"""The replay store: each one-time token id (``jti``) is accepted once per namespace.

A claim is an INSERT under a unique (namespace, token_id) key, so of two concurrent
claims of the same id exactly one commits, on any backend, with no read-then-write race.
Rows are kept until the token expires (the caller passes its ``exp``) plus the clock-skew
allowance verifiers grant (``CLOCK_SKEW_S``): after that every verifier refuses the token
as expired anyway, so :meth:`ReplayGuard.purge` may forget it.

Namespaces keep issuers apart (``institution:<id>``, ``enterprise:<uscc>``): the ``jti``
of one issuer never blocks another's.  Keys are ``jti`` values, never token strings: ECDSA
signatures are malleable, so the same claims can be re-signed into a different string.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from platform_node.registry import _checks
from platform_node.registry.schema import create_schema, replay, utc_now
from veil.errors import InvalidArgument, Replayed
from veil.tokens import CLOCK_SKEW_S

__all__ = ["ReplayGuard"]

_CLAIM = insert(replay)  # built once: every call reuses its compiled form


class ReplayGuard:
    """Remembers claimed token ids until they expire."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine)

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
        _checks.text(namespace, "namespace", max_len=128)
        _checks.text(token_id, "token id", max_len=256)
        if not isinstance(expires_at, dt.datetime) or expires_at.tzinfo is None:
            raise InvalidArgument("expires_at must be a timezone-aware datetime")
        utc_now(now)  # validates now; the expiry decides how long the claim is kept
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    _CLAIM, {"namespace": namespace, "token_id": token_id, "expires_at": expires_at}
                )
        except IntegrityError:
            raise Replayed(
                f"token id already used ({namespace}): replayed token refused",
                details={"namespace": namespace},
            ) from None

    def purge(self, now: dt.datetime | None = None) -> int:
        """Forget claims whose tokens expired, with the skew allowance, before ``now``.

        Returns how many were forgotten.
        """
        cutoff = utc_now(now) - dt.timedelta(seconds=CLOCK_SKEW_S)
        with self.engine.begin() as conn:
            result = conn.execute(delete(replay).where(replay.c.expires_at < cutoff))
            return int(result.rowcount)
