"""The model format, the registry and the demo model (issue 5, part 1)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from platform_node.models.demo import fit_demo_model
from platform_node.models.registry import ModelRegistry
from veil.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from veil.scoring.features import feature_value
from veil.scoring.plain import plain_logit
from veil.scoring.scale import ScoreScale, sigmoid
from veil.scoring.spec import parse_model
from veil.store import make_engine

BASE: dict[str, Any] = {
    "format": "veil-model/1",
    "model_id": "test-model",
    "kind": "scorecard",
    "intercept": -2.0,
    "features": [
        {
            "name": "arrears",
            "provider": "tax",
            "field": "tax_in_arrears",
            "encoding": {"type": "raw", "weight": 1.5},
            "missing": {"impute": 0},
        },
        {
            "name": "grade",
            "provider": "tax",
            "field": "tax_grade",
            "aggregate": "latest",
            "encoding": {
                "type": "woe",
                "categories": ["A", "B", "C"],
                "woe": [-1.0, 0.0, 1.0],
                "coefficient": 0.5,
                "other_woe": 2.0,
            },
            "missing": {"weight": 0.25},
        },
        {
            "name": "months",
            "provider": "tax",
            "field": "tax_consecutive_normal_months",
            "transform": {"clip": [0, 60]},
            "encoding": {"type": "binned", "edges": [12, 36], "weights": [0.4, 0.0, -0.5]},
            "missing": {"impute": 0},
        },
        {
            "name": "leverage",
            "provider": "samr",
            "field": "samr_total_liabilities",
            "aggregate": "latest",
            "divide_by": "samr_total_assets",
            "transform": {"clip": [0, 2]},
            "encoding": {"type": "raw", "weight": 1.2, "center": 0.6, "scale": 2.0},
            "missing": {"impute": 0.6},
        },
        {
            "name": "judgments",
            "provider": "court",
            "field": "court_judgment_case_no",
            "aggregate": "count",
            "encoding": {"type": "raw", "weight": 0.3},
        },
    ],
    "card": {"training_window": {"start": "2024-01-01", "end": "2024-12-31"}},
}


def doc(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out.update(changes)
    return out


def feature(i: int, **changes: Any) -> dict[str, Any]:
    out = doc()
    out["features"][i].update(changes)
    return out


# --- the format -----------------------------------------------------------------------


def test_parse_compiles_contribution_tables() -> None:
    m = parse_model(doc())
    assert m.providers == ("court", "samr", "tax")
    grade = m.features[1]
    assert grade.table == (-0.5, 0.0, 0.5, 1.0) and grade.missing == 0.25
    assert grade.contribution("B") == 0.0 and grade.contribution("D") == 1.0  # other
    months = m.features[2]
    assert [months.contribution(x) for x in (0, 12, 35.9, 36, 60, None)] == [
        0.4,
        0.0,
        0.0,
        -0.5,
        -0.5,
        0.4,  # imputed 0 → first bin
    ]
    lev = m.features[3]
    assert lev.linear and lev.slope == pytest.approx(0.6) and lev.offset == pytest.approx(-0.36)
    assert lev.missing == pytest.approx(0.36)  # slope · 0.6; the offset stays in base_logit
    assert m.base_logit == pytest.approx(-2.36)
    assert m.fields_of("samr") == ("samr_total_assets", "samr_total_liabilities")


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (doc(format="veil-model/0"), "format"),
        (doc(model_id="Bad_Id"), "model_id"),
        (doc(kind="tree"), "kind"),
        (doc(features=[]), "features"),
        (feature(0, provider="samr"), "held by provider 'tax'"),
        (feature(0, field="no_such_field"), "not a catalog field"),
        (feature(0, missing=None), "missing"),
        (feature(1, aggregate="value"), "aggregate"),
        (
            feature(2, encoding={"type": "binned", "edges": [36, 12], "weights": [1, 2, 3]}),
            "increasing",
        ),
        (feature(2, encoding={"type": "binned", "edges": [12], "weights": [1]}), "edges + 1"),
        (feature(4, missing={"impute": 0}), "never missing"),
        (feature(0, field="samr_legal_rep", provider="samr"), "not a model feature"),
        (feature(3, divide_by="tax_grade"), "divide_by"),
        (feature(0, encoding={"type": "raw", "weight": float("nan")}), "finite"),
        (doc(required_providers=["customs"]), "required_providers"),
        (doc(extra=1), "unknown key"),
    ],
)
def test_bad_documents_are_refused_naming_the_flaw(bad: dict[str, Any], needle: str) -> None:
    if bad["features"] and bad["features"][0].get("missing", 0) is None:
        del bad["features"][0]["missing"]
    with pytest.raises(InvalidArgument) as info:
        parse_model(bad)
    assert needle in info.value.message


def test_duplicate_feature_names_are_refused() -> None:
    d = doc()
    d["features"].append(copy.deepcopy(d["features"][0]))
    with pytest.raises(InvalidArgument, match="used twice"):
        parse_model(d)


def test_feature_values_follow_the_documented_missing_policy() -> None:
    m = parse_model(doc())
    lev, judgments, grade = m.features[3].spec, m.features[4].spec, m.features[1].spec
    rows = {
        "samr_annual_report": [
            {"samr_total_liabilities": 10.0, "samr_total_assets": 50.0},
            {"samr_total_liabilities": 90.0, "samr_total_assets": 30.0},  # latest
        ]
    }
    assert feature_value(lev, rows) == 2.0  # 3.0 clipped to 2
    assert feature_value(lev, {}) is None  # unknown to the provider
    zero = {"samr_annual_report": [{"samr_total_liabilities": 1.0, "samr_total_assets": 0}]}
    assert feature_value(lev, zero) is None  # denominator 0
    assert feature_value(judgments, {}) == 0.0  # count: never missing
    assert feature_value(grade, {"tax_credit_grade": [{"tax_grade": None}]}) is None


def test_plain_logit_of_an_enterprise_unknown_everywhere_uses_missing_contributions() -> None:
    m = parse_model(doc())
    expected = m.base_logit + 0.0 + 0.25 + 0.4 + 0.36 + 0.0
    assert plain_logit(m, {}) == pytest.approx(expected)


# --- the scale --------------------------------------------------------------------------


def test_scale_is_the_documented_scorecard() -> None:
    s = ScoreScale()
    at_base = s.apply(-math.log(50.0))  # odds good:bad 50 → 600 points
    assert at_base.score == 600.0 and at_base.pd == round(1 / 51, 6)
    doubled = s.apply(-math.log(100.0))
    assert doubled.score == 620.0
    assert s.apply(-20).score == 900.0 and s.apply(20).score == 300.0  # clipped
    assert s.apply(-7).grade == "AAA" and s.apply(3).grade == "C"
    assert sigmoid(-800) == 0.0 and sigmoid(800) == 1.0


def test_grade_follows_the_published_pd() -> None:
    s = ScoreScale()
    logit = math.log(0.03 / 0.97)  # PD 3 % exactly at the BBB bound after rounding
    assert s.apply(logit).pd == 0.03 and s.apply(logit).grade == "BBB"


def test_bad_scale_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        parse_model(doc(output={"grades": [{"grade": "A", "max_pd": 0.5}]}))
    with pytest.raises(InvalidArgument):
        parse_model(doc(output={"pd_decimals": 40}))


# --- the registry -------------------------------------------------------------------------


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(make_engine(f"sqlite:///{tmp_path / 'platform.db'}"))


def test_versions_are_assigned_and_never_overwritten(registry: ModelRegistry) -> None:
    r1 = registry.import_model(doc(), by="admin/alice")
    r2 = registry.import_model(json.dumps(doc()), by="admin/alice")
    assert (r1.version, r2.version) == (1, 2) and r1.state == "imported"
    assert r1.sha256 != r2.sha256  # the version is part of the document
    with pytest.raises(AlreadyExists):
        registry.import_model(doc(version=2), by="admin/alice")
    r5 = registry.import_model(doc(version=5), by="admin/alice")
    assert r5.version == 5 and registry.import_model(doc(), by="x").version == 6


def test_only_approved_versions_score_and_the_card_says_who(registry: ModelRegistry) -> None:
    r1 = registry.import_model(doc(), by="admin/alice")
    with pytest.raises(FailedPrecondition, match="no approved version"):
        registry.scorable("test-model")
    with pytest.raises(FailedPrecondition, match="not approved"):
        registry.scorable("test-model", 1)
    approved = registry.approve("test-model", 1, by="admin/bob")
    card = approved.card()
    assert card["approved"]["by"] == "admin/bob" and card["imported"]["by"] == "admin/alice"
    assert set(card["features_by_provider"]) == {"tax", "samr", "court"}
    assert card["training_window"] == {"start": "2024-01-01", "end": "2024-12-31"}
    assert registry.scorable("test-model").version == r1.version
    registry.retire("test-model", 1, by="admin/bob")
    with pytest.raises(FailedPrecondition):
        registry.scorable("test-model", 1)
    with pytest.raises(FailedPrecondition, match="retired"):
        registry.approve("test-model", 1, by="admin/bob")


def test_unknown_model_and_version(registry: ModelRegistry) -> None:
    with pytest.raises(NotFound, match="unknown model"):
        registry.scorable("nope")
    registry.import_model(doc(), by="a")
    with pytest.raises(NotFound, match="no version 9"):
        registry.get("test-model", 9)
    with pytest.raises(InvalidArgument):
        registry.import_model("{not json", by="a")


def test_registry_runs_on_postgres() -> None:
    from sqlalchemy import text

    from tests.conftest import POSTGRES_URL

    try:
        engine = make_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS scoring_model_installs, scoring_models"))
    except Exception as exc:  # pragma: no cover - the server is part of the machine
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    reg = ModelRegistry(engine)
    r = reg.import_model(doc(), by="admin/pg")
    reg.approve("test-model", r.version, by="admin/pg")
    reg.record_install("test-model", r.version, "tax", "k1")
    assert reg.installed("test-model", r.version, "k1") == {"tax"}
    assert reg.scorable("test-model").sha256 == r.sha256
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS scoring_model_installs, scoring_models"))


# --- the demo model -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from veil_cli.commands.data import generate_to_dir

    out = tmp_path_factory.mktemp("demo-model")
    generate_to_dir(out, enterprises=1500, seed=5, progress=False)
    return out


def test_demo_model_is_deterministic_valid_and_has_signal(data_dir: Path) -> None:
    a = fit_demo_model(data_dir)
    b = fit_demo_model(data_dir)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    m = parse_model(a)
    assert len(m.providers) == 7 and m.on_provider_unavailable == "impute_missing"
    assert a["card"]["metrics"]["auc_in_sample"] > 0.75
    kinds = {f["encoding"]["type"] for f in a["features"]}
    assert kinds == {"raw", "one_hot", "woe", "binned"}
