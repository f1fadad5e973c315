"""Schema revisions (veil.migrations): what production databases are built and upgraded
with, on SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert, inspect, select, text

from platform_node.schema_history import PLATFORM_SCHEMA
from provider_node.guard import revocations
from provider_node.ledger import ledger_table
from provider_node.schema_history import PROVIDER_SCHEMA
from tests.conftest import POSTGRES_URL
from veil.errors import FailedPrecondition
from veil.migrations import (
    SchemaHistory,
    prepare_schema,
    revision_at,
    schema_differences,
    upgrade_schema,
)
from veil.store import make_engine
from veil_cli.main import main as veil

HISTORIES = [PLATFORM_SCHEMA, PROVIDER_SCHEMA]
LEDGER_ROW = {
    "at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
    "request_id": "r-1",
    "method": "VerifyClaim",
    "caller": "platform",
    "uscc": None,
    "datasets": "tax_payments",
    "outcome": "answered",
    "detail": "",
}
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def empty_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, or a new PostgreSQL schema that every
    connection of the URL uses (``search_path``), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'node.db'}"
        return
    schema = f"migrations_test_{uuid.uuid4().hex[:12]}"
    base = make_engine(POSTGRES_URL)
    with base.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with base.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        base.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path) as url:
        yield url


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def revision_of(url: str, history: SchemaHistory) -> str | None:
    return revision_at(url, history)


def differences(url: str, history: SchemaHistory) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return schema_differences(conn, history)
    finally:
        engine.dispose()


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: h.node)
def test_the_revisions_build_exactly_the_tables_the_code_defines(
    url: str, history: SchemaHistory
) -> None:
    """Fails when a table, column, type or index changes without a new revision
    (``python scripts/schema_revision.py NODE MESSAGE`` writes one)."""
    assert prepare_schema(url, history) == history.head()
    assert revision_of(url, history) == history.head()
    assert history.tables() <= tables(url)
    assert differences(url, history) == []


def test_a_database_from_before_schema_versions_is_recorded_and_upgraded_with_its_rows(
    url: str,
) -> None:
    """What a Veil from before revisions left: the first revision's tables, no version
    table, rows (a ledger row; a revocation keyed by the platform's number)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            command.upgrade(PROVIDER_SCHEMA.config(conn), PROVIDER_SCHEMA.base())
            conn.commit()
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {PROVIDER_SCHEMA.version_table}"))
            at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
            conn.execute(insert(ledger_table), [LEDGER_ROW])
            conn.execute(
                text(
                    "INSERT INTO veil_provider_revocations (seq, uscc, grant_id, "
                    "revocation_jws, received_at) VALUES (7, :uscc, 'g-7', 'jws', :at)"
                ),
                {"uscc": "91350100M000100Y43", "at": at},
            )
    finally:
        engine.dispose()
    assert revision_of(url, PROVIDER_SCHEMA) is None
    assert prepare_schema(url, PROVIDER_SCHEMA) == PROVIDER_SCHEMA.head() != "0001"
    assert revision_of(url, PROVIDER_SCHEMA) == PROVIDER_SCHEMA.head()
    assert differences(url, PROVIDER_SCHEMA) == []
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(ledger_table.c.request_id)).scalars().all() == ["r-1"]
            kept = conn.execute(select(revocations.c.seq, revocations.c.grant_id)).all()
            assert [tuple(r) for r in kept] == [(7, "g-7")]
    finally:
        engine.dispose()


def test_a_database_this_version_made_without_revisions_is_recorded_at_the_head(
    url: str,
) -> None:
    """``create_all`` (embedded use, tests) makes this version's tables: they are
    recorded as they are, not upgraded from the first revision."""
    engine = make_engine(url)
    try:
        for md in PROVIDER_SCHEMA.metadata():
            md.create_all(engine)
        with engine.begin() as conn:
            conn.execute(insert(ledger_table), [LEDGER_ROW])
    finally:
        engine.dispose()
    assert prepare_schema(url, PROVIDER_SCHEMA) == PROVIDER_SCHEMA.head()
    assert revision_of(url, PROVIDER_SCHEMA) == PROVIDER_SCHEMA.head()
    assert differences(url, PROVIDER_SCHEMA) == []


def test_check_mode_refuses_a_database_behind_and_changes_nothing(url: str) -> None:
    with pytest.raises(FailedPrecondition, match=r"veil db upgrade --config"):
        prepare_schema(url, PLATFORM_SCHEMA, "check")
    assert tables(url) == set()
    upgrade_schema(url, PLATFORM_SCHEMA)
    assert prepare_schema(url, PLATFORM_SCHEMA, "check") == PLATFORM_SCHEMA.head()


def test_a_database_made_by_a_newer_veil_is_refused_in_either_mode(url: str) -> None:
    upgrade_schema(url, PROVIDER_SCHEMA)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {PROVIDER_SCHEMA.version_table} SET version_num = '9999'"))
    finally:
        engine.dispose()
    for mode in ("upgrade", "check"):
        with pytest.raises(FailedPrecondition, match=r"'9999'.*newer Veil"):
            prepare_schema(url, PROVIDER_SCHEMA, mode)  # type: ignore[arg-type]
    assert revision_of(url, PROVIDER_SCHEMA) == "9999"


def test_the_nodes_keep_separate_versions_beside_a_units_own_alembic(url: str) -> None:
    """A provider's ledger may live in the unit's business database, which may keep its
    own ``alembic_version``: Veil neither reads nor writes it."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('their-own')"))
    finally:
        engine.dispose()
    prepare_schema(url, PROVIDER_SCHEMA)
    prepare_schema(url, PLATFORM_SCHEMA)
    assert revision_of(url, PROVIDER_SCHEMA) == PROVIDER_SCHEMA.head()
    assert revision_of(url, PLATFORM_SCHEMA) == PLATFORM_SCHEMA.head()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            theirs = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            assert theirs.all() == ["their-own"]
    finally:
        engine.dispose()


def start_replica(url: str) -> str:
    return prepare_schema(url, PLATFORM_SCHEMA)


def test_replicas_starting_together_build_the_schema_once(tmp_path: Path) -> None:
    """Platform replicas are processes sharing one PostgreSQL database: the advisory
    lock lets one build the schema while the others wait, then find it at the head."""
    with (
        empty_database("postgres", tmp_path) as url,
        multiprocessing.get_context("spawn").Pool(4) as pool,
    ):
        heads = pool.map(start_replica, [url] * 4, chunksize=1)
        assert heads == [PLATFORM_SCHEMA.head()] * 4
        assert revision_of(url, PLATFORM_SCHEMA) == PLATFORM_SCHEMA.head()
        assert differences(url, PLATFORM_SCHEMA) == []


@pytest.mark.parametrize("history", HISTORIES, ids=lambda h: h.node)
def test_revisions_are_frozen_they_import_no_product_code(history: SchemaHistory) -> None:
    versions = ROOT / f"{history.node}_node" / "migrations" / "versions"
    files = sorted(versions.glob("[0-9]*.py"))
    assert files, versions
    for path in files:
        imports = re.findall(r"^\s*(?:from|import) (\S+)", path.read_text(), re.MULTILINE)
        assert set(imports) <= {"collections.abc", "sqlalchemy", "alembic"}, (path, imports)


def write_config(tmp_path: Path, role: str, url: str) -> Path:
    config = tmp_path / f"{role}.toml"
    config.write_text(
        "\n".join(
            [
                "[node]",
                f'role = "{role}"',
                f'name = "{role}-1"',
                'listen = "127.0.0.1:0"',
                "[tls]",
                "insecure = true",
                "[store]",
                f'url = "{url}"',
                'schema = "check"',
            ]
        )
        + "\n"
    )
    return config


def test_veil_db_shows_upgrades_and_checks_a_nodes_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    config = str(write_config(tmp_path, "platform", url))
    assert veil(["db", "current", "--config", config]) == 0
    assert "platform schema: none" in capsys.readouterr().out
    assert veil(["db", "check", "--config", config]) == 1
    assert "veil db upgrade --config" in capsys.readouterr().err
    assert veil(["db", "upgrade", "--config", config]) == 0
    head = PLATFORM_SCHEMA.head()
    assert f"platform schema: none -> {head}" in capsys.readouterr().out
    assert veil(["db", "check", "--config", config, "--json"]) == 0
    assert capsys.readouterr().out.strip() == (
        f'{{"node": "platform", "revision": "{head}", "head": "{head}"}}'
    )


def test_veil_db_refuses_a_node_without_tables_and_a_bad_schema_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from veil.config import load_node_config
    from veil.migrations import schema_mode

    config = write_config(tmp_path, "gateway", f"sqlite:///{tmp_path / 'g.db'}")
    assert veil(["db", "current", "--config", str(config)]) == 2
    assert "keeps no tables" in capsys.readouterr().err
    text_ = config.read_text().replace('schema = "check"', 'schema = "later"')
    config.write_text(text_)
    with pytest.raises(Exception, match=r"store\.schema.*'upgrade' or 'check'"):
        schema_mode(load_node_config(str(config)))


def scratch_history(tmp_path: Path, revisions: dict[str, str]) -> SchemaHistory:
    """A history of its own in ``tmp_path``: ``revisions`` maps an id to the body of
    its ``upgrade()``, each revising the one before."""
    from sqlalchemy import Column, Integer, MetaData, Table

    root = tmp_path / "scratch_migrations"
    (root / "versions").mkdir(parents=True)
    (root / "env.py").write_text((ROOT / "platform_node/migrations/env.py").read_text())
    previous = None
    for rev, body in revisions.items():
        (root / "versions" / f"{rev}.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n"
            f"revision = {rev!r}\ndown_revision = {previous!r}\n"
            "branch_labels = None\ndepends_on = None\n"
            f"def upgrade():\n    {body}\n"
        )
        previous = rev
    metadata = MetaData()
    Table("scratch_a", metadata, Column("id", Integer, primary_key=True))
    return SchemaHistory("scratch", str(root), lambda: [metadata])


def test_a_failing_upgrade_leaves_the_database_as_it_was(url: str, tmp_path: Path) -> None:
    create_a = "op.create_table('scratch_a', sa.Column('id', sa.Integer, primary_key=True))"
    good = scratch_history(tmp_path / "good", {"0001": create_a})
    assert prepare_schema(url, good) == "0001"
    broken = scratch_history(
        tmp_path / "broken",
        {
            "0001": create_a,
            "0002": "op.create_table('scratch_b', sa.Column('id', sa.Integer)); "
            "op.add_column('scratch_a', sa.Column('v', sa.Integer)); "
            "op.execute('SELECT no_such_column FROM scratch_a')",
            "0003": "op.create_table('scratch_c', sa.Column('id', sa.Integer))",
        },
    )
    failed = r"upgrading the scratch schema to '0003' failed and was rolled back.*no_such_column"
    with pytest.raises(FailedPrecondition, match=failed):
        prepare_schema(url, broken)
    assert revision_of(url, broken) == "0001"
    assert {"scratch_b", "scratch_c"}.isdisjoint(tables(url))
    engine = make_engine(url)
    try:
        assert [c["name"] for c in inspect(engine).get_columns("scratch_a")] == ["id"]
    finally:
        engine.dispose()


def test_veil_version_names_the_schema_revisions_it_builds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        veil(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert re.fullmatch(
        rf"veil \S+ \(wire veil\.v1; schema revisions: platform {PLATFORM_SCHEMA.head()}, "
        rf"provider {PROVIDER_SCHEMA.head()}\)\n",
        out,
    ), out
