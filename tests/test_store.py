"""Provider stores: mapping validation, and round trips on SQLite and on PostgreSQL for real."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from veil.catalog import load_catalog
from veil.errors import ConfigError, InvalidArgument
from veil.store import (
    IDENTITY_NAME,
    IDENTITY_USCC,
    ProviderStore,
    load_mapping,
    make_engine,
    mapping_path,
    parse_mapping,
)
from veil.synth import iter_population
from veil.synth.datasets import build

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
CATALOG = load_catalog()
UNITS = CATALOG.providers()


# --- mapping files ----------------------------------------------------------------------------


@pytest.mark.parametrize("unit", UNITS)
def test_packaged_mapping_covers_its_unit(unit: str) -> None:
    mapping = load_mapping(unit)
    assert mapping.unit == unit
    assert set(mapping.tables) == {d.id for d in CATALOG.datasets_for_provider(unit)}
    for ds_id, tm in mapping.tables.items():
        assert set(tm.columns) == set(CATALOG.dataset(ds_id).field_ids)


def test_units_use_their_own_naming() -> None:
    keys = {
        load_mapping(u).tables[d.id].key for u in UNITS for d in CATALOG.datasets_for_provider(u)
    }
    tables = [tm.table for u in UNITS for tm in load_mapping(u).tables.values()]
    assert len(keys) >= 10  # nsrsbh, aab998, uniscid, qlrzjh, ...
    assert len(tables) == len(set(tables))
    assert load_mapping("tax").tables["tax_payments"].key == "nsrsbh"


def _tax_doc() -> dict[str, Any]:
    return {
        "unit": "tax",
        "datasets": {
            "tax_abnormal": {
                "table": "dj_fzchxx",
                "key": "nsrsbh",
                "columns": {
                    "tax_abnormal_taxpayer": {
                        "column": "fzchbz",
                        "transform": "enum",
                        "codes": {"Y": True, "N": False},
                    }
                },
            }
        },
    }


def _error(doc: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        parse_mapping(doc, "m.toml", CATALOG)
    assert exc.value.path == "m.toml"
    return exc.value


def test_minimal_mapping_parses() -> None:
    m = parse_mapping(_tax_doc(), "m.toml", CATALOG)
    assert m.tables["tax_abnormal"].columns["tax_abnormal_taxpayer"].column == "fzchbz"


@pytest.mark.parametrize(
    ("mutate", "key", "problem"),
    [
        (lambda d: d.update(unit="bank"), "unit", "not a provider unit"),
        (lambda d: d.update(extra=1), "extra", "unknown key"),
        (
            lambda d: d["datasets"].update(tax_nothing={}),
            "datasets.tax_nothing",
            "unknown catalog dataset",
        ),
        (
            lambda d: d["datasets"].update(si_arrears={}),
            "datasets.si_arrears",
            "belongs to provider 'social_insurance'",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"]["columns"].update(tax_grade="x"),
            "datasets.tax_abnormal.columns.tax_grade",
            "not a field of catalog dataset tax_abnormal",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"]["columns"].update(no_such_field="x"),
            "datasets.tax_abnormal.columns.no_such_field",
            "not a field",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"]["columns"].clear(),
            "datasets.tax_abnormal.columns",
            "missing fields: tax_abnormal_taxpayer",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"].update(table="DJ-FZCH"),
            "datasets.tax_abnormal.table",
            "SQL identifier",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"].update(row_id="xh"),
            "datasets.tax_abnormal.row_id",
            "cardinality 'many'",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"]["columns"].update(
                tax_abnormal_taxpayer="nsrsbh"
            ),
            "datasets.tax_abnormal.columns.tax_abnormal_taxpayer",
            "already the key",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"]["columns"]["tax_abnormal_taxpayer"].update(
                transform="scale", factor=100
            ),
            "datasets.tax_abnormal.columns.tax_abnormal_taxpayer.transform",
            "'scale' does not apply to a boolean field",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"]["columns"]["tax_abnormal_taxpayer"].update(
                transform="rot13"
            ),
            "datasets.tax_abnormal.columns.tax_abnormal_taxpayer.transform",
            "must be one of scale, enum, date",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"]["columns"]["tax_abnormal_taxpayer"].update(
                codes={"Y": True}
            ),
            "datasets.tax_abnormal.columns.tax_abnormal_taxpayer.codes",
            "exactly one code for each of [False]",
        ),
        (
            lambda d: d["datasets"]["tax_abnormal"]["columns"]["tax_abnormal_taxpayer"].update(
                codes={"Y": True, "N": False, "X": "maybe"}
            ),
            "datasets.tax_abnormal.columns.tax_abnormal_taxpayer.codes.X",
            "not a catalog value",
        ),
    ],
)
def test_mapping_errors_name_the_key(mutate: Any, key: str, problem: str) -> None:
    doc = _tax_doc()
    mutate(doc)
    err = _error(doc)
    assert err.key == key
    assert problem in err.problem
    assert str(err).startswith("m.toml: ")


def test_mapping_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping file not found"):
        load_mapping(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("unit = ", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as exc:
        load_mapping(bad)
    assert exc.value.path == str(bad)
    copy = tmp_path / "tax.toml"
    copy.write_text(mapping_path("tax").read_text(encoding="utf-8"), encoding="utf-8")
    assert load_mapping(copy).unit == "tax"


# --- round trips ------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """A database URL and schema: a fresh SQLite file, or a unique PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}", None
        return
    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - only where no server runs
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    schema = f"veil_test_{uuid.uuid4().hex[:12]}"
    try:
        yield POSTGRES_URL, schema
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


def _population() -> Any:
    return next(iter_population(400, 5))


def _rows(cols: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(cols)
    return [dict(zip(keys, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def _canon(rows: list[dict[str, Any]]) -> Counter[tuple[tuple[str, Any], ...]]:
    return Counter(tuple(sorted(r.items())) for r in rows)


@pytest.mark.parametrize("unit", ["tax", "samr", "social_insurance", "utilities", "real_estate"])
def test_round_trip_every_dataset(db: tuple[str, str | None], unit: str) -> None:
    url, schema = db
    pop = _population()
    with ProviderStore(url, load_mapping(unit), CATALOG, schema=schema) as store:
        store.create_schema()
        expected: dict[str, list[dict[str, Any]]] = {}
        for i, (ds_id, tm) in enumerate(store.mapping.tables.items()):
            cols = build(ds_id, pop)
            rows = _rows(cols)
            written = store.write_rows(ds_id, rows) if i % 2 else store.write_columns(ds_id, cols)
            assert written == len(rows)
            if tm.name is None:
                for r in rows:
                    r.pop(IDENTITY_NAME, None)
            expected[ds_id] = rows
        for ds_id, rows in expected.items():
            assert store.count(ds_id) == len(rows)
            got = [r for batch in store.iter_dataset(ds_id, batch_size=97) for r in batch]
            assert _canon(got) == _canon(rows), ds_id
            usccs = [r[IDENTITY_USCC] for r in got]
            assert usccs == sorted(usccs)
        # fetch one enterprise across every dataset of the unit
        uscc = expected[next(iter(expected))][0][IDENTITY_USCC]
        fields = [f.id for f in CATALOG.fields_for_provider(unit)]
        fetched = store.fetch(uscc, fields)
        assert set(fetched) == set(store.mapping.tables)
        for ds_id, rows in fetched.items():
            want = [
                {k: v for k, v in r.items() if k not in (IDENTITY_USCC, IDENTITY_NAME)}
                for r in expected[ds_id]
                if r[IDENTITY_USCC] == uscc
            ]
            assert _canon(rows) == _canon(want), ds_id
        assert store.has_enterprise(uscc)
        assert not store.has_enterprise("91350100M000100Y43")


def _tax_store(url: str, schema: str | None) -> ProviderStore:
    store = ProviderStore(url, load_mapping("tax"), CATALOG, schema=schema)
    store.create_schema()
    return store


def test_transforms_store_the_units_own_representation(db: tuple[str, str | None]) -> None:
    url, schema = db
    with _tax_store(url, schema) as store:
        store.write_rows(
            "tax_payments",
            [
                {
                    IDENTITY_USCC: "91350100M000100Y43",
                    IDENTITY_NAME: "福州测试有限公司",
                    "tax_vat_due_last_year": 1234.56,
                    "tax_vat_paid_last_year": 1000.0,
                    "tax_cit_due_last_year": None,
                    "tax_cit_paid_last_year": 0.0,
                    "tax_consecutive_normal_months": 17,
                    "tax_last_normal_payment_date": dt.date(2025, 5, 15),
                }
            ],
        )
        store.write_rows(
            "tax_credit_grade",
            [
                {IDENTITY_USCC: "91350100M000100Y43", "tax_grade_year": 2024, "tax_grade": "A"},
                {IDENTITY_USCC: "91350100M000100Y43", "tax_grade_year": 2023, "tax_grade": "M"},
            ],
        )
        prefix = f'"{schema}".' if schema else ""
        with store.engine.connect() as conn:
            raw = conn.execute(
                text(f"SELECT zzs_ynse_f, qysds_ynse_f, zhzcjsrq FROM {prefix}sb_jsxx")
            ).one()
            codes = conn.execute(
                text(f"SELECT nsxydj_dm FROM {prefix}sb_nsxydj ORDER BY pjnd")
            ).scalars()
            assert list(raw) == [123456, None, "20250515"]
            assert list(codes) == ["03", "01"]
        got = store.fetch(
            "91350100M000100Y43",
            ["tax_grade", "tax_vat_due_last_year", "tax_last_normal_payment_date"],
            identity=True,
        )
        assert got["tax_payments"] == [
            {
                IDENTITY_USCC: "91350100M000100Y43",
                IDENTITY_NAME: "福州测试有限公司",
                "tax_vat_due_last_year": 1234.56,
                "tax_last_normal_payment_date": dt.date(2025, 5, 15),
            }
        ]
        # many-datasets come back in the unit's order (order_by = pjnd)
        assert [r["tax_grade"] for r in got["tax_credit_grade"]] == ["M", "A"]
        assert store.fetch("91110105771583283D", ["tax_grade"]) == {"tax_credit_grade": []}


def test_fetch_reads_only_requested_columns(tmp_path: Path) -> None:
    store = _tax_store(f"sqlite:///{tmp_path / 't.db'}", None)
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2].lower()))
    store.fetch("91350100M000100Y43", ["tax_vat_paid_last_year"])
    select = next(s for s in statements if "from sb_jsxx" in s)
    assert "zzs_sjje_f" in select
    for other in ("zzs_ynse_f", "qysds_ynse_f", "lxzcjsys", "zhzcjsrq", "nsrmc"):
        assert other not in select
    store.close()


def test_fetch_refuses_fields_of_other_units(tmp_path: Path) -> None:
    store = _tax_store(f"sqlite:///{tmp_path / 't.db'}", None)
    with pytest.raises(InvalidArgument, match="not served by provider 'tax'"):
        store.fetch("91350100M000100Y43", ["si_in_arrears"])
    with pytest.raises(InvalidArgument, match="unknown catalog field"):
        store.fetch("91350100M000100Y43", ["nope"])
    with pytest.raises(InvalidArgument, match="not served"):
        store.count("si_arrears")
    with pytest.raises(InvalidArgument, match="must belong to dataset"):
        next(store.iter_dataset("tax_payments", ["tax_grade"]))
    with pytest.raises(InvalidArgument, match="lacks its 'uscc' key"):
        store.write_rows("tax_abnormal", [{"tax_abnormal_taxpayer": True}])
    store.close()


def test_sqlite_engine_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        # FULL (2): an acknowledged commit (ledger row, replay claim, grant) survives a
        # power cut; request-path speed comes from fewer commits, never from weaker ones
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2
    engine.dispose()


@pytest.mark.postgres
def test_generate_into_postgres_schema(tmp_path: Path) -> None:
    """`veil data generate --url tax=postgresql...` writes a unit into PostgreSQL."""
    from veil.synth import write_population

    engine = make_engine(POSTGRES_URL)
    schema = f"veil_gen_{uuid.uuid4().hex[:12]}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        summary = write_population(
            tmp_path, 300, 3, units=["tax", "housing_fund"], urls={"tax": url}, progress=False
        )
        assert summary.units["tax"].url == url
        with ProviderStore(url, load_mapping("tax"), CATALOG) as store:
            assert store.count("tax_payments") == 300
        assert (tmp_path / "housing_fund.db").exists()
        assert not (tmp_path / "tax.db").exists()
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_insert_if_new_claims_a_key_once(kind: str, tmp_path: Path) -> None:
    """The replay-claim primitive: the first insert of a key succeeds, the second writes
    nothing and says so, and the transaction goes on (both rows of the batch commit)."""
    from sqlalchemy import Column, MetaData, String, Table, select

    from tests.conftest import fresh_database
    from veil.store import insert_if_new, insert_if_new_is_one_statement, write_transaction

    claims = Table("claims", MetaData(), Column("token", String(64), primary_key=True))
    with fresh_database(kind, tmp_path, "claims") as engine:
        claims.metadata.create_all(engine)
        assert insert_if_new_is_one_statement(engine)
        with write_transaction(engine) as conn:
            assert insert_if_new(conn, claims, {"token": "a"})
            assert not insert_if_new(conn, claims, {"token": "a"})
            assert insert_if_new(conn, claims, {"token": "b"})
        with engine.connect() as conn:
            assert sorted(conn.execute(select(claims.c.token)).scalars()) == ["a", "b"]
            assert not insert_if_new(conn, claims, {"token": "b"})
