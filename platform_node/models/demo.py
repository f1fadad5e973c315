"""The demo credit model: a plain logistic regression fitted on the generated population.

A stand-in for joint training (联合建模, the training issue) so that ``veil demo`` and the
tests have a real model to score with: it is fitted *centrally* on the synthetic provider
stores that ``veil data generate`` wrote, which is only acceptable because the data are
synthetic.  Production models come out of federated training and enter the registry the
same way (a ``veil-model/1`` document).

The features follow the observable structure of the synthetic world
(``veil.synth.outcome``): arrears flags, court records, the tax credit grade (one-hot),
tax payment regularity (WOE-binned, the scorecard way), leverage and margin from the
latest annual report, headcount, housing-fund participation, the electricity trend and
property count (binned).  Fitting is deterministic: IRLS (Newton) with a small L2 penalty
on the weights, from zero, to convergence; the same data give byte-identical JSON.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.catalog import Catalog, load_catalog
from veil.errors import InvalidArgument
from veil.scoring.features import feature_value
from veil.scoring.spec import FORMAT, Aggregate, FeatureSpec, Transform
from veil.store import IDENTITY_USCC, ProviderStore, load_mapping

F64 = npt.NDArray[np.float64]
DEMO_MODEL_ID = "sme-default"
L2 = 1e-3
MAX_ITER = 60
TOL = 1e-10


@dataclass(frozen=True)
class Template:
    """One feature of the demo model before fitting."""

    name: str
    provider: str
    field: str
    encoding: str  # raw | one_hot | woe | binned
    aggregate: str | None = None
    divide_by: str | None = None
    log: bool = False
    clip: tuple[float, float] | None = None
    impute: float = 0.0
    center: float = 0.0
    categories: tuple[str, ...] = ()
    reference: str = ""
    edges: tuple[float, ...] = ()
    extra: dict[str, Any] = dataclass_field(default_factory=dict)

    def spec(self, catalog: Catalog) -> FeatureSpec:
        fld = catalog.field(self.field)
        return FeatureSpec(
            name=self.name,
            provider=self.provider,
            field=self.field,
            dataset=fld.dataset_id,
            aggregate=Aggregate(self.aggregate or "value"),
            divide_by=self.divide_by,
            transform=Transform(log=self.log, clip=self.clip),
            categorical=self.encoding == "one_hot",
        )

    @property
    def never_missing(self) -> bool:
        return self.aggregate in ("count", "exists")


TEMPLATE: tuple[Template, ...] = (
    Template("tax_in_arrears", "tax", "tax_in_arrears", "raw"),
    Template(
        "tax_grade",
        "tax",
        "tax_grade",
        "one_hot",
        aggregate="latest",
        categories=("A", "B", "M", "C", "D"),
        reference="B",
    ),
    Template(
        "tax_normal_months",
        "tax",
        "tax_consecutive_normal_months",
        "woe",
        edges=(6.0, 12.0, 24.0, 36.0, 60.0),
    ),
    Template("si_in_arrears", "social_insurance", "si_in_arrears", "raw"),
    Template("court_dishonest", "court", "court_dishonest_performance", "raw", aggregate="exists"),
    Template("court_terminated", "court", "court_terminated_case_no", "raw", aggregate="exists"),
    Template(
        "court_judgments", "court", "court_judgment_case_no", "raw", aggregate="count", clip=(0, 3)
    ),
    Template("samr_abnormal", "samr", "samr_abnormal_listed", "raw"),
    Template(
        "samr_leverage",
        "samr",
        "samr_total_liabilities",
        "raw",
        aggregate="latest",
        divide_by="samr_total_assets",
        clip=(0.0, 2.0),
        impute=0.6,
        center=0.6,
    ),
    Template(
        "samr_net_margin",
        "samr",
        "samr_net_profit",
        "raw",
        aggregate="latest",
        divide_by="samr_total_revenue",
        clip=(-0.5, 0.5),
    ),
    Template("samr_log_headcount", "samr", "samr_headcount", "raw", aggregate="latest", log=True),
    Template("hf_participant", "housing_fund", "hf_avg_monthly_contributors", "raw", "exists"),
    Template("elec_in_arrears", "utilities", "util_elec_in_arrears", "raw"),
    Template(
        "elec_trend",
        "utilities",
        "util_elec_avg_3m",
        "raw",
        divide_by="util_elec_avg_12m",
        log=True,
        clip=(-2.0, 2.0),
    ),
    Template(
        "re_properties",
        "real_estate",
        "re_area",
        "binned",
        aggregate="count",
        edges=(1.0, 2.0, 4.0),
    ),
)
DEMO_PROVIDERS = tuple(sorted({t.provider for t in TEMPLATE}))


def read_labels(path: Path) -> dict[str, int]:
    with path.open(newline="") as fh:
        return {row["uscc"]: int(row["default"]) for row in csv.DictReader(fh)}


def store_for(data_dir: Path, unit: str, catalog: Catalog) -> ProviderStore:
    return ProviderStore(
        f"sqlite:///{data_dir / (unit + '.db')}", load_mapping(unit, catalog), catalog
    )


def rows_by_enterprise(
    store: ProviderStore, fields: Sequence[str], catalog: Catalog, wanted: set[str]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """uscc → dataset → rows (the unit's order), streamed dataset by dataset."""
    by_ds: dict[str, list[str]] = {}
    for fid in fields:
        by_ds.setdefault(catalog.field(fid).dataset_id, []).append(fid)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ds_id, fids in by_ds.items():
        for batch in store.iter_dataset(ds_id, sorted(set(fids)), batch_size=5000):
            for row in batch:
                uscc = row.pop(IDENTITY_USCC)
                row.pop("enterprise_name", None)
                if uscc in wanted:
                    out.setdefault(uscc, {}).setdefault(ds_id, []).append(row)
    return out


def feature_table(
    data_dir: Path, templates: Sequence[Template], usccs: Sequence[str], catalog: Catalog
) -> dict[str, list[float | str | None]]:
    """Feature values (before encoding) for ``usccs``, read from the provider stores."""
    wanted = set(usccs)
    values: dict[str, list[float | str | None]] = {}
    for unit in sorted({t.provider for t in templates}):
        mine = [t for t in templates if t.provider == unit]
        fields = sorted({f for t in mine for f in (t.field, t.divide_by) if f})
        store = store_for(data_dir, unit, catalog)
        try:
            rows = rows_by_enterprise(store, fields, catalog, wanted)
        finally:
            store.close()
        for t in mine:
            spec = t.spec(catalog)
            values[t.name] = [feature_value(spec, rows.get(u, {})) for u in usccs]
    return values


def _woe(bins: npt.NDArray[np.int64], y: F64, n_bins: int) -> tuple[F64, float]:
    """WOE per bin = ln((bad_i/bad) / (good_i/good)), +0.5 smoothing; bin -1 = missing."""
    bad, good = y.sum(), (1 - y).sum()
    woe = np.zeros(n_bins)
    for b in range(n_bins):
        m = bins == b
        woe[b] = math.log(((y[m].sum() + 0.5) / bad) / (((1 - y)[m].sum() + 0.5) / good))
    m = bins == -1
    missing = (
        math.log(((y[m].sum() + 0.5) / bad) / (((1 - y)[m].sum() + 0.5) / good)) if m.any() else 0.0
    )
    return woe, missing


@dataclass
class _Column:
    template: Template
    columns: list[F64]
    names: list[str]
    woe: F64 | None = None
    woe_missing: float = 0.0
    has_missing: bool = False


def _design(template: Template, raw: list[float | str | None], y: F64) -> _Column:
    n = len(raw)
    missing = np.array([v is None for v in raw])
    col = _Column(template, [], [], has_missing=bool(missing.any()))
    if template.encoding == "raw":
        x = np.array([template.impute if v is None else float(v) for v in raw])
        col.columns, col.names = [x - template.center], [template.name]
    elif template.encoding == "one_hot":
        for cat in template.categories:
            if cat != template.reference:
                col.columns.append(np.array([1.0 if v == cat else 0.0 for v in raw]))
                col.names.append(f"{template.name}={cat}")
        if col.has_missing:
            col.columns.append(missing.astype(float))
            col.names.append(f"{template.name}=<missing>")
    else:
        edges = np.array(template.edges)
        vals = np.array([np.nan if v is None else float(v) for v in raw])
        bins = np.where(missing, -1, np.searchsorted(edges, np.nan_to_num(vals), side="right"))
        if template.encoding == "woe":
            col.woe, col.woe_missing = _woe(bins, y, len(edges) + 1)
            x = np.where(bins >= 0, col.woe[np.maximum(bins, 0)], col.woe_missing)
            col.columns, col.names = [x], [template.name]
        else:  # binned: one-hot of bins 1..k, bin 0 the reference
            for b in range(1, len(edges) + 1):
                col.columns.append((bins == b).astype(float))
                col.names.append(f"{template.name}#bin{b}")
            if col.has_missing:
                col.columns.append(missing.astype(float))
                col.names.append(f"{template.name}#missing")
    assert all(len(c) == n for c in col.columns)
    return col


def fit_logistic(x: F64, y: F64, l2: float = L2) -> tuple[float, F64]:
    """IRLS for logistic regression with an L2 penalty on the weights (not the intercept)."""
    n, k = x.shape
    a = np.hstack([np.ones((n, 1)), x])
    beta = np.zeros(k + 1)
    penalty = np.full(k + 1, l2 * n)
    penalty[0] = 0.0
    for _ in range(MAX_ITER):
        z = a @ beta
        p = 1.0 / (1.0 + np.exp(-z))
        w = np.maximum(p * (1.0 - p), 1e-12)
        grad = a.T @ (y - p) - penalty * beta
        hess = (a * w[:, None]).T @ a + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta = beta + step
        if float(np.max(np.abs(step))) < TOL:
            break
    return float(beta[0]), beta[1:]


def auc_ks(score: F64, y: F64) -> tuple[float, float]:
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return float("nan"), float("nan")
    auc = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    desc = np.argsort(-score, kind="stable")
    tpr = np.cumsum(y[desc]) / n_pos
    fpr = np.cumsum(1 - y[desc]) / n_neg
    return float(auc), float(np.max(np.abs(tpr - fpr)))


def _r(x: float) -> float:
    return float(f"{x:.12g}")


def _feature_json(col: _Column, weights: Iterable[float]) -> dict[str, Any]:
    t = col.template
    w = list(weights)
    out: dict[str, Any] = {"name": t.name, "provider": t.provider, "field": t.field}
    if t.aggregate:
        out["aggregate"] = t.aggregate
    if t.divide_by:
        out["divide_by"] = t.divide_by
    transform: dict[str, Any] = {}
    if t.log:
        transform["log"] = True
    if t.clip:
        transform["clip"] = list(t.clip)
    if transform:
        out["transform"] = transform
    if t.encoding == "raw":
        out["encoding"] = {"type": "raw", "weight": _r(w[0])}
        if t.center:
            out["encoding"]["center"] = t.center
        if not t.never_missing:
            out["missing"] = {"impute": t.impute}
    elif t.encoding == "one_hot":
        it = iter(w)
        table = [0.0 if c == t.reference else _r(next(it)) for c in t.categories]
        out["encoding"] = {
            "type": "one_hot",
            "categories": list(t.categories),
            "weights": table,
            "other": 0.0,
        }
        out["missing"] = {"weight": _r(next(it)) if col.has_missing else 0.0}
    elif t.encoding == "woe":
        assert col.woe is not None
        out["encoding"] = {
            "type": "woe",
            "edges": list(t.edges),
            "woe": [_r(v) for v in col.woe],
            "coefficient": _r(w[0]),
        }
        out["missing"] = {"weight": _r(w[0] * col.woe_missing)}
    else:
        table = [0.0] + [_r(v) for v in w[: len(t.edges)]]
        out["encoding"] = {"type": "binned", "edges": list(t.edges), "weights": table}
        if not t.never_missing:
            out["missing"] = {"weight": _r(w[-1]) if col.has_missing else 0.0}
    return out


def fit_demo_model(
    data_dir: str | Path,
    *,
    model_id: str = DEMO_MODEL_ID,
    templates: Sequence[Template] = TEMPLATE,
    units: Sequence[str] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """Fit the demo model on ``data_dir`` (``veil data generate`` output) → a document."""
    data_dir = Path(data_dir)
    catalog = load_catalog()
    if units is not None:
        templates = [t for t in templates if t.provider in units]
    missing_stores = sorted(
        {t.provider for t in templates if not (data_dir / f"{t.provider}.db").exists()}
    )
    if missing_stores:
        raise InvalidArgument(f"no generated store for {', '.join(missing_stores)} in {data_dir}")
    labels = read_labels(data_dir / "labels.csv")
    usccs = sorted(labels)
    if len(usccs) < 50:
        raise InvalidArgument("the demo model needs at least 50 labelled enterprises")
    y = np.array([float(labels[u]) for u in usccs])
    values = feature_table(data_dir, templates, usccs, catalog)
    cols = [_design(t, values[t.name], y) for t in templates]
    x = np.column_stack([c for col in cols for c in col.columns])
    intercept, beta = fit_logistic(x, y)
    auc, ks = auc_ks(x @ beta + intercept, y)
    features, i = [], 0
    base = intercept
    for col in cols:
        k = len(col.columns)
        weights = beta[i : i + k]
        i += k
        features.append(_feature_json(col, weights))
    return {
        "format": FORMAT,
        "model_id": model_id,
        "kind": "scorecard",
        "description": description
        or "SME probability of default over seven providers (demo; fitted on synthetic data)",
        "intercept": _r(base),
        "features": features,
        "on_provider_unavailable": "impute_missing",
        "required_providers": ["samr", "tax"],
        "card": {
            "title": "SME default model (demo)",
            "training_window": {"start": "2022-01-01", "end": "2025-06-30"},
            "training_data": (
                f"synthetic population in {data_dir.name}: {len(usccs)} labelled "
                f"enterprises, {int(y.sum())} defaults (veil data generate)"
            ),
            "metrics": {
                "auc_in_sample": round(auc, 6),
                "ks_in_sample": round(ks, 6),
                "default_rate": round(float(y.mean()), 6),
                "enterprises": len(usccs),
            },
            "trained_by": "veil model fit-demo: central IRLS fit, a stand-in for joint training",
        },
    }


def enterprise_rows(
    data_dir: Path, units: Iterable[str], fields_by_unit: Mapping[str, Sequence[str]], uscc: str
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """One enterprise's rows at each provider, read as the provider node reads them."""
    catalog = load_catalog()
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for unit in units:
        store = store_for(data_dir, unit, catalog)
        try:
            out[unit] = store.fetch(uscc, fields_by_unit[unit])
        finally:
            store.close()
    return out
