"""The latent enterprise population: one row per enterprise, columnar numpy arrays.

The generative story (documented in ``docs/synthetic-data.md``):

1. *Identity.* Kind (company 91, individual business 92, farmers' cooperative 93, rural
   collective economic organisations N2/N3, public institution 12, private non-enterprise
   unit 52, other Y1), registering region (GB/T 2260, provinces weighted by their share of
   market entities), industry section (GB/T 4754, distribution per kind), size class
   (micro/small/medium, MIIT-like bands), founding date, registered capital.
2. *Latent financial health* ``h ~ N(0, 1)``, never stored anywhere.  Every observable
   signal moves with ``h``: revenue, margin and leverage; tax, social insurance and
   housing-fund compliance; utility arrears and usage trend; court and regulatory events.
3. *Observables* derived from ``h`` plus independent noise (so no single field reveals it).

The loan-default outcome is drawn afterwards from the ground-truth logistic model in
:mod:`veil.synth.outcome`, over the observable fields only.

Chunking: enterprises are generated in chunks of :data:`CHUNK` with one random stream per
(seed, chunk, purpose), so a population depends only on ``(n, seed)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from veil import refdata
from veil.synth import vocab
from veil.synth.ids import LETTER_SPACE, NUMERIC_SPACE, AffineCode, id_card_numbers, uscc_batch

__all__ = [
    "AS_OF",
    "CHUNK",
    "KINDS",
    "Population",
    "PopulationParams",
    "iter_population",
    "stream",
]

AS_OF = dt.date(2025, 6, 30)
"""The synthetic world's "today": every date is on or before it, so output is reproducible."""
AS_OF64 = np.datetime64(AS_OF.isoformat(), "D")
CHUNK = 50_000

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Kind:
    code: int
    dept: str
    org_type: str
    share: float
    name_en: str


KINDS: tuple[Kind, ...] = (
    Kind(0, "9", "1", 0.800, "company"),
    Kind(1, "9", "2", 0.120, "individual business"),
    Kind(2, "9", "3", 0.030, "farmers' cooperative"),
    Kind(3, "N", "2", 0.015, "village collective economic organisation"),
    Kind(4, "N", "3", 0.005, "township collective economic organisation"),
    Kind(5, "1", "2", 0.010, "public institution"),
    Kind(6, "5", "2", 0.010, "private non-enterprise unit"),
    Kind(7, "Y", "1", 0.010, "other organisation"),
)
COMPANY, INDIVIDUAL, COOP, N_VILLAGE, N_TOWN, PUBLIC, NONPROFIT, OTHER = range(8)
SAMR_KINDS = (COMPANY, INDIVIDUAL, COOP)
SIZE_NAMES = ("micro", "small", "medium")

_SECTIONS = [i.code for i in refdata.industry_sections()]
_INDUSTRY_MIX: dict[int, dict[str, float]] = {
    COMPANY: {
        "F": 28, "L": 12, "C": 12, "M": 7, "I": 7, "E": 6, "O": 4, "H": 4, "G": 4, "K": 3,
        "A": 3, "R": 2, "N": 1, "D": 1, "B": 0.5, "Q": 1, "P": 1, "J": 0.5,
    },
    INDIVIDUAL: {"F": 55, "H": 20, "O": 15, "C": 3, "G": 4, "R": 2, "A": 1},
    COOP: {"A": 92, "F": 5, "O": 3},
    N_VILLAGE: {"A": 70, "L": 20, "K": 10},
    N_TOWN: {"A": 50, "L": 30, "K": 20},
    PUBLIC: {"P": 40, "Q": 30, "M": 15, "N": 10, "R": 5},
    NONPROFIT: {"P": 50, "Q": 30, "O": 10, "R": 10},
    OTHER: {"S": 60, "O": 40},
}  # fmt: skip
_SIZE_MIX: dict[int, tuple[float, float, float]] = {
    COMPANY: (0.78, 0.18, 0.04),
    INDIVIDUAL: (1.0, 0.0, 0.0),
    COOP: (0.85, 0.15, 0.0),
    N_VILLAGE: (0.6, 0.4, 0.0),
    N_TOWN: (0.3, 0.6, 0.1),
    PUBLIC: (0.2, 0.5, 0.3),
    NONPROFIT: (0.6, 0.4, 0.0),
    OTHER: (1.0, 0.0, 0.0),
}
# Monthly revenue per head (CNY) and asset/revenue ratio by section (illustrative).
_REV_PER_HEAD = {"C": 60e3, "F": 100e3, "K": 180e3, "I": 50e3, "H": 18e3, "O": 14e3,
                 "A": 20e3, "E": 45e3, "G": 40e3, "J": 120e3, "D": 150e3, "B": 120e3}  # fmt: skip
_ASSET_RATIO = {"K": 3.0, "C": 1.0, "F": 0.5, "I": 0.8, "D": 2.5, "B": 2.0, "J": 4.0}
_ELEC_PER_HEAD = {"C": 3000.0, "B": 5000.0, "D": 4000.0, "H": 800.0, "A": 600.0, "F": 300.0}
_HEADCOUNT_BAND = {0: (1, 19), 1: (20, 299), 2: (300, 999)}
_WAGE_BASE = 5500.0  # monthly contribution base, CNY (illustrative national average)


def stream(seed: int, chunk: int, purpose: int) -> np.random.Generator:
    """The random stream of one (seed, chunk, purpose): independent of generation order."""
    return np.random.Generator(np.random.PCG64([seed, chunk, purpose]))


def sigmoid(x: F64 | float) -> Any:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class PopulationParams:
    """Seed-level constants: the affine codes that make identifiers unique."""

    seed: int
    numeric_code: AffineCode
    letter_code: AffineCode

    @classmethod
    def from_seed(cls, seed: int) -> PopulationParams:
        rng = np.random.Generator(np.random.PCG64(seed))
        return cls(seed, AffineCode(rng, NUMERIC_SPACE), AffineCode(rng, LETTER_SPACE))


@dataclass
class Population:
    """Columnar enterprise attributes; ``cols[name]`` is an array of length ``n``.

    ``offset`` is the global index of the first row (chunks of a larger population).
    """

    n: int
    offset: int
    chunk: int
    seed: int
    cols: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.cols[name]

    def __setitem__(self, name: str, value: np.ndarray[Any, Any]) -> None:
        if len(value) != self.n:
            raise ValueError(f"column {name} has length {len(value)}, expected {self.n}")
        self.cols[name] = value

    def take(self, mask: B | I64) -> Population:
        """The sub-population selected by a boolean mask or index array."""
        sub = {k: v[mask] for k, v in self.cols.items()}
        n = len(next(iter(sub.values()))) if sub else 0
        return Population(n, self.offset, self.chunk, self.seed, sub)

    @staticmethod
    def concat(parts: list[Population]) -> Population:
        """One population of several chunks.  Row builders applied to it draw from a stream
        of its own (chunk id 10^6 + number of parts), not the per-chunk streams."""
        if not parts:
            raise ValueError("nothing to concatenate")
        if len(parts) == 1:
            return parts[0]
        cols = {k: np.concatenate([p.cols[k] for p in parts]) for k in parts[0].cols}
        chunk = 1_000_000 + len(parts)
        return Population(sum(p.n for p in parts), parts[0].offset, chunk, parts[0].seed, cols)


def _choice(rng: np.random.Generator, options: list[str], weights: list[float], n: int) -> Any:
    p = np.asarray(weights, dtype=float)
    return np.asarray(options)[rng.choice(len(options), size=n, p=p / p.sum())]


def _by(keys: np.ndarray[Any, Any], table: dict[str, float], default: float) -> F64:
    out = np.full(len(keys), default)
    for k, v in table.items():
        out[keys == k] = v
    return out


def _months_between(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> I64:
    am = a.astype("datetime64[M]").astype(np.int64)
    bm = b.astype("datetime64[M]").astype(np.int64)
    return np.asarray(bm - am, dtype=np.int64)


def generate_chunk(params: PopulationParams, chunk: int, n: int, offset: int) -> Population:
    """Generate ``n`` enterprises with global indices ``offset .. offset + n - 1``."""
    rng = stream(params.seed, chunk, 0)
    pop = Population(n, offset, chunk, params.seed)
    idx = np.arange(offset, offset + n, dtype=np.int64)
    pop["idx"] = idx

    # --- identity -------------------------------------------------------------------------
    shares = np.array([k.share for k in KINDS])
    kind = rng.choice(len(KINDS), size=n, p=shares / shares.sum())
    pop["kind"] = kind
    rt = vocab.region_text()
    ridx = rng.choice(len(rt.codes), size=n, p=rt.province_weight)
    pop["region_idx"] = ridx
    region = rt.codes[ridx]
    pop["region"] = region

    industry = np.empty(n, dtype="<U1")
    size = np.zeros(n, dtype=np.int64)
    for k, mix in _INDUSTRY_MIX.items():
        sel = kind == k
        m = int(sel.sum())
        if m:
            industry[sel] = _choice(rng, list(mix), list(mix.values()), m)
            size[sel] = rng.choice(3, size=m, p=np.array(_SIZE_MIX[k]))
    pop["industry"] = industry
    divisions = {
        s: [d.code for d in refdata.industries("division") if d.section == s] for s in _SECTIONS
    }
    division = np.empty(n, dtype="<U2")
    for s, divs in divisions.items():
        sel = industry == s
        if sel.any():
            division[sel] = vocab.pick(rng, divs, int(sel.sum()))
    pop["division"] = division
    pop["size"] = size

    age_years = np.clip(rng.lognormal(1.7, 0.8, n), 0.05, 40.0)
    age_years = np.where(kind == COOP, np.minimum(age_years, 17.9), age_years)  # law of 2007
    founded = AS_OF64 - (age_years * 365.25).astype("timedelta64[D]")
    pop["founded"] = founded
    age_months = _months_between(founded, np.full(n, AS_OF64))
    pop["age_months"] = age_months

    depts = np.array([k.dept for k in KINDS])[kind]
    types = np.array([k.org_type for k in KINDS])[kind]
    old_style = (founded < np.datetime64("2015-10-01")) & np.isin(
        kind, [COMPANY, COOP, PUBLIC, NONPROFIT]
    )
    prefix = np.where(
        old_style, "", np.where(depts == "5", "MJ", np.where(depts == "1", "MB", "MA"))
    )
    number = np.where(old_style, params.numeric_code(idx), params.letter_code(idx))
    pop["uscc"] = uscc_batch(depts, types, region, prefix, number)

    # --- latent health --------------------------------------------------------------------
    h = rng.standard_normal(n) * 0.95 + 0.15 * (np.log(age_years) - 1.5)
    pop["health"] = h

    # --- scale and financials (CNY, last financial year) ------------------------------------
    lo = np.array([_HEADCOUNT_BAND[s][0] for s in range(3)])[size]
    hi = np.array([_HEADCOUNT_BAND[s][1] for s in range(3)])[size]
    u = sigmoid(0.6 * h + rng.normal(0, 1.0, n))
    headcount = np.round(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo)))).astype(np.int64)
    headcount = np.where(kind == INDIVIDUAL, rng.integers(1, 9, n), headcount)
    pop["headcount"] = headcount

    rev_head = _by(industry, _REV_PER_HEAD, 35e3) * 12
    revenue = headcount * rev_head * np.exp(0.30 * h + rng.normal(0, 0.45, n))
    revenue = np.where(np.isin(kind, [PUBLIC, OTHER]), revenue * 0.3, revenue)
    pop["revenue"] = np.round(revenue, 2)
    assets = revenue * _by(industry, _ASSET_RATIO, 0.8) * np.exp(rng.normal(0, 0.4, n))
    leverage = 1.25 * sigmoid(0.25 - 0.9 * h + rng.normal(0, 0.6, n))
    liabilities = assets * leverage
    pop["assets"] = np.round(assets, 2)
    pop["liabilities"] = np.round(liabilities, 2)
    pop["equity"] = np.round(assets - liabilities, 2)
    margin = 0.03 + 0.045 * h + rng.normal(0, 0.04, n)
    profit = revenue * margin
    cit_rate = np.where(size == 2, 0.25, 0.05)
    taxable = np.isin(kind, [COMPANY, COOP, N_TOWN, N_VILLAGE])
    cit_due = np.where(taxable, np.maximum(profit, 0) * cit_rate, 0.0)
    vat_rate = np.where(size == 0, 0.01, rng.uniform(0.02, 0.05, n))
    vat_due = np.where(np.isin(kind, [PUBLIC, NONPROFIT, OTHER, COOP]), 0.0, revenue * vat_rate)
    pop["total_profit"] = np.round(profit, 2)
    pop["net_profit"] = np.round(profit - cit_due, 2)

    # --- tax compliance -----------------------------------------------------------------------
    tax_abnormal = rng.random(n) < sigmoid(-5.6 - 1.5 * h)
    tax_arrears = tax_abnormal | (rng.random(n) < sigmoid(-3.4 - 1.3 * h))
    unpaid_vat = np.where(tax_arrears, rng.uniform(0.05, 0.5, n), 0.0)
    unpaid_cit = np.where(tax_arrears, rng.uniform(0.0, 0.5, n), 0.0)
    vat_paid = vat_due * (1 - unpaid_vat)
    cit_paid = cit_due * (1 - unpaid_cit)
    arrears_amount = (vat_due - vat_paid) + (cit_due - cit_paid)
    arrears_amount = np.where(
        tax_arrears, np.maximum(arrears_amount, rng.uniform(500, 20000, n)), 0.0
    )
    pop["vat_due"], pop["vat_paid"] = np.round(vat_due, 2), np.round(vat_paid, 2)
    pop["cit_due"], pop["cit_paid"] = np.round(cit_due, 2), np.round(cit_paid, 2)
    pop["tax_arrears"] = tax_arrears
    pop["tax_abnormal"] = tax_abnormal
    pop["tax_arrears_amount"] = np.round(arrears_amount, 2)
    pop["tax_total"] = np.round(vat_paid * 1.12 + cit_paid, 2)  # + surcharges on VAT
    bad_tax = tax_arrears | tax_abnormal
    normal_months = np.minimum(
        age_months, np.floor(np.exp(3.0 + 0.4 * h + rng.normal(0, 0.6, n))).astype(np.int64)
    )
    normal_months = np.where(bad_tax, rng.integers(0, 7, n), np.maximum(normal_months, 0))
    pop["tax_normal_months"] = normal_months
    lag_months = np.where(bad_tax, 1 + rng.geometric(0.3, n), 0)
    last_pay = (
        np.datetime64("2025-06-01")
        - lag_months.astype("timedelta64[M]").astype("timedelta64[D]") * 30
        + rng.integers(0, 15, n).astype("timedelta64[D]")
    )
    pop["tax_last_normal"] = np.maximum(last_pay, founded)
    grade_score = h + rng.normal(0, 0.5, n) - 1.0 * tax_arrears
    grade = np.where(grade_score > 0.85, "A", np.where(grade_score > -1.3, "B", "C"))
    grade = np.where(grade_score < -2.1, "D", grade)
    grade = np.where(tax_abnormal, "D", grade)
    grade = np.where(age_months < 12, "M", grade)
    pop["tax_grade"] = grade
    pop["tax_grade_score"] = grade_score

    # --- social insurance and housing fund ----------------------------------------------------
    cover = sigmoid(1.0 + 0.9 * h + rng.normal(0, 0.5, n) - 1.5 * (kind == INDIVIDUAL))
    insured = np.round(headcount * cover).astype(np.int64)
    pop["si_insured"] = insured
    pop["si_contribution"] = np.round(insured * _WAGE_BASE * 0.16, 2)
    si_arrears = (insured > 0) & (rng.random(n) < sigmoid(-3.3 - 1.3 * h + 0.8 * tax_arrears))
    pop["si_arrears"] = si_arrears
    si_lag = np.where(si_arrears, 1 + rng.geometric(0.35, n), 0)
    pop["si_last_month"] = np.datetime64("2025-06", "M") - si_lag.astype("timedelta64[M]")
    hf_p = sigmoid(
        -0.9 + 0.9 * h + 0.9 * size + 3.0 * (kind == PUBLIC) - 2.0 * (kind == INDIVIDUAL)
    )
    hf = (insured > 0) & (rng.random(n) < hf_p)
    pop["hf"] = hf
    contributors = np.where(hf, np.maximum(1, np.round(insured * rng.uniform(0.5, 1.0, n))), 0)
    pop["hf_contributors"] = contributors.astype(np.int64)
    hf_rate = rng.choice([0.05, 0.08, 0.10, 0.12], size=n)
    pop["hf_total"] = np.round(contributors * _WAGE_BASE * hf_rate * 2 * 12, 2)
    hf_bad = hf & (si_arrears | (rng.random(n) < sigmoid(-4.0 - 1.0 * h)))
    pop["hf_normal_months"] = np.where(hf_bad, rng.integers(0, 6, n), np.minimum(12, age_months))
    hf_lag = np.where(hf_bad, 1 + rng.geometric(0.35, n), 0)
    pop["hf_last_normal"] = np.maximum(
        np.datetime64("2025-06-05")
        - (hf_lag * 30).astype("timedelta64[D]")
        + rng.integers(0, 20, n).astype("timedelta64[D]"),
        founded,
    )

    # --- utilities ------------------------------------------------------------------------------
    elec = rng.random(n) < np.where(kind == INDIVIDUAL, 0.7, 0.93)
    pop["has_elec"] = elec
    avg12 = headcount * _by(industry, _ELEC_PER_HEAD, 400.0) * np.exp(rng.normal(0, 0.5, n))
    trend = np.exp(0.10 * h - 0.03 + rng.normal(0, 0.08, n))  # distressed firms use less
    pop["elec_avg12"] = np.round(avg12, 1)
    pop["elec_avg6"] = np.round(avg12 * np.sqrt(trend) * np.exp(rng.normal(0, 0.03, n)), 1)
    pop["elec_avg3"] = np.round(avg12 * trend, 1)
    pop["elec_trend"] = np.log(trend)
    pop["elec_arrears"] = elec & (rng.random(n) < sigmoid(-3.9 - 1.2 * h))
    pop["has_water"] = rng.random(n) < np.where(kind == INDIVIDUAL, 0.6, 0.88)
    water = headcount * np.where(np.isin(industry, ["C", "H", "A"]), 6.0, 2.0)
    water = water * np.exp(rng.normal(0, 0.5, n))
    pop["water_avg6"] = np.round(water, 1)
    pop["water_avg3"] = np.round(water * trend * np.exp(rng.normal(0, 0.05, n)), 1)
    pop["water_arrears"] = pop["has_water"] & (rng.random(n) < sigmoid(-4.2 - 1.1 * h))
    gas_p = np.where(industry == "H", 0.9, np.where(industry == "C", 0.5, 0.2))
    pop["has_gas"] = rng.random(n) < gas_p
    gas = headcount * np.where(industry == "H", 60.0, 25.0) * np.exp(rng.normal(0, 0.6, n))
    pop["gas_avg6"] = np.round(gas, 1)
    pop["gas_avg3"] = np.round(gas * trend * np.exp(rng.normal(0, 0.05, n)), 1)
    pop["gas_arrears"] = pop["has_gas"] & (rng.random(n) < sigmoid(-4.2 - 1.1 * h))

    # --- property, courts and regulators ---------------------------------------------------------
    lam_prop = np.array([0.15, 0.7, 2.0])[size] * np.exp(0.3 * h)
    lam_prop = np.where(industry == "K", lam_prop * 3, lam_prop)
    lam_prop = np.where(kind == INDIVIDUAL, 0.04, lam_prop)
    pop["n_properties"] = np.minimum(rng.poisson(lam_prop), 12)
    pop["leverage"] = leverage
    lam_judg = np.array([0.10, 0.35, 0.9])[size] * np.exp(-0.55 * h)
    pop["n_judgments"] = np.minimum(rng.poisson(lam_judg), 15)
    pop["terminated"] = rng.random(n) < sigmoid(-4.7 - 1.4 * h)
    pop["dishonest"] = rng.random(n) < sigmoid(-5.4 - 1.6 * h) + 0.25 * pop["terminated"]
    pop["bankrupt"] = rng.random(n) < sigmoid(-7.6 - 1.8 * h)
    samr = np.isin(kind, SAMR_KINDS)
    pop["samr"] = samr
    pop["abnormal"] = samr & (rng.random(n) < sigmoid(-3.6 - 1.1 * h))
    reasons = [
        "annual_report_missing",
        "disclosure_missing",
        "false_disclosure",
        "unreachable_address",
    ]
    pop["abnormal_reason"] = np.where(pop["abnormal"], _choice(rng, reasons, [60, 7, 3, 30], n), "")
    holders = np.select(
        [size == 0, size == 1],
        [rng.choice([1, 2, 3, 4], n, p=[0.4, 0.35, 0.15, 0.1]), rng.integers(1, 7, n)],
        rng.integers(2, 11, n),
    )
    pop["n_shareholders"] = np.where(kind == COMPANY, holders, 0)
    pop["serious_violation"] = samr & (rng.random(n) < sigmoid(-7.2 - 1.2 * h))
    pop["spot_failed"] = np.where(samr, rng.poisson(0.05 * np.exp(-0.6 * h)), 0)
    status = np.full(n, "active", dtype="<U12")
    status[samr & (rng.random(n) < sigmoid(-6.0 - 1.5 * h))] = "revoked"
    status[samr & (rng.random(n) < 0.004)] = "moved_out"
    pop["reg_status"] = status

    # --- names, people, addresses, capital -------------------------------------------------
    pop["legal_rep"] = vocab.person_names(rng, n)
    birth = AS_OF64 - (rng.uniform(25, 65, n) * 365.25).astype("timedelta64[D]")
    pop["legal_rep_id"] = id_card_numbers(rng, region, birth)
    pop["name"] = _names(rng, pop, rt)
    road = vocab.pick(rng, vocab.ROADS, n)
    num = rng.integers(1, 999, n).astype(str)
    pop["address"] = vocab.join(rt.full[ridx], road, num, "号")
    cap_median = np.array([100.0, 800.0, 5000.0])[size]  # 万元
    capital = cap_median * np.exp(rng.normal(0, 0.8, n) + 0.15 * h)
    capital = np.where(kind == INDIVIDUAL, rng.uniform(1, 50, n), capital)
    pop["reg_capital"] = np.round(capital, 2)
    return pop


def _names(rng: np.random.Generator, pop: Population, rt: vocab.RegionText) -> Any:
    n, kind, industry, ridx = pop.n, pop["kind"], pop["industry"], pop["region_idx"]
    place, local = rt.place[ridx], rt.local[ridx]
    zihao = vocab.join(vocab.pick(rng, vocab.ZIHAO, n), vocab.pick(rng, vocab.ZIHAO, n))
    words = np.empty(n, dtype=object)
    for s, options in vocab.COMPANY_WORDS.items():
        sel = industry == s
        if sel.any():
            words[sel] = vocab.pick(rng, options, int(sel.sum()))
    suffix = _choice(rng, ["有限公司", "有限责任公司", "股份有限公司"], [70, 20, 10], n)
    company = vocab.join(place, zihao, words.astype(str), suffix)
    shops = np.empty(n, dtype=object)
    for s in np.unique(industry):
        sel = industry == s
        shops[sel] = vocab.pick(
            rng, vocab.SHOP_WORDS.get(str(s), vocab.SHOP_DEFAULT), int(sel.sum())
        )
    individual = vocab.join(local, zihao, shops.astype(str))
    produce = np.where(
        rng.random(n) < 0.7,
        vocab.join(vocab.pick(rng, vocab.AGRI_PRODUCTS, n), "种植"),
        vocab.join(vocab.pick(rng, vocab.LIVESTOCK, n), "养殖"),
    )
    coop = vocab.join(local, zihao, produce, "专业合作社")
    village = vocab.join(local, zihao, "村股份经济合作社")
    town = vocab.join(local, zihao, "镇经济联合总社")
    public = vocab.join(local, vocab.pick(rng, vocab.PUBLIC_UNITS, n))
    nonprofit = vocab.join(place, zihao, vocab.pick(rng, vocab.NONPROFIT_UNITS, n))
    other = vocab.join(local, zihao, "小区业主委员会")
    return np.select(
        [kind == k for k in range(8)],
        [company, individual, coop, village, town, public, nonprofit, other],
        default="",
    )


def iter_population(n: int, seed: int, chunk_size: int = CHUNK) -> Iterator[Population]:
    """Yield the population of ``n`` enterprises in chunks (the default chunking is canonical)."""
    if n < 1:
        raise ValueError("need at least one enterprise")
    params = PopulationParams.from_seed(seed)
    for c, start in enumerate(range(0, n, chunk_size)):
        yield generate_chunk(params, c, min(chunk_size, n - start), start)
