"""Tables and engine set-up for the transparency log store.

Four tables, all named ``<prefix><name>`` so several logs (or test runs) can share
a database:

``leaves``
    ``idx`` (the leaf index, primary key), ``leaf_hash`` (SHA-256(0x00 || data),
    indexed with ``idx`` for look-up by hash) and ``data`` (the exact entry bytes).
``nodes``
    The hash of every *completed perfect* subtree above the leaves, keyed by
    :func:`node_key` of its ``(level, index)``.  Rows are written once, in the same
    transaction as the leaves that complete them, and never change -- which is why
    a proof can be served from O(log n) point reads without locking writers out.
``head``
    One row: the committed tree size.  Writers lock it (``SELECT ... FOR UPDATE`` on
    PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), which makes the log single-writer
    (one sequencer) even across processes.
``checkpoints``
    Every signed checkpoint note, by tree size.

SQLite runs in WAL mode with ``synchronous=FULL``: a transaction is durable once
``COMMIT`` returns, so an acknowledged append survives a crash (even power loss),
and an interrupted one is rolled back whole on the next open.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    create_engine,
    event,
)

from veil._internal.merkle import HASH_SIZE

NODE_KEY_LEVEL_SHIFT = 48
"""``node_key(level, index) = level << 48 | index``: one integer primary key, so a
proof's nodes are fetched with a single ``IN`` on a rowid (SQLite) / btree (PG).
Indexes stay below 2**48 (2.8e14 leaves), levels below 64: the key fits in BIGINT."""

SQLITE_BUSY_TIMEOUT_S = 30.0
WRITE_OPTION = "veil_tlog_write"
"""Connection execution option marking a write transaction (``BEGIN IMMEDIATE``)."""

# SQLite only makes ``INTEGER PRIMARY KEY`` (exactly that type name) an alias of the
# 64-bit rowid; BIGINT would add a second index and slow every insert.
_Key = BigInteger().with_variant(Integer(), "sqlite")


def node_key(level: int, index: int) -> int:
    """The ``nodes`` primary key of perfect subtree ``(level, index)``."""
    return (level << NODE_KEY_LEVEL_SHIFT) | index


class Tables:
    """The four tables of one log, named with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.metadata = MetaData()
        self.leaves = Table(
            f"{prefix}leaves",
            self.metadata,
            Column("idx", _Key, primary_key=True, autoincrement=False),
            Column("leaf_hash", LargeBinary(HASH_SIZE), nullable=False),
            Column("data", LargeBinary, nullable=False),
        )
        # (leaf_hash, idx): "first index of this hash below size N" is one index seek
        # on every backend, whatever the planner's statistics.
        Index(f"ix_{prefix}leaves_hash_idx", self.leaves.c.leaf_hash, self.leaves.c.idx)
        self.nodes = Table(
            f"{prefix}nodes",
            self.metadata,
            Column("id", _Key, primary_key=True, autoincrement=False),
            Column("hash", LargeBinary(HASH_SIZE), nullable=False),
        )
        self.head = Table(
            f"{prefix}head",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("size", BigInteger, nullable=False),
        )
        self.checkpoints = Table(
            f"{prefix}checkpoints",
            self.metadata,
            Column("size", _Key, primary_key=True, autoincrement=False),
            Column("root_hash", LargeBinary(HASH_SIZE), nullable=False),
            Column("note", LargeBinary, nullable=False),
            Column("signed_at", DateTime(timezone=True), nullable=False),
        )


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=FULL`` and explicit
    transactions (``BEGIN IMMEDIATE`` for writes, so two writers queue instead of
    deadlocking on a lock upgrade)."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Stop the sqlite3 module from issuing its own BEGINs; we emit them below.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
