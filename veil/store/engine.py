"""SQLAlchemy engines for provider stores.

Any SQLAlchemy URL works.  SQLite gets the settings a small service database wants:
write-ahead logging (readers never block the writer), enforced foreign keys and a busy
timeout; :func:`bulk_load` relaxes durability while the generator fills a fresh file
(a crash mid-load only loses a file that is regenerated anyway).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

__all__ = [
    "bulk_load",
    "insert_if_new",
    "insert_if_new_is_one_statement",
    "is_sqlite",
    "make_engine",
    "write_transaction",
]


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


def insert_if_new(conn: Connection, table: Table, row: Mapping[str, Any]) -> bool:
    """Insert ``row`` into ``table`` unless its primary key is taken; True when inserted.

    On SQLite and PostgreSQL one statement, ``INSERT … ON CONFLICT DO NOTHING RETURNING``,
    and no savepoint: a taken key writes nothing and leaves the transaction usable (how
    replay claims are made: a request id or token id claimed once).  Other backends use
    a savepoint and the integrity error."""
    key = (table, conn.dialect.name)
    statement = _INSERT_IF_NEW.get(key)
    if statement is None:
        dialect = _ON_CONFLICT.get(conn.dialect.name)
        if dialect is None:  # pragma: no cover - other backends
            try:
                with conn.begin_nested():
                    conn.execute(insert(table), dict(row))
                return True
            except IntegrityError:
                return False
        returned = next(iter(table.primary_key.columns))
        statement = dialect.insert(table).on_conflict_do_nothing().returning(returned)
        _INSERT_IF_NEW[key] = statement  # built once per table: the compiled form is reused
    return conn.execute(statement, dict(row)).first() is not None


def insert_if_new_is_one_statement(bind: Engine | Connection) -> bool:
    """Whether :func:`insert_if_new` is one statement on ``bind``'s database (then a taken
    key never disturbs the transaction, and many claims can share one commit)."""
    return bind.dialect.name in _ON_CONFLICT


_ON_CONFLICT: dict[str, Any] = {"sqlite": sqlite, "postgresql": postgresql}
_INSERT_IF_NEW: dict[tuple[Table, str], Any] = {}


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
