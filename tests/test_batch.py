"""Full-coverage evaluation (全覆盖信用评价) with CKKS, through the real daemons (issue 5).

Checked: every selected enterprise is scored and equals the plaintext model within the
stated precision (|ΔPD| ≤ 1e-4); selection by region and industry; the job survives
the platform being killed mid-run (SIGKILL) and finishes after a restart without
losing or duplicating a result; results are pushed to subscribed institutions; the
provider refuses a job that would not flood the noise.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import signal
import subprocess
import sys
import time
from typing import Any

import grpc
import pytest

from platform_node.models.demo import enterprise_rows, fit_demo_model, read_labels
from tests.conftest import run
from veil.scoring.plain import plain_logit
from veil.scoring.spec import parse_model
from veil.v1 import scoring_pb2 as spb
from veil.v1 import scoring_pb2_grpc
from veil_cli.calls import call_gateway, call_platform
from veil_cli.score_demo import follow_batch, import_model

pytestmark = pytest.mark.timeout(900)
PD_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model(federation: Any) -> tuple[dict[str, Any], spb.ModelInfo]:
    doc = fit_demo_model(federation.data)
    return doc, run(import_model(str(federation.workdir / "admin.toml"), doc))


def admin(fed: Any, method: str, request: Any) -> Any:
    return run(
        call_platform(
            str(fed.workdir / "admin.toml"), scoring_pb2_grpc.BatchAdminStub, method, request
        )
    )


def start(fed: Any, model_id: str, **kw: Any) -> spb.BatchJob:
    return admin(
        fed,
        "StartBatch",
        spb.StartBatchRequest(
            model_id=model_id,
            chunk_size=kw.get("chunk_size", 0),
            selection=spb.BatchSelection(
                regions=kw.get("regions", []), industries=kw.get("industries", [])
            ),
        ),
    )


def results(fed: Any, job_id: str) -> dict[str, spb.BatchResultRow]:
    page = admin(fed, "ListBatchResults", spb.ListBatchResultsRequest(job_id=job_id, limit=10_000))
    rows = {r.uscc: r for r in page.rows}
    assert len(rows) == len(page.rows) == page.total
    return rows


def expected_pd(fed: Any, doc: dict[str, Any], usccs: list[str]) -> dict[str, float]:
    spec = parse_model(doc)
    fields = {p: spec.fields_of(p) for p in spec.providers}
    out = {}
    for u in usccs:
        out[u] = spec.scale.apply(
            plain_logit(spec, enterprise_rows(fed.data, spec.providers, fields, u))
        ).pd
    return out


def registered(fed: Any) -> list[str]:
    from sqlalchemy import create_engine, select

    from platform_node.public_store import public_records

    engine = create_engine(f"sqlite:///{fed.data / 'platform.db'}")
    with engine.connect() as conn:
        rows = conn.execute(
            select(public_records.c.uscc).where(public_records.c.dataset_id == "samr_basic")
        ).all()
    return sorted({r.uscc for r in rows})


@pytest.mark.parametrize("chunk_size", [128, 0])
def test_full_coverage_scores_every_enterprise_within_the_stated_precision(
    federation: Any, model: tuple[dict[str, Any], spb.ModelInfo], chunk_size: int
) -> None:
    """Chunks of 128 take the uniform path at every provider (below
    ``batch_uniform_below``); the default, one chunk of the whole population, the
    shortcut path.  Both within the stated precision of the plaintext model."""
    from provider_node.scoring_batch import UNIFORM_BELOW
    from veil.scoring.ckks import SLOTS

    doc, info = model
    job = start(federation, info.model_id, chunk_size=chunk_size)
    done = run(follow_batch(str(federation.workdir / "admin.toml"), job.job_id, show=False))
    assert done.state == "done", done.error
    universe = registered(federation)
    size = chunk_size or SLOTS
    assert done.enterprises == len(universe) == done.scored and done.chunks == -(
        -len(universe) // size
    )
    assert (size < UNIFORM_BELOW) == (chunk_size == 128) and len(universe) >= UNIFORM_BELOW
    assert "1e-4" in done.precision
    got = results(federation, job.job_id)
    assert sorted(got) == universe
    sample = universe[:: max(1, len(universe) // 60)]
    want = expected_pd(federation, doc, sample)
    worst = max(abs(got[u].pd - want[u]) for u in sample)
    assert worst <= PD_TOLERANCE, worst
    spec = parse_model(doc)
    for u in sample:  # grade and score follow the published PD
        r = got[u]
        assert r.grade == next(g for g, bound in spec.scale.grades if r.pd <= bound)


def test_region_and_industry_selections(
    federation: Any, model: tuple[dict[str, Any], spb.ModelInfo]
) -> None:
    _, info = model
    universe = registered(federation)
    region = universe[0][2:4]
    job = start(federation, info.model_id, regions=[region])
    done = run(follow_batch(str(federation.workdir / "admin.toml"), job.job_id, show=False))
    assert done.state == "done"
    assert sorted(results(federation, job.job_id)) == [u for u in universe if u[2:4] == region]
    job = start(federation, info.model_id, industries=["F"])
    done = run(follow_batch(str(federation.workdir / "admin.toml"), job.job_id, show=False))
    assert done.state == "done" and 0 < done.enterprises < len(universe)
    from veil.catalog import load_catalog
    from veil.store import ProviderStore, load_mapping

    catalog = load_catalog()
    samr = ProviderStore(
        f"sqlite:///{federation.data / 'samr.db'}", load_mapping("samr", catalog), catalog
    )
    in_f = {
        row["uscc"]
        for batch in samr.iter_dataset("samr_industry", ["samr_industry_code"])
        for row in batch
        if str(row["samr_industry_code"]).startswith("F")
    }
    samr.close()
    assert set(results(federation, job.job_id)) == in_f & set(universe)


def restart_platform(fed: Any, how: signal.Signals) -> None:
    proc = fed.processes["platform"]
    proc.send_signal(how)
    proc.wait(timeout=30)
    log = (fed.logs / "platform.log").open("ab")
    fed.processes["platform"] = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "veil_cli",
            "platform",
            "serve",
            "--config",
            str(fed.configs / "platform.toml"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()
    run(fed.wait_healthy())


def test_batch_resumes_after_the_platform_is_killed_mid_run(
    federation: Any, model: tuple[dict[str, Any], spb.ModelInfo]
) -> None:
    doc, info = model
    job = start(federation, info.model_id, chunk_size=8)
    assert job.chunks >= 20
    deadline = time.monotonic() + 120
    while True:
        state = admin(federation, "GetBatch", spb.GetBatchRequest(job_id=job.job_id))
        if state.chunks_done >= 2:
            break
        assert state.state == "running" and time.monotonic() < deadline, state
        time.sleep(0.05)
    # an operator's `--follow` already running rides out the crash and the restart
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        following = pool.submit(
            run, follow_batch(str(federation.workdir / "admin.toml"), job.job_id, show=False)
        )
        restart_platform(federation, signal.SIGKILL)  # a crash: no chance to clean up
        after_crash = admin(federation, "GetBatch", spb.GetBatchRequest(job_id=job.job_id))
        assert 2 <= after_crash.chunks_done < job.chunks, "the crash did not land mid-run"
        done = following.result(timeout=300)
    assert done.state == "done", done.error
    assert done.chunks_done == done.chunks and done.scored == done.enterprises
    got = results(federation, job.job_id)
    assert sorted(got) == registered(federation)
    sample = sorted(got)[:: max(1, len(got) // 40)]
    want = expected_pd(federation, doc, sample)
    assert max(abs(got[u].pd - want[u]) for u in sample) <= PD_TOLERANCE


def test_results_are_pushed_to_subscribed_institutions(
    federation: Any, model: tuple[dict[str, Any], spb.ModelInfo]
) -> None:
    _, info = model
    client = str(federation.workdir / "client.toml")
    universe = registered(federation)
    region = universe[-1][2:4]
    sub = run(
        call_gateway(
            client,
            scoring_pb2_grpc.ScoringServiceStub,
            "Subscribe",
            spb.SubscribeRequest(region=region),
        )
    )
    again = run(
        call_gateway(
            client,
            scoring_pb2_grpc.ScoringServiceStub,
            "Subscribe",
            spb.SubscribeRequest(region=region),
        )
    )
    assert again.subscription_id == sub.subscription_id  # idempotent
    job = start(federation, info.model_id)
    with pytest.raises(Exception, match="not done"):
        admin(federation, "PushBatch", spb.PushBatchRequest(job_id=job.job_id))
    done = run(follow_batch(str(federation.workdir / "admin.toml"), job.job_id, show=False))
    assert done.state == "done"
    pushed = admin(federation, "PushBatch", spb.PushBatchRequest(job_id=job.job_id))
    mine = [d for d in pushed.deliveries if d.subscription_id == sub.subscription_id]
    assert len(mine) == 1 and mine[0].log_index >= 0
    assert not admin(federation, "PushBatch", spb.PushBatchRequest(job_id=job.job_id)).deliveries
    inbox = run(
        call_gateway(
            client,
            scoring_pb2_grpc.ScoringServiceStub,
            "ListDeliveries",
            spb.ListDeliveriesRequest(),
        )
    )
    assert mine[0].delivery_id in {d.delivery_id for d in inbox.deliveries}
    page = run(
        call_gateway(
            client,
            scoring_pb2_grpc.ScoringServiceStub,
            "GetDelivery",
            spb.GetDeliveryRequest(delivery_id=mine[0].delivery_id),
        )
    )
    assert page.total == mine[0].rows == len([u for u in universe if u[2:4] == region])
    assert {r.uscc[2:4] for r in page.rows} == {region}


def test_bad_batch_requests(federation: Any, model: tuple[dict[str, Any], spb.ModelInfo]) -> None:
    with pytest.raises(Exception, match="unknown model"):
        start(federation, "no-such-model")
    with pytest.raises(Exception, match="not a valid prefix"):
        start(federation, model[1].model_id, regions=["32x"])
    with pytest.raises(Exception, match="no batch job"):
        admin(
            federation,
            "GetBatch",
            spb.GetBatchRequest(job_id="00000000-0000-0000-0000-000000000000"),
        )


def test_provider_refuses_a_job_without_enough_flooding(
    federation: Any, model: tuple[dict[str, Any], spb.ModelInfo]
) -> None:
    from veil.scoring.ckks import new_secret_context, public_context_bytes
    from veil.scoring.part import model_part
    from veil.tls import PeerIdentity, secure_channel
    from veil.v1 import provider_scoring_pb2 as ppb
    from veil.v1 import provider_scoring_pb2_grpc

    doc, info = model
    spec = parse_model(dict(doc, version=info.version))
    header = ppb.InstallBatchPart(
        job_id="evil-job",
        model_id=spec.model_id,
        version=info.version,
        ckks_public_context=public_context_bytes(new_secret_context()),
        part_json=model_part(spec, "tax").to_json(),
        flood_sigma=0.0,
        mask_bound=2.0**30,
        slots=4096,
    )
    node = federation.node("tax")

    async def call() -> Any:
        async def parts() -> Any:
            yield header

        async with secure_channel(
            node.address, federation.client_tls("platform"), PeerIdentity("provider", "tax")
        ) as ch:
            return await provider_scoring_pb2_grpc.ProviderScoringStub(ch).InstallBatch(
                parts(), timeout=30
            )

    with pytest.raises(grpc.aio.AioRpcError) as err:
        run(call())
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "flooding" in (
        err.value.details() or ""
    )
    secret = new_secret_context()
    header.flood_sigma = 2.0**-16
    header.ckks_public_context = secret.serialize(
        save_secret_key=True
    )  # a context with a secret key
    with pytest.raises(grpc.aio.AioRpcError) as err:
        run(call())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no secret key" in (
        err.value.details() or ""
    )


def test_labels_cover_the_batch_population(federation: Any) -> None:
    """Sanity of the fixture: borrowers are SAMR-registered enterprises."""
    assert set(read_labels(federation.data / "labels.csv")) <= set(registered(federation))


def test_cli_batch_start_follow_status_and_results(
    federation: Any, model: tuple[dict[str, Any], spb.ModelInfo], capsys: Any
) -> None:
    """``veil score batch start --follow`` (progress bar until done), ``status`` and
    ``results --csv`` for one region, against the stored results."""
    import csv
    import io
    import re

    from veil_cli.main import main

    _, info = model
    config = str(federation.workdir / "admin.toml")
    universe = registered(federation)
    region = universe[len(universe) // 2][2:4]
    start_args = ["score", "batch", "start", "--model", info.model_id, "--region", region]
    assert main([*start_args, "--follow", "--config", config]) == 0
    shown = capsys.readouterr().out
    job_id = re.search(r"batch job ([0-9a-f-]{36})", shown)
    assert job_id is not None, shown
    job = admin(federation, "GetBatch", spb.GetBatchRequest(job_id=job_id.group(1)))
    assert job.state == "done" and "done" in shown
    assert main(["score", "batch", "status", job.job_id, "--config", config]) == 0
    assert f"{job.scored:,}/{job.enterprises:,} enterprises" in capsys.readouterr().out
    listing = ["score", "batch", "results", job.job_id, "--csv", "--limit", "10000"]
    assert main([*listing, "--config", config]) == 0
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    stored = results(federation, job.job_id)
    assert sorted(r["uscc"] for r in printed) == sorted(stored)
    assert sorted(stored) == [u for u in universe if u[2:4] == region]
    for r in printed:
        assert abs(float(r["pd"]) - stored[r["uscc"]].pd) <= 5e-7
        assert r["grade"] == stored[r["uscc"]].grade


# --- batch featurisation and the ciphertext check, in-process ---------------------------------


def _spec(field: str, aggregate: str, **kw: Any) -> Any:
    from veil.catalog import load_catalog
    from veil.scoring.spec import Aggregate, FeatureSpec, Transform

    fld = load_catalog().field(field)
    return FeatureSpec(
        name=kw.pop("name", f"{field}_{aggregate}"),
        provider=fld.provider,
        field=field,
        dataset=fld.dataset_id,
        aggregate=Aggregate(aggregate),
        divide_by=kw.pop("divide_by", None),
        transform=Transform(
            prefix=kw.pop("prefix", None), log=kw.pop("log", False), clip=kw.pop("clip", None)
        ),
        categorical=kw.pop("categorical", False),
    )


def test_columnar_featurisation_equals_the_per_enterprise_path(federation: Any) -> None:
    """The provider's batch path (one raw read per dataset, numpy per feature) gives
    every enterprise what ``feature_value`` gives over ``ProviderStore.fetch`` (the
    same table entry; the same number to 1e-12)
    — every aggregate, ratio, log, clip, prefix, bins and categories, NULLs, booleans,
    enum codes, and an enterprise the provider does not hold."""
    from platform_node.models.demo import store_for
    from provider_node.scoring_batch import _load_values, chunk_positions
    from veil.catalog import load_catalog
    from veil.scoring.features import feature_value
    from veil.scoring.part import ModelPart, PartFeature

    linear = [
        _spec("samr_registered_capital", "value", log=True),
        _spec("samr_headcount", "latest", log=True, clip=(0.0, 5.0)),
        _spec("samr_contribution_paid", "sum", log=True),
        _spec("samr_shareholding_ratio", "max"),
        _spec("samr_shareholding_ratio", "min"),
        _spec("samr_shareholding_ratio", "mean", clip=(0.0, 0.6)),
        _spec("samr_pledged_amount", "count"),
        _spec("samr_pledged_amount", "exists"),
        _spec("samr_abnormal_listed", "value"),
        _spec("samr_total_liabilities", "latest", divide_by="samr_total_assets", clip=(0, 3)),
    ]
    tables = [
        PartFeature(
            _spec("samr_report_year", "latest"), linear=False, edges=(2023.0, 2024.0), table_size=3
        ),
        PartFeature(
            _spec("samr_pledge_status", "latest", categorical=True),
            linear=False,
            categories=("valid", "invalid"),
            table_size=3,
        ),
        PartFeature(
            _spec("samr_industry_code", "value", categorical=True, prefix=1),
            linear=False,
            categories=("C", "F", "I"),
            table_size=4,
        ),
        PartFeature(
            _spec("samr_contribution_paid", "sum", name="paid_bins"),
            linear=False,
            edges=(10.0, 100.0, 1000.0),
            table_size=4,
        ),
    ]
    features = tuple(PartFeature(s, linear=True) for s in linear) + tuple(tables)
    part = ModelPart("t", 1, "", "samr", ("samr",), "fail", (), features)
    catalog = load_catalog()
    store = store_for(federation.data, "samr", catalog)
    try:
        data = _load_values(store, part, catalog)
        usccs = sorted(read_labels(federation.data / "labels.csv"))[:150]
        usccs.append("91110000000000000X")  # no row at this provider
        pos = chunk_positions(data, usccs)
        assert pos[-1] == -1 and (pos[:-1] >= 0).sum() > 100
        for i, u in enumerate(usccs):
            rows = store.fetch(u, part.fields)
            for f in features:
                want = feature_value(f.spec, rows)
                name = f.spec.name
                if f.linear:
                    got = data.linear[name][pos[i]] if pos[i] >= 0 else data.defaults[name]
                    # exact but for sums of ≥ 3 values (numpy's order): an ulp or two
                    ok = got != got if want is None else abs(got - want) <= 1e-12 * abs(want)
                    assert ok, (u, name, got, want)
                else:
                    got = data.index[name][pos[i]] if pos[i] >= 0 else data.defaults[name]
                    assert got == (-1 if want is None else f.index(want)), (u, name, got, want)
    finally:
        store.close()


def test_read_columns_matches_iter_dataset(federation: Any) -> None:
    """The raw columnar read returns the rows ``iter_dataset`` streams (same values,
    each enterprise's rows in the unit's order) for every dataset of a unit with
    transforms (tax: enum codes, scaled money, formatted dates)."""
    from platform_node.models.demo import store_for
    from veil.catalog import load_catalog

    catalog = load_catalog()
    store = store_for(federation.data, "tax", catalog)
    try:
        for ds_id, tm in store.mapping.tables.items():
            fids = list(tm.columns)
            keys, columns = store.read_columns(ds_id, fids)
            got: dict[str, list[tuple[Any, ...]]] = {}
            assert keys.dtype.kind == "S"  # USCCs are ASCII: bytes
            for i, k in enumerate(keys.tolist()):
                got.setdefault(k.decode(), []).append(tuple(columns[f][i] for f in fids))
            want: dict[str, list[tuple[Any, ...]]] = {}
            for batch in store.iter_dataset(ds_id, fids, identity=True):
                for row in batch:
                    want.setdefault(row["uscc"], []).append(tuple(row[f] for f in fids))
            assert got == want, ds_id
            assert list(keys) == sorted(keys.tolist())
    finally:
        store.close()


def test_sums_near_a_bin_edge_are_exact() -> None:
    """numpy adds left to right, ``math.fsum`` exactly: 0.1 + 0.2 + 0.7 is
    0.9999999999999999 naively but 1.0 exactly; a bin edge at 1.0 must see 1.0."""
    import numpy as np

    from provider_node.scoring_batch import _table_indices
    from veil.scoring.features import DatasetRows, batch_values, feature_value
    from veil.scoring.part import PartFeature
    from veil.scoring.spec import Aggregate, FeatureSpec

    spec = FeatureSpec("s", "tax", "x", "ds", Aggregate.SUM)
    a, b = "91110000000000000A", "91110000000000000B"
    values = np.array([0.1, 0.2, 0.7, 2.0, None], dtype=object)
    rows = DatasetRows.of("ds", [a, a, a, b, b], {"x": values})
    assert np.add.reduceat(values.astype(float)[:3], [0])[0] < 1.0  # the naive sum
    f = PartFeature(spec, linear=False, edges=(1.0,), table_size=2)
    got = _table_indices(f, batch_values(spec, rows, f.edges))
    want = [f.index(feature_value(spec, {"ds": rows.rows(g)})) for g in range(2)]  # type: ignore[arg-type]
    assert got.tolist() == want == [1, 1]


def test_platform_rejects_a_ciphertext_of_the_wrong_shape() -> None:
    """A provider answer must sit at the unrescaled product scale on the full modulus;
    a rescaled (or otherwise shaped) ciphertext would not add up: rejected, named."""
    import tenseal as ts

    from veil.errors import InvalidArgument
    from veil.scoring.ckks import (
        RESULT_SCALE,
        SLOTS,
        check_result,
        load_public_context,
        new_secret_context,
        public_context_bytes,
    )

    secret = new_secret_context()
    public = load_public_context(public_context_bytes(secret))
    good = ts.ckks_vector(public, [0.0] * SLOTS, scale=RESULT_SCALE)
    check_result(ts.ckks_vector_from(secret, good.serialize()), "tax")
    weight = ts.ckks_vector(secret, [1.0] * SLOTS)  # secret context: auto-rescale on
    rescaled = weight * ([2.0] * SLOTS)
    short = ts.ckks_vector(public, [0.0] * 8, scale=RESULT_SCALE)
    for bad in (rescaled, weight, short):
        with pytest.raises(InvalidArgument, match=r"'tax'.*wrong shape"):
            check_result(ts.ckks_vector_from(secret, bad.serialize()), "tax")


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_read_columns_on_sqlite_and_postgresql(backend: str, tmp_path: Any) -> None:
    """The raw path compiles the query for the dialect (PostgreSQL: into the store's
    schema) and converts the driver's types (Decimal, date, bool) like SQLAlchemy does:
    every dataset of a unit with many-row tables and transforms equals ``iter_dataset``."""
    import uuid

    from sqlalchemy import text

    from tests.conftest import POSTGRES_URL
    from veil.catalog import load_catalog
    from veil.store import ProviderStore, load_mapping, make_engine
    from veil.synth import iter_population
    from veil.synth.datasets import build

    catalog = load_catalog()
    url, schema = f"sqlite:///{tmp_path / 'store.db'}", None
    engine = None
    if backend == "postgres":
        engine = make_engine(POSTGRES_URL)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # pragma: no cover - only where no server runs
            engine.dispose()
            pytest.skip(f"PostgreSQL not reachable: {exc}")
        url, schema = POSTGRES_URL, f"veil_test_{uuid.uuid4().hex[:12]}"
    pop = next(iter_population(300, 3))
    try:
        for unit in ("samr", "tax"):
            with ProviderStore(url, load_mapping(unit, catalog), catalog, schema=schema) as store:
                store.create_schema()
                for ds_id in store.mapping.tables:
                    store.write_columns(ds_id, build(ds_id, pop))
                for ds_id, tm in store.mapping.tables.items():
                    fids = list(tm.columns)
                    keys, columns = store.read_columns(ds_id, fids)
                    got: dict[str, list[tuple[Any, ...]]] = {}
                    for i, k in enumerate(keys.tolist()):
                        got.setdefault(k.decode(), []).append(tuple(columns[f][i] for f in fids))
                    want: dict[str, list[tuple[Any, ...]]] = {}
                    for batch in store.iter_dataset(ds_id, fids):
                        for row in batch:
                            want.setdefault(row["uscc"], []).append(tuple(row[f] for f in fids))
                    assert got == want, (unit, ds_id)
    finally:
        if engine is not None:
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            engine.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_results_digest_streams_the_stored_results(backend: str, tmp_path: Any) -> None:
    """The digest logged when a job finishes is read through the raw DBAPI cursor: it
    must equal SHA-256 of ``uscc,repr(pd),repr(score),grade`` lines in USCC order
    computed from ``BatchStore.results`` (SQLAlchemy), on SQLite and PostgreSQL, and
    cover only the job's own results."""
    import hashlib
    import uuid

    from sqlalchemy import insert, text

    from platform_node.batch import BatchStore, chunks
    from tests.conftest import POSTGRES_URL
    from veil.store import make_engine

    schema = f"veil_test_{uuid.uuid4().hex[:12]}"
    if backend == "postgres":
        admin_engine = make_engine(POSTGRES_URL)
        try:
            with admin_engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        except Exception as exc:  # pragma: no cover - only where no server runs
            admin_engine.dispose()
            pytest.skip(f"PostgreSQL not reachable: {exc}")
        engine = make_engine(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    else:
        engine = make_engine(f"sqlite:///{tmp_path / 'platform.db'}")
    try:
        store = BatchStore(engine)
        import numpy as np

        rng = np.random.default_rng(5)
        jobs: dict[str, list[tuple[str, float, float, str]]] = {}
        for job in ("job-a", "job-b"):
            rows = [
                (f"9111{i:013d}{job[-1].upper()}", float(p), float(s), g)
                for i, (p, s, g) in enumerate(
                    zip(
                        rng.random(700) ** 3,  # full-precision floats, some tiny
                        np.round(300 + 550 * rng.random(700), 1),
                        rng.choice(["AAA", "BB", "C"], 700),
                        strict=True,
                    )
                )
            ]
            rng.shuffle(rows)  # stored out of USCC order
            with engine.begin() as conn:
                conn.execute(
                    insert(chunks),
                    [{"job_id": job, "chunk": c, "usccs": "", "done": 0} for c in range(2)],
                )
            dicts = [
                {"job_id": job, "uscc": u, "pd": p, "score": s, "grade": g} for u, p, s, g in rows
            ]
            assert store.finish_chunks(job, [(0, dicts[:400]), (1, dicts[400:])]) == 700
            jobs[job] = rows
        for job, rows in jobs.items():
            stored, total = store.results(job, 0, 2**62)
            assert total == len(rows)
            h = hashlib.sha256()
            for r in stored:
                h.update(f"{r.uscc},{float(r.pd)!r},{float(r.score)!r},{r.grade}\n".encode())
            want = hashlib.sha256(
                "".join(f"{u},{p!r},{s!r},{g}\n" for u, p, s, g in sorted(rows)).encode()
            ).hexdigest()
            assert store.results_digest(job, fetch=97) == h.hexdigest() == want
        assert store.results_digest("no-such-job") == hashlib.sha256().hexdigest()
    finally:
        engine.dispose()
        if backend == "postgres":
            with admin_engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin_engine.dispose()


def test_dataset_rows_from_byte_keys_equal_those_from_text() -> None:
    """``read_columns`` hands its ASCII keys over as bytes; grouping them directly must
    give what the text path gives, including dropping a key longer than a USCC."""
    import numpy as np

    from veil.scoring.features import DatasetRows

    raw = [b"91110000000000000B", b"91110000000000000A9", b"short", b"91110000000000000A"]
    x = {"x": np.array([1, 2, 3, 4], dtype=object)}
    for keys in (np.array(raw), np.array(raw[::2])):
        as_bytes = DatasetRows.of("d", keys, x if len(keys) == 4 else {"x": x["x"][::2]})
        as_text = DatasetRows.of(
            "d", [k.decode() for k in keys], x if len(keys) == 4 else {"x": x["x"][::2]}
        )
        assert as_bytes.keys.dtype == as_text.keys.dtype == np.dtype("S18")
        assert as_bytes.keys.tolist() == as_text.keys.tolist()
        assert as_bytes.starts.tolist() == as_text.starts.tolist()
        assert as_bytes.columns["x"].tolist() == as_text.columns["x"].tolist()
    assert DatasetRows.of("d", np.array(raw), x).keys.tolist() == [
        b"91110000000000000A",
        b"91110000000000000B",
        b"short",
    ]


def test_counts_are_transformed_online_and_in_batch_alike() -> None:
    """``transform`` applies after every aggregate, ``count`` included: a count clipped
    to [0, 3] reads 3 for an enterprise with five rows, online and in batch, and the
    default of an enterprise without rows is the transformed empty count."""
    import numpy as np

    from veil.scoring.features import DatasetRows, batch_values, feature_value
    from veil.scoring.spec import Aggregate, FeatureSpec, Transform

    clipped = FeatureSpec(
        "c", "court", "x", "ds", Aggregate.COUNT, transform=Transform(clip=(0.0, 3.0))
    )
    logged = FeatureSpec("l", "court", "x", "ds", Aggregate.COUNT, transform=Transform(log=True))
    a, b = "91110000000000000A", "91110000000000000B"
    rows = DatasetRows.of("ds", [a] * 5 + [b], {"x": np.array([1] * 6, dtype=object)})
    for spec, want in ((clipped, [3.0, 1.0]), (logged, [math.log(5.0), 0.0])):
        online = [feature_value(spec, {"ds": rows.rows(g)}) for g in range(2)]  # type: ignore[arg-type]
        assert online == want
        assert batch_values(spec, rows).tolist() == want
    assert feature_value(clipped, {}) == 0.0  # no rows: count 0, clipped
    assert feature_value(logged, {}) is None  # log of 0: missing, as documented


def test_small_chunks_take_the_same_products_whatever_their_data(
    federation: Any, model: tuple[dict[str, Any], spb.ModelInfo], monkeypatch: Any
) -> None:
    """A chunk below ``batch_uniform_below`` is computed with one product per column of
    the model part: a chunk of one enterprise repeated and a chunk of varied ones cost
    the same number of products, no plaintext is all zeros (SEAL takes longer on one),
    and the sums equal those of the shortcut path within CKKS precision."""
    import numpy as np
    import tenseal as ts

    from platform_node.models.demo import store_for
    from provider_node.scoring_batch import BatchJob, _load_values, partial_vector
    from veil.catalog import load_catalog
    from veil.scoring.ckks import FLOOD_SIGMA, MASK_BOUND, SLOTS, new_secret_context
    from veil.scoring.part import model_part

    doc, _ = model
    spec = parse_model(dict(doc, version=1))
    ctx = new_secret_context()
    catalog = load_catalog()
    varied = sorted(read_labels(federation.data / "labels.csv"))[:150]
    varied.append("91110000000000000X")  # held by no provider
    same = [varied[0]] * len(varied)
    plaintexts: list[Any] = []
    real_plain_tensor = ts.plain_tensor

    def spy(values: Any, *args: Any, **kwargs: Any) -> Any:
        plaintexts.append(np.asarray(values))
        return real_plain_tensor(values, *args, **kwargs)

    monkeypatch.setattr(ts, "plain_tensor", spy)
    for unit in spec.providers:
        part = model_part(spec, unit)
        weights = {
            f.spec.name: [ts.ckks_vector(ctx, [w] * SLOTS) for w in f.weights()]
            for f in spec.features_of(unit)
        }
        job = BatchJob("t", part, ctx, weights, FLOOD_SIGMA, MASK_BOUND, SLOTS)
        store = store_for(federation.data, unit, catalog)
        try:
            job.values = _load_values(store, part, catalog)
        finally:
            store.close()
        columns = sum(2 if f.linear else f.table_size + 1 for f in part.features)
        counts = []
        for chunk in (varied, same):
            plaintexts.clear()
            uniform = partial_vector(job, chunk, uniform=True)
            counts.append(len(plaintexts))
            assert all(p.any() for p in plaintexts), unit
            shortcut = partial_vector(job, chunk)  # None: every product vanished
            assert uniform is not None
            got = np.asarray(uniform.decrypt()[: len(chunk)])
            want = np.zeros(len(chunk))
            if shortcut is not None:
                want = np.asarray(shortcut.decrypt()[: len(chunk)])
            assert np.max(np.abs(got - want)) < 1e-4, unit
        assert counts == [columns, columns], unit


def test_batch_uniform_below_setting() -> None:
    from provider_node.scoring import batch_uniform_below
    from provider_node.scoring_batch import UNIFORM_BELOW
    from veil.errors import ConfigError

    assert batch_uniform_below({}, "p.toml") == UNIFORM_BELOW
    assert batch_uniform_below({"batch_uniform_below": 4096}, "p.toml") == 4096
    assert batch_uniform_below({"batch_uniform_below": 0}, "p.toml") == 0
    for bad in (-1, 4097, True, "256", 1.5):
        with pytest.raises(ConfigError, match="batch_uniform_below"):
            batch_uniform_below({"batch_uniform_below": bad}, "p.toml")
