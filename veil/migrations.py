"""Schema versions of a node's own tables, kept with Alembic.

Every node that keeps state (the platform; a provider's ledger, request ids and parts)
owns a *history*: a directory of Alembic revisions in its package whose newest revision
(the head) builds exactly the tables its code defines.  A database records the revision
it is at in a version table of its own, ``veil_<node>_schema_version``, so that Veil's
tables can share a database with the unit's own (a provider's ledger defaults to its
business database, which may run Alembic under the default table name).

:func:`prepare_schema` runs when a daemon starts, before any table is touched:

* an empty database is built by running every revision (so the revisions, not
  ``create_all``, are what production databases are made of, and the tests check that
  they build what the code defines: :func:`schema_differences`);
* a database made without revisions (Veil's tables, no version table) is recorded at
  the head if its tables are this version's (``create_all`` made them: embedded use,
  tests), else at the first revision, which is what a Veil from before revisions were
  kept made, then upgraded;
* a database behind the head is upgraded, or refused in ``check`` mode with the
  command that upgrades it (``veil db upgrade``), for operators who migrate as a
  separate, reviewed step;
* a database at a revision this code does not know (made by a newer Veil) is refused.

An upgrade runs every pending revision in one transaction (``BEGIN IMMEDIATE`` on
SQLite, whose DDL is transactional once a transaction is open), so a failed upgrade
leaves the database at the revision it was at, whole.  On PostgreSQL the transaction
also holds an advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, MetaData, TypeDecorator, inspect
from sqlalchemy.exc import SQLAlchemyError

from veil.config import NodeConfig
from veil.errors import ConfigError, FailedPrecondition
from veil.store import make_engine

__all__ = [
    "SCHEMA_MODES",
    "SchemaHistory",
    "current_revision",
    "prepare_schema",
    "revision_at",
    "run_environment",
    "schema_differences",
    "schema_mode",
    "upgrade_schema",
]

SchemaMode = Literal["upgrade", "check"]
SCHEMA_MODES: tuple[SchemaMode, ...] = ("upgrade", "check")


def schema_mode(config: NodeConfig) -> SchemaMode:
    """``[store] schema``: ``"upgrade"`` (default) brings the node's tables to this
    version's schema when the daemon starts; ``"check"`` only checks, for operators who
    run ``veil db upgrade`` as a separate step (a Kubernetes Job before a rollout)."""
    value = config.section("store").get("schema", "upgrade")
    for mode in SCHEMA_MODES:
        if value == mode:
            return mode
    raise ConfigError(str(config.path), "store.schema", "must be 'upgrade' or 'check'")


@dataclass(frozen=True)
class SchemaHistory:
    """One node's revisions: ``script_location`` in Alembic's ``package:dir`` form, and
    the tables its code defines (``metadata``: called, not stored, so importing a
    history imports no store module)."""

    node: str
    script_location: str
    metadata: Callable[[], Sequence[MetaData]]

    @property
    def version_table(self) -> str:
        return f"veil_{self.node}_schema_version"

    @property
    def lock_key(self) -> int:
        """The PostgreSQL advisory-lock key of this history's upgrades (63 bits)."""
        digest = hashlib.sha256(self.version_table.encode()).digest()
        return int.from_bytes(digest[:8], "big") >> 1

    def tables(self) -> set[str]:
        return {name for md in self.metadata() for name in md.tables}

    def script(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.config())

    def head(self) -> str:
        head = self.script().get_current_head()
        assert head is not None, f"{self.script_location} has no revisions"
        return head

    def base(self) -> str:
        bases = self.script().get_bases()
        assert len(bases) == 1, f"{self.script_location} must have one first revision"
        return bases[0]

    def config(self, connection: Connection | None = None) -> Config:
        config = Config()
        config.set_main_option("script_location", self.script_location)
        config.attributes["history"] = self
        if connection is not None:
            config.attributes["connection"] = connection
        return config


def current_revision(connection: Connection, history: SchemaHistory) -> str | None:
    """The revision the database records, or None if it records none."""
    context = MigrationContext.configure(connection, opts=_read_only_options(history))
    return context.get_current_revision()


def revision_at(target: Engine | str, history: SchemaHistory) -> str | None:
    """:func:`current_revision` of the database at ``target`` (an engine or a URL)."""
    with _connection(target) as connection:
        return current_revision(connection, history)


def _read_only_options(history: SchemaHistory) -> dict[str, Any]:
    # transactional_ddl as every upgrade runs (run_environment); Alembic would otherwise
    # log that it assumes non-transactional DDL on SQLite, which no upgrade does
    return {"version_table": history.version_table, "transactional_ddl": True}


def _has_our_tables(connection: Connection, history: SchemaHistory) -> bool:
    return bool(history.tables() & set(inspect(connection).get_table_names()))


@contextmanager
def _connection(target: Engine | str) -> Iterator[Connection]:
    engine = make_engine(target) if isinstance(target, str) else target
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        if isinstance(target, str):
            engine.dispose()


# Alembic runs a revision through module-level state (``alembic.context``, ``alembic.op``),
# so one process runs one migration at a time; processes exclude each other in the
# database (the advisory lock).
_ALEMBIC = threading.Lock()


def upgrade_schema(target: Engine | str, history: SchemaHistory) -> tuple[str | None, str]:
    """Bring the database to the head revision; returns (revision before, head).

    A database with Veil's tables and no version table is first recorded at the head if
    its tables are this version's, else at the first revision (the module docstring)."""
    with _ALEMBIC, _connection(target) as connection:
        before = current_revision(connection, history)
        _refuse_unknown(before, history)
        try:
            if before is None and _has_our_tables(connection, history):
                # made without revisions: by this version's code (the tables say so), or
                # by a Veil from before revisions were kept, whose schema is the first
                made_by = history.head() if not schema_differences(connection, history) else None
                command.stamp(history.config(connection), made_by or history.base())
                connection.commit()
            command.upgrade(history.config(connection), "head")
            connection.commit()
        except (CommandError, SQLAlchemyError) as exc:
            connection.rollback()
            raise FailedPrecondition(
                f"upgrading the {history.node} schema to {history.head()!r} failed and "
                f"was rolled back: {exc}"
            ) from exc
        return before, history.head()


def _knows(history: SchemaHistory, revision: str) -> bool:
    try:
        return history.script().get_revision(revision) is not None
    except CommandError:  # Alembic's "can't locate revision"
        return False


def _refuse_unknown(revision: str | None, history: SchemaHistory) -> None:
    if revision is not None and not _knows(history, revision):
        raise FailedPrecondition(
            f"the database is at {history.node} schema revision {revision!r}, which this "
            f"version of Veil does not know (its newest is {history.head()!r}): it was "
            "made by a newer Veil; run that version, or restore a backup made before it"
        )


def prepare_schema(
    target: Engine | str, history: SchemaHistory, mode: SchemaMode = "upgrade"
) -> str:
    """Make sure the database is at the head revision before a daemon uses it (see the
    module docstring); returns the head.  ``mode = "check"`` upgrades nothing: a
    database behind the head is refused with the command that upgrades it."""
    with _connection(target) as connection:
        revision = current_revision(connection, history)
        _refuse_unknown(revision, history)
        if revision == history.head():
            return revision
        if mode == "check":
            where = (
                "has none of its tables"
                if revision is None and not _has_our_tables(connection, history)
                else f"is at revision {revision or 'from before schema versions'}"
            )
            raise FailedPrecondition(
                f"the {history.node} database {where}; this version needs "
                f"{history.head()!r}. Run `veil db upgrade --config <this node's config>` "
                '(or set [store] schema = "upgrade")'
            )
    upgrade_schema(target, history)
    return history.head()


def schema_differences(connection: Connection, history: SchemaHistory) -> list[Any]:
    """What the database's tables lack or have beyond what the code defines (Alembic's
    autogenerate comparison; empty when they agree).  Alembic's own version tables and
    tables that are not this history's are left out."""
    context = MigrationContext.configure(
        connection,
        opts={
            **_read_only_options(history),
            "compare_type": True,
            "include_name": _only_ours(history),
        },
    )
    merged = MetaData()
    for md in history.metadata():
        for table in md.tables.values():
            table.to_metadata(merged)
    return list(compare_metadata(context, merged))


def _only_ours(history: SchemaHistory) -> Callable[..., bool]:
    ours = history.tables()

    def include(name: str | None, kind: str, parent: Any) -> bool:
        if kind == "table":
            return name in ours
        return True

    return include


def _render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Revisions are frozen: a column of one of the code's own types is written as the
    standard type it stores, so a revision never imports product code."""
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


def run_environment(context: Any) -> None:
    """The body of every history's ``env.py``: migrate on the connection the caller
    passed (never a URL from a file), under the advisory lock on PostgreSQL.
    ``context`` is ``alembic.context``, the module that proxies the running
    :class:`~alembic.runtime.environment.EnvironmentContext`."""
    config = context.config
    history: SchemaHistory = config.attributes["history"]
    connection: Connection = config.attributes["connection"]
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=list(history.metadata()),
        version_table=history.version_table,
        include_name=_only_ours(history),
        render_as_batch=sqlite,
        compare_type=True,
        render_item=_render_item,
        transactional_ddl=True,  # SQLite's DDL is transactional too, once BEGIN is sent
    )
    with context.begin_transaction():
        if sqlite:  # pysqlite sends no BEGIN before DDL: without it each statement commits
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({history.lock_key})")
        context.run_migrations()
