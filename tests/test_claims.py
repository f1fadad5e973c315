"""The verification claim language: parsing, validation, three-valued evaluation, the grid
and the plan (veil/claims.py, veil/claims_grid.py, platform_node/verification_plan.py)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from platform_node.verification_plan import plan
from veil.catalog import load_catalog
from veil.claims import (
    MAX_DEPTH,
    MAX_NODES,
    All,
    Atom,
    ClaimCache,
    Truth,
    canonical_json,
    claim_fields,
    claim_from_json,
    claim_providers,
    claim_sha256,
    claim_to_json,
    evaluate,
    parse_claim,
    t_all,
    t_any,
    t_at_least,
    t_not,
)
from veil.claims_grid import Grid, snap
from veil.composite import Protocol
from veil.errors import InvalidArgument

CATALOG = load_catalog()
T, F, N = Truth.TRUE, Truth.FALSE, Truth.NO_RECORD

NO_ARREARS = {"field": "tax_in_arrears", "op": "eq", "value": False}
VAT_GE = {"field": "tax_vat_paid_last_year", "op": "ge", "value": "1000000", "unit": "CNY"}
PROPERTY = {
    "exists": "re_properties",
    "where": [
        {"field": "re_certificate_no", "op": "eq", "value": "津(2021)天津不动产权第7446068号"},
        {"field": "re_area", "op": "within", "value": "1728", "relative": "0.01", "unit": "m2"},
    ],
}

ROWS: dict[str, list[dict[str, Any]]] = {
    "tax_arrears": [{"tax_in_arrears": False, "tax_arrears_amount": 0.0}],
    "tax_payments": [{"tax_vat_paid_last_year": 1219576.19, "tax_consecutive_normal_months": 16}],
    "tax_credit_grade": [
        {"tax_grade_year": 2023, "tax_grade": "B"},
        {"tax_grade_year": 2024, "tax_grade": "A"},
    ],
    "re_properties": [
        {"re_certificate_no": "津(2021)天津不动产权第7446068号", "re_area": 1728.03},
        {"re_certificate_no": "津(2019)天津不动产权第0000001号", "re_area": None},
    ],
    "si_pension": [{"si_pension_headcount_band": "b3"}],
    "housing_fund_contributions": [],
}


def parse(obj: Any) -> Any:
    return parse_claim(obj, CATALOG)


def refused(obj: Any) -> str:
    with pytest.raises(InvalidArgument) as info:
        snap(parse(obj), Grid(), CATALOG)
    return info.value.message


# --- three-valued logic ------------------------------------------------------------------


def test_kleene_tables() -> None:
    assert t_not(T) is F and t_not(F) is T and t_not(N) is N
    assert t_all([T, T]) is T and t_all([T, N]) is N and t_all([N, F]) is F
    assert t_any([F, F]) is F and t_any([F, N]) is N and t_any([N, T]) is T
    assert t_at_least(2, true=2, no_record=0) is T
    assert t_at_least(2, true=1, no_record=1) is N
    assert t_at_least(2, true=1, no_record=0) is F


# --- parsing and validation: every refusal names the problem -------------------------------


@pytest.mark.parametrize(
    ("claim", "needle"),
    [
        ({}, "non-empty JSON object"),
        ({"all": []}, "non-empty list"),
        ({"at_least": 3, "of": [NO_ARREARS]}, "from 1 to 1"),
        (
            {"field": "no_such_field", "op": "eq", "value": 1},
            "unknown catalog field 'no_such_field'",
        ),
        ({"field": "samr_legal_rep", "op": "eq", "value": "x"}, "does not allow verification"),
        ({"field": "tax_in_arrears", "op": "eq", "value": "no"}, "boolean"),
        ({"field": "tax_in_arrears", "op": "ge", "value": True}, "does not apply to boolean"),
        ({"field": "tax_vat_paid_last_year", "op": "ge", "value": "1"}, "must say unit 'CNY'"),
        (
            {"field": "tax_vat_paid_last_year", "op": "ge", "value": "1", "unit": "CNY_10k"},
            "not 'CNY_10k'",
        ),
        (
            {"field": "tax_vat_paid_last_year", "op": "ge", "value": "lots", "unit": "CNY"},
            "not a number",
        ),
        ({"field": "tax_grade", "op": "eq", "value": "A"}, "many rows per enterprise"),
        (
            {
                "exists": "tax_credit_grade",
                "where": [{"field": "tax_grade", "op": "eq", "value": "Z"}],
            },
            "not a value of 'tax_grade'",
        ),
        (
            {
                "exists": "re_properties",
                "where": [{"field": "tax_in_arrears", "op": "eq", "value": True}],
            },
            "not in dataset 're_properties'",
        ),
        (
            {"field": "tax_last_normal_payment_date", "op": "ge", "value": "2025-13-01"},
            "YYYY-MM-DD",
        ),
        (
            {"field": "tax_in_arrears", "op": "eq", "value": False, "colour": 1},
            "unknown key 'colour'",
        ),
        (
            {"sum": ["tax_vat_paid_last_year", "samr_registered_capital"], "op": "ge", "value": 1},
            "different units",
        ),
        (
            {
                "field": "tax_vat_paid_last_year",
                "op": "between",
                "low": "5",
                "high": "1",
                "unit": "CNY",
            },
            "low is above high",
        ),
    ],
)
def test_bad_claims_are_refused_naming_the_problem(claim: Any, needle: str) -> None:
    assert needle in refused(claim)


def test_refusal_names_where_in_the_claim() -> None:
    message = refused({"all": [NO_ARREARS, {"field": "nope", "op": "eq", "value": 1}]})
    assert message.startswith("claim all[1].field:")


def test_over_deep_and_oversized_claims_are_refused() -> None:
    deep: Any = NO_ARREARS
    for _ in range(MAX_DEPTH):
        deep = {"not": deep}
    assert f"deeper than {MAX_DEPTH}" in refused(deep)
    wide = {"any": [NO_ARREARS] * (MAX_NODES + 1)}
    assert f"at most {MAX_NODES}" in refused(wide)
    with pytest.raises(InvalidArgument, match="longer than"):
        claim_from_json(json.dumps({"any": [NO_ARREARS] * 400}), CATALOG)
    with pytest.raises(InvalidArgument, match="empty"):
        claim_from_json("  ", CATALOG)
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        claim_from_json('{"field": NaN}', CATALOG)


def test_json_round_trip_and_canonical_hash() -> None:
    for obj in (NO_ARREARS, VAT_GE, PROPERTY, {"at_least": 1, "of": [NO_ARREARS, VAT_GE]}):
        claim = parse(obj)
        again = parse(json.loads(canonical_json(claim)))
        assert again == claim
        assert claim_sha256(again) == claim_sha256(claim)
    # the same claim written differently hashes the same
    a = parse({"field": "tax_vat_paid_last_year", "op": "ge", "value": 1000000, "unit": "CNY"})
    b = parse({"unit": "CNY", "value": "1000000.00", "op": "ge", "field": "tax_vat_paid_last_year"})
    assert claim_sha256(a) == claim_sha256(b)


def test_fields_and_providers() -> None:
    claim = parse({"all": [NO_ARREARS, PROPERTY, {"exists": "re_mortgages"}]})
    assert claim_fields(claim, CATALOG) == sorted(
        ["tax_in_arrears", "re_certificate_no", "re_area", "re_mortgagee"]
    )
    assert claim_providers(claim, CATALOG) == {"tax", "real_estate"}


# --- evaluation ------------------------------------------------------------------------------


def test_evaluation_on_records() -> None:
    def ev(obj: Any) -> Truth:
        return evaluate(parse(obj), ROWS, CATALOG)

    assert ev(NO_ARREARS) is T
    assert ev(VAT_GE) is T
    assert ev({**VAT_GE, "value": "2000000"}) is F
    assert ev(PROPERTY) is T
    assert (
        ev(
            {
                "exists": "tax_credit_grade",
                "where": [
                    {"field": "tax_grade_year", "op": "eq", "value": 2024},
                    {"field": "tax_grade", "op": "in", "values": ["A", "B"]},
                ],
            }
        )
        is T
    )
    assert ev({"field": "si_pension_headcount_band", "op": "ge", "value": "b3"}) is T
    assert ev({"field": "si_pension_headcount_band", "op": "gt", "value": "b3"}) is F


def test_no_record_is_never_false() -> None:
    def ev(obj: Any) -> Truth:
        return evaluate(parse(obj), ROWS, CATALOG)

    hf = {"field": "hf_consecutive_normal_months", "op": "ge", "value": 6, "unit": "month"}
    assert ev(hf) is N  # no housing-fund row
    assert ev({"not": hf}) is N
    assert ev({"all": [NO_ARREARS, hf]}) is N
    assert ev({"any": [NO_ARREARS, hf]}) is T
    assert ev({"exists": "re_mortgages"}) is N  # no rows at all
    # a row whose value is missing is unknown, not false
    missing_area = {
        "exists": "re_properties",
        "where": [
            {"field": "re_certificate_no", "op": "eq", "value": "津(2019)天津不动产权第0000001号"},
            {"field": "re_area", "op": "ge", "value": 10, "unit": "m2"},
        ],
    }
    assert ev(missing_area) is N
    assert (
        ev(
            {
                "sum": ["tax_vat_paid_last_year", "hf_total_contribution_last_year"],
                "op": "ge",
                "value": 1,
                "unit": "CNY",
            }
        )
        is N
    )


# --- the grid ------------------------------------------------------------------------------


def snapped(obj: Any, grid: Grid | None = None) -> dict[str, Any]:
    return claim_to_json(snap(parse(obj), grid or Grid(), CATALOG))


def test_snapping_rules() -> None:
    assert snapped({**VAT_GE, "value": "1234567"})["value"] == "1230000"
    assert snapped({**VAT_GE, "op": "le", "value": "1235000"}) == {
        "field": "tax_vat_paid_last_year",
        "op": "lt",
        "value": "1240000",
        "unit": "CNY",
    }
    # integers: <= 12 means < 13, > 12 means >= 13
    months = {"field": "tax_consecutive_normal_months", "unit": "month"}
    assert snapped({**months, "op": "le", "value": 12}) == {**months, "op": "lt", "value": 13}
    assert snapped({**months, "op": "gt", "value": 12}) == {**months, "op": "ge", "value": 13}
    assert snapped({**months, "op": "eq", "value": 12}) == {**months, "op": "eq", "value": 12}
    # a decimal equality asks for its grid cell
    assert snapped({**VAT_GE, "op": "eq", "value": "1219576.19"}) == {
        "field": "tax_vat_paid_last_year",
        "op": "range",
        "low": "1210000",
        "high": "1220000",
        "unit": "CNY",
    }
    # ±1 % of 1728 m² = [1710.72, 1745.28] → [1711, 1745)
    where = snapped(PROPERTY)["where"]["all"][1]
    assert (where["op"], where["low"], where["high"]) == ("range", "1711", "1745")
    # too fine for the grid
    assert "narrower than the verification grid" in refused(
        {
            "field": "tax_vat_paid_last_year",
            "op": "between",
            "low": "1230001",
            "high": "1230002",
            "unit": "CNY",
        }
    )
    # a published coarser grid
    coarse = Grid.from_config({"CNY": 100000})
    assert snapped({**VAT_GE, "value": "1234567"}, coarse)["value"] == "1200000"
    # dates: a 30-day grid
    monthly = Grid.from_config({"date": 30})
    d = snapped(
        {"field": "tax_last_normal_payment_date", "op": "ge", "value": "2025-06-03"}, monthly
    )
    assert dt.date.fromisoformat(d["value"]).toordinal() % 30 == 0


def test_bad_grid_configuration_is_refused() -> None:
    for raw in ({"CNY": 0}, {"CNY": "x"}, {"furlongs": 1}, {"date": "0.5"}):
        with pytest.raises(InvalidArgument):
            Grid.from_config(raw)


STEP = Decimal(10000)
amounts = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    op=st.sampled_from(["ge", "gt", "le", "lt", "eq", "between", "within"]),
    a=amounts,
    b=amounts,
    tol=st.decimals(min_value=0, max_value=10**6, places=2),
    x=amounts,
    y=amounts,
)
def test_snapped_answers_depend_only_on_the_grid_cell(
    op: str, a: Decimal, b: Decimal, tol: Decimal, x: Decimal, y: Decimal
) -> None:
    """The reconstruction bound: two values in one grid cell get the same answer to every
    snapped question, so no sequence of questions separates them."""
    obj: dict[str, Any] = {"field": "tax_vat_paid_last_year", "op": op, "unit": "CNY"}
    if op == "between":
        obj |= {"low": str(min(a, b)), "high": str(max(a, b))}
    elif op == "within":
        obj |= {"value": str(a), "tolerance": str(tol)}
    else:
        obj["value"] = str(a)
    try:
        claim = snap(parse(obj), Grid(), CATALOG)
    except InvalidArgument:
        return  # finer than the grid: refused, nothing answered
    cell = (x // STEP) * STEP
    other = cell + (y % STEP)  # another value in x's cell
    rows_x = {"tax_payments": [{"tax_vat_paid_last_year": float(x)}]}
    rows_o = {"tax_payments": [{"tax_vat_paid_last_year": float(other)}]}
    assert evaluate(claim, rows_x, CATALOG) == evaluate(claim, rows_o, CATALOG)


# --- the plan --------------------------------------------------------------------------------


def test_single_provider_claims_go_to_one_provider() -> None:
    p = plan(parse({"all": [NO_ARREARS, VAT_GE]}), CATALOG)
    assert p.protocol is Protocol.SINGLE and p.providers == ("tax",)
    assert p.fields["tax"] == ["tax_in_arrears", "tax_vat_paid_last_year"]


def test_cross_provider_plans() -> None:
    si = {"field": "si_in_arrears", "op": "eq", "value": False}
    water = {"field": "util_water_in_arrears", "op": "eq", "value": False}
    p = plan(parse({"all": [NO_ARREARS, {"all": [si, water]}, VAT_GE]}), CATALOG)
    assert p.protocol is Protocol.ALL and p.total == 4
    assert p.providers == ("social_insurance", "tax", "utilities")
    assert len(p.conditions["tax"]) == 2
    # not(all) → any(not …), not(at_least k of m) → at_least m-k+1 of not …
    p = plan(parse({"not": {"all": [NO_ARREARS, si]}}), CATALOG)
    assert p.protocol is Protocol.ANY
    p = plan(parse({"not": {"at_least": 2, "of": [NO_ARREARS, si, water]}}), CATALOG)
    assert (p.protocol, p.k, p.total) == (Protocol.COUNT, 2, 3)
    p = plan(
        parse(
            {
                "not": {
                    "sum": ["tax_vat_paid_last_year", "hf_total_contribution_last_year"],
                    "op": "ge",
                    "value": 5,
                    "unit": "CNY",
                }
            }
        ),
        CATALOG,
    )
    assert (p.protocol, p.sum_op) == (Protocol.SUM, "lt")
    assert p.sum_fields == {
        "tax": ["tax_vat_paid_last_year"],
        "housing_fund": ["hf_total_contribution_last_year"],
    }


def test_nested_cross_provider_combination_is_refused() -> None:
    si = {"field": "si_in_arrears", "op": "eq", "value": False}
    with pytest.raises(InvalidArgument, match="reads fields of social_insurance and tax"):
        plan(parse({"all": [VAT_GE, {"any": [NO_ARREARS, si]}, PROPERTY]}), CATALOG)


def test_plan_is_equivalent_to_the_claim() -> None:
    """De Morgan in three-valued logic: the plan's combination equals the claim's value."""
    si = {"field": "si_in_arrears", "op": "eq", "value": False}
    hf = {"field": "hf_consecutive_normal_months", "op": "ge", "value": 6, "unit": "month"}
    claim = parse({"not": {"at_least": 2, "of": [NO_ARREARS, si, hf]}})
    rows = dict(ROWS) | {"si_arrears": [{"si_in_arrears": True}]}
    p = plan(claim, CATALOG)
    parts = [evaluate(c, rows, CATALOG) for u in p.providers for c in p.conditions[u]]
    combined = t_at_least(p.k, parts.count(T), parts.count(N))
    assert combined == evaluate(claim, rows, CATALOG)


def test_atom_dataclass_is_plain_data() -> None:
    claim = parse(NO_ARREARS)
    assert claim == Atom("tax_in_arrears", "eq", value=False)
    assert isinstance(parse({"all": [NO_ARREARS]}), All)


def test_claim_cache_parses_a_text_once_and_never_remembers_a_refusal() -> None:
    cache = ClaimCache(CATALOG, size=2)
    text = json.dumps(VAT_GE)
    first = cache.parse(text)
    assert first == claim_from_json(text, CATALOG)
    assert cache.parse(text) is first  # remembered: the same (immutable) claim
    bad = json.dumps({"field": "tax_vat_paid_last_year", "op": "ge", "value": "x"})
    for _ in range(2):  # refused each time, never remembered
        with pytest.raises(InvalidArgument):
            cache.parse(bad)
    cache.parse(json.dumps(NO_ARREARS))
    cache.parse(json.dumps(PROPERTY))  # past its size the cache starts over
    assert cache.parse(text) is not first and cache.parse(text) == first
    with pytest.raises(InvalidArgument):
        ClaimCache(CATALOG, size=0)
