"""The synthetic population: determinism, validity, plausibility and real signal."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from veil.catalog import Cardinality, FieldType, load_catalog
from veil.store import IDENTITY_USCC
from veil.synth import (
    COEFFICIENTS,
    GenerationSummary,
    Population,
    generate_population,
    iter_population,
)
from veil.synth.datasets import BUILDERS, build
from veil.synth.writer import write_population
from veil.uscc import is_valid_uscc, validate_uscc
from veil_cli.commands.data import generate_to_dir, parse_urls

CATALOG = load_catalog()
N = 5000


@pytest.fixture(scope="module")
def pop() -> Population:
    return generate_population(N, 7)


def _dump(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _generate(out: Path, seed: int) -> GenerationSummary:
    return generate_to_dir(out, enterprises=1500, seed=seed, progress=False)


def test_same_seed_gives_identical_tables_and_labels(tmp_path: Path) -> None:
    a = _generate(tmp_path / "a", 7)
    b = _generate(tmp_path / "b", 7)
    _generate(tmp_path / "c", 8)
    assert set(a.units) == set(CATALOG.providers())
    for unit in a.units:
        dump_a = _dump(tmp_path / "a" / f"{unit}.db")
        assert dump_a == _dump(tmp_path / "b" / f"{unit}.db"), unit
        assert "INSERT INTO" in dump_a, unit
    labels = (tmp_path / "a" / "labels.csv").read_bytes()
    assert labels == (tmp_path / "b" / "labels.csv").read_bytes()
    assert labels != (tmp_path / "c" / "labels.csv").read_bytes()
    assert _dump(tmp_path / "a" / "samr.db") != _dump(tmp_path / "c" / "samr.db")
    assert a.units["tax"].rows == b.units["tax"].rows
    assert labels.startswith(b"uscc,default\n")
    assert a.labelled == len(labels.splitlines()) - 1
    for summary in a.units.values():
        for ds_id, count in summary.rows.items():
            assert count > 0, ds_id  # every dataset of the catalog gets rows


def test_population_does_not_depend_on_chunking() -> None:
    whole = next(iter_population(3000, 5, chunk_size=3000))
    again = next(iter_population(3000, 5, chunk_size=3000))
    for name, col in whole.cols.items():
        assert np.array_equal(col, again[name]), name


def test_every_generated_uscc_is_valid_and_unique(pop: Population) -> None:
    codes = pop["uscc"].tolist()
    for code in codes:
        validate_uscc(code)
    assert len(set(codes)) == N
    prefixes = {c[:2] for c in codes}
    assert {"91", "92", "93", "N2", "N3", "12", "52", "Y1"} <= prefixes
    assert sum(c.startswith("91") for c in codes) > 0.7 * N


def test_counterparty_codes_are_valid(pop: Population) -> None:
    checks = {
        "samr_branches": ["samr_branch_uscc"],
        "samr_equity_pledges": ["samr_pledgee_id_no"],
        "admin_licences": ["admin_lic_authority_uscc"],
        "re_mortgages": ["re_mortgagee_id"],
    }
    for ds_id, fields in checks.items():
        cols = build(ds_id, pop.take(np.arange(N)))
        for fid in fields:
            assert cols[fid] and all(is_valid_uscc(v) for v in cols[fid]), fid
    branches = build("samr_branches", pop)["samr_branch_uscc"]
    assert not set(branches) & set(pop["uscc"].tolist())
    assert len(set(branches)) == len(branches)


_PY_TYPES: dict[FieldType, tuple[type, ...]] = {
    FieldType.STRING: (str,),
    FieldType.CODE: (str,),
    FieldType.ENUM: (str,),
    FieldType.DATE: (dt.date,),
    FieldType.MONTH: (str,),
    FieldType.INTEGER: (int,),
    FieldType.DECIMAL: (float, int),
    FieldType.BOOLEAN: (bool,),
}


@pytest.mark.parametrize("ds_id", sorted(BUILDERS))
def test_rows_match_the_catalog(pop: Population, ds_id: str) -> None:
    ds = CATALOG.dataset(ds_id)
    cols = build(ds_id, pop)
    n = len(cols[IDENTITY_USCC])
    assert n > 0
    assert set(ds.field_ids) <= set(cols)
    if ds.cardinality is Cardinality.ONE:
        assert len(set(cols[IDENTITY_USCC])) == n
    for fid in ds.field_ids:
        fld = CATALOG.field(fid)
        values = [v for v in cols[fid] if v is not None]
        assert len(cols[fid]) == n
        assert all(isinstance(v, _PY_TYPES[fld.type]) for v in values), fid
        if fld.type is FieldType.ENUM:
            assert set(values) <= set(fld.values), fid
        if fld.type is FieldType.DATE and not fid.endswith(("_end", "_until")):
            assert all(v <= dt.date(2025, 6, 30) for v in values), fid
        if fld.type is FieldType.MONTH:
            assert all(len(v) == 7 and v[4] == "-" for v in values), fid


def _corr(a: Any, b: Any) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=float), np.asarray(b, dtype=float))[0, 1])


def test_correlations_have_the_documented_sign(pop: Population) -> None:
    h = pop["health"]
    assert _corr(h, np.log(pop["revenue"] / pop["headcount"])) > 0.1
    assert _corr(h, pop["liabilities"] / pop["assets"]) < -0.2
    assert _corr(h, pop["net_profit"] / pop["revenue"]) > 0.3
    assert _corr(h, pop["tax_arrears"]) < -0.05
    assert _corr(h, pop["si_arrears"]) < -0.05
    assert _corr(h, pop["n_judgments"]) < -0.05
    assert _corr(h, pop["elec_avg3"] / pop["elec_avg12"]) > 0.3
    assert _corr(pop["tax_arrears"], pop["si_arrears"]) > 0.05
    assert _corr(np.log(pop["headcount"]), np.log(pop["elec_avg12"] + 1)) > 0.3
    # the outcome moves with the observable risk signals
    y = pop["default"][pop["labelled"]]
    for flag in ("tax_arrears", "dishonest", "abnormal", "si_arrears"):
        x = pop[flag][pop["labelled"]]
        assert y[x].mean() > 2 * y[~x].mean(), flag


def test_default_rate_within_the_documented_band(pop: Population) -> None:
    y = pop["default"][pop["labelled"]]
    assert 0.05 <= y.mean() <= 0.10
    assert not pop["default"][~pop["labelled"]].any()
    kinds = set(np.unique(pop["uscc"][pop["labelled"]].astype("<U2")).tolist())
    assert kinds == {"91", "92", "93"}


def _auc(y: Any, score: Any) -> float:
    """Mann-Whitney AUC with average ranks for ties."""
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    y = np.asarray(y, dtype=bool)
    n1, n0 = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_ground_truth_model_has_real_signal(pop: Population) -> None:
    lab = pop["labelled"]
    y, logit = pop["default"][lab], pop["default_logit"][lab]
    assert _auc(y, logit) > 0.75
    # a single observable provider field already carries signal on its own
    assert _auc(y, pop["tax_arrears"][lab].astype(float)) > 0.55
    assert set(COEFFICIENTS) >= {"tax_in_arrears", "dishonest_debtor", "leverage_minus_0_6"}


def test_annual_report_matches_latent_financials(pop: Population) -> None:
    cols = build("samr_annual_report", pop)
    latest = {
        u: a
        for u, y, a in zip(
            cols[IDENTITY_USCC], cols["samr_report_year"], cols["samr_total_assets"], strict=True
        )
        if y == 2024
    }
    index = {u: i for i, u in enumerate(pop["uscc"].tolist())}
    for uscc, assets in list(latest.items())[:200]:
        assert assets == round(float(pop["assets"][index[uscc]]) / 1e4, 2)


def test_cli_url_parsing() -> None:
    assert parse_urls(["tax=sqlite:///x.db"]) == {"tax": "sqlite:///x.db"}
    with pytest.raises(Exception, match="UNIT=URL"):
        parse_urls(["tax"])
    with pytest.raises(Exception, match="twice"):
        parse_urls(["tax=a", "tax=b"])


def test_cli_generate_subset(tmp_path: Path) -> None:
    from veil_cli.main import main

    code = main(
        [
            "data",
            "generate",
            "--out",
            str(tmp_path),
            "--enterprises",
            "300",
            "--seed",
            "3",
            "--units",
            "tax,utilities",
            "--no-progress",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "tax.db", "utilities.db"]
    assert main(["data", "generate", "--out", str(tmp_path), "--units", "bank"]) == 1


def test_summary_names_a_units_file_in_the_output_dir_and_any_other_url_whole(
    tmp_path: Path,
) -> None:
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere' / 'tax.db'}"
    (tmp_path / "elsewhere").mkdir()
    summary = write_population(
        tmp_path / "out", 50, 3, units=["tax", "utilities"], urls={"tax": elsewhere}, progress=False
    )
    lines = {line.split()[0]: line for line in summary.lines()[1:3]}
    assert lines["utilities"].endswith("rows  utilities.db")
    assert lines["tax"].endswith(f"rows  {elsewhere}")
