"""SQLAlchemy engines for provider stores.

Any SQLAlchemy URL works.  SQLite gets the settings a small service database wants:
write-ahead logging (readers never block the writer), enforced foreign keys and a busy
timeout; :func:`bulk_load` relaxes durability while the generator fills a fresh file
(a crash mid-load only loses a file that is regenerated anyway).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["bulk_load", "is_sqlite", "make_engine", "write_transaction"]


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite connections use WAL, foreign keys and a busy timeout.

    SQLite commits are fully synchronous (``synchronous=FULL``): ledgers, registries and
    grants are evidence, and a commit acknowledged to a caller must survive a power cut,
    not only a process crash.  Bulk loads relax this explicitly (:func:`bulk_load`).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file::memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction that holds the write lock from its first statement.

    On SQLite (pysqlite's own transaction handling, which the rest of the code relies
    on) this issues ``BEGIN IMMEDIATE`` itself: the transaction is then open before any
    ``SAVEPOINT`` (``conn.begin_nested()``), which would otherwise start — and on its
    release commit — a transaction of its own; and it queues behind another writer
    through the busy timeout instead of failing on a lock upgrade.  Committed when the
    block ends, rolled back on any exception.
    """
    with engine.begin() as conn:
        if is_sqlite(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield conn


@contextmanager
def bulk_load(conn: Connection) -> Iterator[Connection]:
    """Relax SQLite durability for a bulk load on ``conn`` (no-op on other databases)."""
    if not is_sqlite(conn):
        yield conn
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    for pragma in (
        "PRAGMA synchronous=OFF",
        "PRAGMA temp_store=MEMORY",
        "PRAGMA cache_size=-65536",
    ):
        driver.execute(pragma)
    try:
        yield conn
    finally:
        driver.execute("PRAGMA synchronous=FULL")
