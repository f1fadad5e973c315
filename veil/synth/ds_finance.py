"""Rows of the tax, housing fund, social insurance and utilities datasets."""

from __future__ import annotations

import numpy as np

from veil.catalog import load_catalog
from veil.synth import vocab
from veil.synth.population import AS_OF64, Population
from veil.synth.rows import Cols, days, ident, lst, rng_for, to_date, years

GRADE_YEARS = (2022, 2023, 2024)


def tax_credit_grade(pop: Population) -> Cols:
    """One row per rating year the enterprise existed in; the latest equals its current grade.

    Enterprises founded in 2025 have a single row for 2025 with grade M (newly established).
    """
    rng = rng_for(pop, "tax_credit_grade")
    fy = years(pop["founded"])
    idx_parts: list[np.ndarray] = []
    year_parts: list[np.ndarray] = []
    grade_parts: list[np.ndarray] = []
    for year in GRADE_YEARS:
        rows = np.flatnonzero(fy <= year)
        score = pop["tax_grade_score"][rows] + rng.normal(0, 0.4, len(rows))
        grade = np.where(score > 0.85, "A", np.where(score > -1.3, "B", "C"))
        grade = np.where(score < -2.1, "D", grade)
        grade = np.where(fy[rows] == year, "M", grade)
        if year == GRADE_YEARS[-1]:
            grade = pop["tax_grade"][rows]
        idx_parts.append(rows)
        year_parts.append(np.full(len(rows), year))
        grade_parts.append(grade)
    new = np.flatnonzero(fy > GRADE_YEARS[-1])
    idx_parts.append(new)
    year_parts.append(fy[new])
    grade_parts.append(pop["tax_grade"][new])
    owner = np.concatenate(idx_parts)
    order = np.argsort(owner, kind="stable")
    return ident(pop, owner[order]) | {
        "tax_grade_year": lst(np.concatenate(year_parts)[order]),
        "tax_grade": lst(np.concatenate(grade_parts)[order]),
    }


def _everyone(pop: Population) -> np.ndarray:
    return np.arange(pop.n)


def tax_abnormal(pop: Population) -> Cols:
    rows = _everyone(pop)
    return ident(pop, rows) | {"tax_abnormal_taxpayer": lst(pop["tax_abnormal"])}


def tax_arrears(pop: Population) -> Cols:
    rng = rng_for(pop, "tax_arrears")
    rows = _everyone(pop)
    arrears = pop["tax_arrears"]
    unpaid_vat = pop["vat_due"] - pop["vat_paid"]
    unpaid_cit = pop["cit_due"] - pop["cit_paid"]
    minor = vocab.pick(
        rng, np.array(["城市维护建设税", "房产税", "城镇土地使用税", "印花税"]), pop.n
    )
    kind = np.where(
        (unpaid_vat == 0) & (unpaid_cit == 0),
        minor,
        np.where(unpaid_vat >= unpaid_cit, "增值税", "企业所得税"),
    )
    return ident(pop, rows) | {
        "tax_in_arrears": lst(arrears),
        "tax_arrears_amount": lst(pop["tax_arrears_amount"]),
        "tax_arrears_tax_type": lst(kind, arrears),
    }


def tax_payments(pop: Population) -> Cols:
    rows = _everyone(pop)
    return ident(pop, rows) | {
        "tax_vat_due_last_year": lst(pop["vat_due"]),
        "tax_vat_paid_last_year": lst(pop["vat_paid"]),
        "tax_cit_due_last_year": lst(pop["cit_due"]),
        "tax_cit_paid_last_year": lst(pop["cit_paid"]),
        "tax_consecutive_normal_months": lst(pop["tax_normal_months"]),
        "tax_last_normal_payment_date": to_date(pop["tax_last_normal"]),
    }


def housing_fund_contributions(pop: Population) -> Cols:
    rows = np.flatnonzero(pop["hf"])
    return ident(pop, rows) | {
        "hf_avg_monthly_contributors": lst(pop["hf_contributors"][rows]),
        "hf_total_contribution_last_year": lst(pop["hf_total"][rows]),
        "hf_consecutive_normal_months": lst(pop["hf_normal_months"][rows]),
        "hf_last_normal_payment_date": to_date(pop["hf_last_normal"][rows]),
    }


def _band(values: np.ndarray, band_id: str) -> np.ndarray:
    bands = load_catalog().bands[band_id]
    pos = np.searchsorted(np.array(bands.lower_bounds), values, side="right") - 1
    return np.array(bands.labels)[np.clip(pos, 0, len(bands.labels) - 1)]


def si_pension(pop: Population) -> Cols:
    rows = np.flatnonzero(pop["si_insured"] > 0)
    month = np.datetime_as_string(pop["si_last_month"][rows], unit="M")
    return ident(pop, rows) | {
        "si_pension_headcount_band": lst(_band(pop["si_insured"][rows], "si_headcount")),
        "si_pension_contribution_band": lst(_band(pop["si_contribution"][rows], "si_contribution")),
        "si_pension_last_normal_month": lst(month),
    }


def si_arrears(pop: Population) -> Cols:
    rows = np.flatnonzero(pop["si_insured"] > 0)
    return ident(pop, rows) | {"si_in_arrears": lst(pop["si_arrears"][rows])}


def _payment_details(
    rng: np.random.Generator, avg: np.ndarray, price: float, arrears: np.ndarray
) -> list[str]:
    """Itemised monthly bills of the last six months: ``YYYY-MM:amount:status;...``."""
    months = [f"2025-{m:02d}" for m in range(1, 7)]
    amounts = np.round(avg[:, None] * price * rng.uniform(0.8, 1.2, (len(avg), 6)), 2)
    out = []
    for amt, owing in zip(amounts.tolist(), arrears.tolist(), strict=True):
        status = ["已缴"] * 5 + (["欠费"] if owing else ["已缴"])
        out.append(
            ";".join(f"{m}:{a:.2f}:{s}" for m, a, s in zip(months, amt, status, strict=True))
        )
    return out


def _account_no(rng: np.random.Generator, regions: np.ndarray, width: int) -> list[str]:
    seq = rng.integers(0, 10**width, len(regions)).tolist()
    return [f"{r[:4]}{s:0{width}d}" for r, s in zip(regions.tolist(), seq, strict=True)]


def util_water(pop: Population) -> Cols:
    rng = rng_for(pop, "util_water")
    rows = np.flatnonzero(pop["has_water"])
    m = len(rows)
    holder = np.where(rng.random(m) < 0.9, pop["name"][rows], pop["legal_rep"][rows])
    arrears = pop["water_arrears"][rows]
    return ident(pop, rows) | {
        "util_water_account_name": lst(holder),
        "util_water_account_no": _account_no(rng, pop["region"][rows], 8),
        "util_water_payment_details": _payment_details(rng, pop["water_avg6"][rows], 5.2, arrears),
        "util_water_avg_3m": lst(pop["water_avg3"][rows]),
        "util_water_avg_6m": lst(pop["water_avg6"][rows]),
        "util_water_in_arrears": lst(arrears),
    }


def util_electricity(pop: Population) -> Cols:
    rng = rng_for(pop, "util_electricity")
    rows = np.flatnonzero(pop["has_elec"])
    m = len(rows)
    industry, size = pop["industry"][rows], pop["size"][rows]
    heavy = np.isin(industry, ["B", "C", "D"])
    use = np.where(
        heavy & (size == 2),
        "large_industrial",
        np.where(industry == "A", "agricultural", "general_industrial_commercial"),
    )
    use = np.where(rng.random(m) < 0.02, "other", use)
    volt = np.where(
        use == "large_industrial",
        np.array(["10kV", "35kV", "110kV"])[rng.choice(3, m, p=[0.6, 0.3, 0.1])],
        np.where(size == 0, np.where(rng.random(m) < 0.5, "0.22kV", "0.38kV"), "10kV"),
    )
    h = pop["health"][rows]
    arrears = pop["elec_arrears"][rows]
    risk = np.where(arrears | (h + rng.normal(0, 0.5, m) < -1.6), "high", "low")
    risk = np.where((risk == "low") & (h + rng.normal(0, 0.5, m) < -0.6), "medium", risk)
    rt = vocab.region_text()
    ridx = pop["region_idx"][rows]
    opened = np.minimum(pop["founded"][rows] + days(rng.integers(0, 120, m)), AS_OF64)
    return ident(pop, rows) | {
        "util_elec_account_no": _account_no(rng, pop["region"][rows], 6),
        "util_elec_opening_date": to_date(opened),
        "util_elec_use_type": lst(use),
        "util_elec_province": lst(rt.province[ridx]),
        "util_elec_city": lst(np.where(rt.city[ridx] != "", rt.city[ridx], rt.county[ridx])),
        "util_elec_voltage_level": lst(volt),
        "util_elec_risk_grade": lst(risk),
        "util_elec_avg_3m": lst(pop["elec_avg3"][rows]),
        "util_elec_avg_6m": lst(pop["elec_avg6"][rows]),
        "util_elec_avg_12m": lst(pop["elec_avg12"][rows]),
        "util_elec_in_arrears": lst(arrears),
    }


def util_gas(pop: Population) -> Cols:
    rng = rng_for(pop, "util_gas")
    rows = np.flatnonzero(pop["has_gas"])
    arrears = pop["gas_arrears"][rows]
    return ident(pop, rows) | {
        "util_gas_account_name": lst(pop["name"][rows]),
        "util_gas_account_no": _account_no(rng, pop["region"][rows], 8),
        "util_gas_payment_details": _payment_details(rng, pop["gas_avg6"][rows], 3.9, arrears),
        "util_gas_avg_3m": lst(pop["gas_avg3"][rows]),
        "util_gas_avg_6m": lst(pop["gas_avg6"][rows]),
        "util_gas_in_arrears": lst(arrears),
    }


BUILDERS = {
    "tax_credit_grade": tax_credit_grade,
    "tax_abnormal": tax_abnormal,
    "tax_arrears": tax_arrears,
    "tax_payments": tax_payments,
    "housing_fund_contributions": housing_fund_contributions,
    "si_pension": si_pension,
    "si_arrears": si_arrears,
    "util_water": util_water,
    "util_electricity": util_electricity,
    "util_gas": util_gas,
}
