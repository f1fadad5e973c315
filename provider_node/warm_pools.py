"""The platform's public Paillier keys a provider has answered under, remembered in its
own database so that its randomizer pools are being filled before the first request.

A pool of short-exponent (DJN) randomizers first builds its tables, about 0.65 s of CPU
at 2048 bits (:mod:`veil.crypto.pool`); until they are ready every randomizer is
computed on the request path in full, 6–9 ms each.  Without a remembered key, a
provider restarted under load would answer its first requests on that slow path while
the tables compete for the same cores, and its answers could miss the platform's
deadline.  The moduli are public values: remembering them reveals nothing, and a pool
is used only for a request whose modulus is byte-for-byte the remembered one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from veil.crypto import PublicKey, public_key_from_bytes
from veil.errors import VeilError

__all__ = ["KnownKeys"]

log = logging.getLogger(__name__)

metadata = MetaData()

known_keys = Table(
    "veil_provider_paillier_keys",
    metadata,
    Column("purpose", String(16), primary_key=True),
    Column("n_sha256", String(64), primary_key=True),
    Column("n", LargeBinary, nullable=False),  # big-endian, as the requests carry it
    Column("last_seen", DateTime(timezone=True), nullable=False),
)


class KnownKeys:
    """The moduli one service (``purpose``) has answered under, newest first."""

    def __init__(self, engine: Engine, purpose: str) -> None:
        self.engine = engine
        self.purpose = purpose
        metadata.create_all(engine)

    def remember(self, n: bytes) -> None:
        """Record ``n`` as the newest key (called once per key a process meets)."""
        digest = hashlib.sha256(n).hexdigest()
        now = dt.datetime.now(dt.UTC)
        where = (known_keys.c.purpose == self.purpose) & (known_keys.c.n_sha256 == digest)
        try:
            with self.engine.begin() as conn:
                if conn.execute(update(known_keys).where(where).values(last_seen=now)).rowcount:
                    return
                conn.execute(
                    insert(known_keys).values(
                        purpose=self.purpose, n_sha256=digest, n=n, last_seen=now
                    )
                )
        except IntegrityError:  # another process of this unit inserted it first
            return

    def newest(self) -> PublicKey | None:
        """The most recently seen key, checked as a request's key would be; None if
        there is none or it no longer parses (then the first request builds the pool)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(known_keys.c.n)
                .where(known_keys.c.purpose == self.purpose)
                .order_by(known_keys.c.last_seen.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        try:
            return public_key_from_bytes(bytes(row.n))
        except VeilError as exc:
            log.warning("ignoring a remembered %s key: %s", self.purpose, exc.message)
            return None
