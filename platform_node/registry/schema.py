"""Tables, time handling, transactions and the change record of the authorization registries.

All tables are named ``registry_*`` in one :class:`~sqlalchemy.MetaData` and created on
first use (:func:`create_schema`, idempotent).  Any SQLAlchemy URL works; tests run every
registry on SQLite and PostgreSQL.

Why things are stored the way they are:

* **Times are UTC, always aware.**  :class:`UTCDateTime` refuses naive datetimes on the way
  in (a naive value is ambiguous: the server's local time? UTC?) and returns aware UTC
  values on the way out, also from SQLite, which stores no zone.  Token times (grant
  windows) stay Unix seconds, exactly as signed.
* **One transaction per mutation** (:func:`write_tx`).  On SQLite every write transaction
  takes the database write lock when it begins (``BEGIN IMMEDIATE``,
  :func:`veil.store.write_transaction`).  A deferred SQLite transaction that reads first
  and writes later cannot upgrade its lock while another writer is active and fails at
  once with "database is locked" (the busy handler is skipped to avoid a deadlock);
  taking the write lock first makes writers queue behind the busy timeout instead.
  PostgreSQL needs no such lock: rows are locked individually (``SELECT … FOR UPDATE``)
  where a read decides a write.
* **Every change is recorded.**  Each mutation appends a row to ``registry_events`` inside
  its own transaction, so a change and its record commit or vanish together.  The detail
  is JSON without secrets (no private keys; tokens are summarised by their claims).
  Per-request bookkeeping that is *not* a registry change is deliberately left out:
  ``jti`` claims (recording them would keep every token id forever, defeating
  :meth:`~platform_node.registry.replay.ReplayGuard.purge`) and quota counter increments
  (each granted request is already recorded as a use).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from veil.errors import InvalidArgument
from veil.store import write_transaction

__all__ = [
    "RegistryEvent",
    "UTCDateTime",
    "create_schema",
    "list_events",
    "metadata",
    "record_event",
    "to_unix",
    "utc_now",
    "write_tx",
]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware UTC datetime on every backend (SQLite stores it naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise InvalidArgument("timestamps must be timezone-aware (UTC)")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):  # pragma: no cover - driver contract
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


metadata = MetaData()

_Seq = BigInteger().with_variant(Integer(), "sqlite")
"""Autoincrement keys: BIGINT, but exactly ``INTEGER`` on SQLite (the rowid alias)."""

institutions = Table(
    "registry_institutions",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("type", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("purposes", JSON, nullable=False),
    Column("daily_quota", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

institution_keys = Table(
    "registry_institution_keys",
    metadata,
    Column("institution_id", ForeignKey(institutions.c.id), primary_key=True),
    Column("kid", String(128), primary_key=True),
    # RFC 7638 thumbprint: one public key speaks for one institution only.
    Column("thumbprint", String(64), nullable=False, unique=True),
    Column("jwk", JSON, nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
)

institution_history = Table(
    "registry_institution_history",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("institution_id", ForeignKey(institutions.c.id), nullable=False, index=True),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("decided_by", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
)

quota_usage = Table(
    "registry_quota_usage",
    metadata,
    Column("institution_id", ForeignKey(institutions.c.id), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("used", BigInteger, nullable=False),
)

replay = Table(
    "registry_replay",
    metadata,
    Column("namespace", String(128), primary_key=True),
    Column("token_id", String(256), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

letters = Table(
    "registry_letters",
    metadata,
    Column("id", _Seq, primary_key=True, autoincrement=True),
    Column("institution_id", ForeignKey(institutions.c.id), nullable=False, index=True),
    Column("uscc", String(18), nullable=False, index=True),
    Column("sha256", String(64), nullable=False),
    Column("title", String(256), nullable=False),
    Column("signed_on", Date, nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("loan_ref", String(256), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("uploaded_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime, nullable=True),
    Column("grant_id", String(36), nullable=True),
    UniqueConstraint("institution_id", "uscc", "sha256", name="uq_registry_letters_doc"),
)

grants = Table(
    "registry_grants",
    metadata,
    Column("grant_id", String(36), primary_key=True),
    Column("uscc", String(18), nullable=False, index=True),
    Column("institution_id", ForeignKey(institutions.c.id), nullable=False, index=True),
    Column("fields", JSON, nullable=False),
    Column("uses", JSON, nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("loan_ref", String(256), nullable=False),
    Column("not_before", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("letter_sha256", String(64), nullable=True),
    Column("jws", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revocation_seq", BigInteger, nullable=True, unique=True),
    Column("revocation_jws", Text, nullable=True),
)

grant_uses = Table(
    "registry_grant_uses",
    metadata,
    Column("id", _Seq, primary_key=True, autoincrement=True),
    Column("grant_id", ForeignKey(grants.c.grant_id), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("institution_id", String(63), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("use", String(16), nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("providers", JSON, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("grant_id", "request_id", name="uq_registry_grant_uses_request"),
)

counters = Table(
    "registry_counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
"""Named counters: ``revocation`` (the last revocation sequence number).  A database made
by an earlier release also has ``lock``, which its write transactions updated first to
take SQLite's write lock; nothing uses it now."""

events = Table(
    "registry_events",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", String(128), nullable=False),
    Column("detail", Text, nullable=False),
)
Index("ix_registry_events_object", events.c.object_type, events.c.object_id, events.c.seq)

COUNTER_REVOCATION = "revocation"
# Built once (SQLAlchemy reuses the compiled form): every recorded event runs it.
_INSERT_EVENT = insert(events)


def create_schema(engine: Engine) -> None:
    """Create the registry tables and counter rows if missing (safe to call repeatedly,
    also from several processes at once)."""
    metadata.create_all(engine, checkfirst=True)
    for name in (COUNTER_REVOCATION,):
        try:
            with engine.begin() as conn:
                if conn.execute(select(counters.c.name).where(counters.c.name == name)).first():
                    continue
                conn.execute(insert(counters).values(name=name, value=0))
        except IntegrityError:  # another process inserted it first
            continue


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed when the block ends, rolled back whole on any error.

    On SQLite the write lock is taken first (see the module docstring).
    """
    with write_transaction(engine) as conn:
        yield conn


def next_counter(conn: Connection, name: str) -> int:
    """Increment counter ``name`` and return its new value.

    The UPDATE row-locks the counter until the transaction ends, so numbers are handed
    out in commit order: a reader that sees number n has already been able to see every
    number below n (what :meth:`GrantRegistry.revocations_after` pollers rely on).
    """
    conn.execute(update(counters).where(counters.c.name == name).values(value=counters.c.value + 1))
    value = conn.execute(select(counters.c.value).where(counters.c.name == name)).scalar_one()
    return int(value)


def utc_now(now: dt.datetime | None) -> dt.datetime:
    """``now`` as aware UTC (the current time when None); naive datetimes are refused."""
    if now is None:
        return dt.datetime.now(dt.UTC)
    if not isinstance(now, dt.datetime) or now.tzinfo is None:
        raise InvalidArgument("now must be a timezone-aware datetime")
    return now.astimezone(dt.UTC)


def to_unix(now: dt.datetime) -> float:
    return now.timestamp()


@dataclass(frozen=True)
class RegistryEvent:
    """One recorded change: who did what to which object, when, with a JSON detail."""

    seq: int
    at: dt.datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    detail: dict[str, Any]


def record_event(
    conn: Connection,
    *,
    at: dt.datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    detail: Mapping[str, Any],
) -> None:
    """Append one event inside the caller's transaction."""
    conn.execute(
        _INSERT_EVENT,
        {
            "at": at,
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "detail": json.dumps(dict(detail), sort_keys=True, ensure_ascii=False, default=str),
        },
    )


def list_events(
    engine: Engine,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    after: int = 0,
    limit: int = 1000,
) -> list[RegistryEvent]:
    """Recorded changes in order, optionally for one object, after sequence ``after``."""
    query = select(events).where(events.c.seq > after).order_by(events.c.seq).limit(limit)
    if object_type is not None:
        query = query.where(events.c.object_type == object_type)
    if object_id is not None:
        query = query.where(events.c.object_id == object_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        RegistryEvent(
            seq=r.seq,
            at=r.at,
            actor=r.actor,
            action=r.action,
            object_type=r.object_type,
            object_id=r.object_id,
            detail=json.loads(r.detail),
        )
        for r in rows
    ]
