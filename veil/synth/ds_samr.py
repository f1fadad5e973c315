"""Rows of the SAMR (market registration) datasets; only kinds 91/92/93 are registered there."""

from __future__ import annotations

from typing import Any

import numpy as np

from veil.synth import vocab
from veil.synth.ids import id_card_numbers
from veil.synth.population import AS_OF64, COMPANY, COOP, INDIVIDUAL, Population, sigmoid
from veil.synth.rows import (
    BRANCH_BASE,
    HOLDER_BASE,
    Cols,
    bank_branch,
    between,
    chunk_slots,
    days,
    expand,
    ident,
    lst,
    rng_for,
    synthetic_uscc,
    to_date,
    years,
)

SCOPE_TAIL = "（依法须经批准的项目，经相关部门批准后方可开展经营活动）"
CHANGE_ITEMS = np.array(
    [
        "住所变更",
        "法定代表人变更",
        "注册资本变更",
        "经营范围变更",
        "投资人(股权)变更",
        "高级管理人员备案",
    ]
)


def _samr(pop: Population) -> Any:
    return np.flatnonzero(pop["samr"])


def samr_basic(pop: Population) -> Cols:
    rows = _samr(pop)
    rt = vocab.region_text()
    return ident(pop, rows) | {
        "samr_legal_rep": lst(pop["legal_rep"][rows]),
        "samr_founding_date": to_date(pop["founded"][rows]),
        "samr_address": lst(pop["address"][rows]),
        "samr_reg_status": lst(pop["reg_status"][rows]),
        "samr_reg_authority": lst(rt.market_authority[pop["region_idx"][rows]]),
    }


def samr_scope(pop: Population) -> Cols:
    rng = rng_for(pop, "samr_scope")
    rows = _samr(pop)
    kind, name = pop["kind"][rows], pop["name"][rows]
    scope = [vocab.SCOPE_PHRASES[s] + SCOPE_TAIL for s in pop["industry"][rows].tolist()]
    ctype = np.where(
        np.char.endswith(name.astype(str), "股份有限公司"),
        "股份有限公司(非上市、自然人投资或控股)",
        np.where(
            pop["n_shareholders"][rows] == 1,
            "有限责任公司(自然人独资)",
            "有限责任公司(自然人投资或控股)",
        ),
    )
    ctype = np.where(
        kind == INDIVIDUAL, "个体工商户", np.where(kind == COOP, "农民专业合作社", ctype)
    )
    founded = pop["founded"][rows]
    limited = (rng.random(len(rows)) < 0.3) & (kind == COMPANY)
    term_years = rng.choice([20, 30, 50], len(rows))
    end = founded + days(np.round(term_years * 365.25).astype(np.int64))
    return ident(pop, rows, name=False) | {
        "samr_business_scope": scope,
        "samr_company_type": lst(ctype),
        "samr_registered_capital": lst(pop["reg_capital"][rows]),
        "samr_term_start": to_date(founded),
        "samr_term_end": lst(end.astype("datetime64[D]"), limited),
    }


def samr_changes(pop: Population) -> Cols:
    rng = rng_for(pop, "samr_changes")
    rows = _samr(pop)
    age = pop["age_months"][rows] / 12
    counts = np.minimum(rng.poisson(0.25 * np.sqrt(age)), 8)
    owner, _ = expand(counts)
    r = rows[owner]
    m = len(r)
    item = vocab.pick(rng, CHANGE_ITEMS, m)
    people = vocab.person_names(rng, m)
    cap = pop["reg_capital"][r]
    before_cap = np.round(cap * rng.uniform(0.2, 0.9, m), 2)
    addr_before = vocab.join(
        vocab.region_text().full[pop["region_idx"][r]],
        vocab.pick(rng, vocab.ROADS, m),
        rng.integers(1, 999, m).astype(str),
        "号",
    )
    before = np.select(
        [
            item == "住所变更",
            item == "法定代表人变更",
            item == "注册资本变更",
            item == "经营范围变更",
        ],
        [addr_before, people, np.char.add(before_cap.astype(str), "万元"), "日用百货销售"],
        default=people,
    )
    after = np.select(
        [
            item == "住所变更",
            item == "法定代表人变更",
            item == "注册资本变更",
            item == "经营范围变更",
        ],
        [
            pop["address"][r],
            pop["legal_rep"][r],
            np.char.add(cap.astype(str), "万元"),
            np.array([vocab.SCOPE_PHRASES[s] for s in pop["industry"][r].tolist()], dtype=str),
        ],
        default=vocab.person_names(rng, m),
    )
    return ident(pop, r) | {
        "samr_change_item": lst(item),
        "samr_change_before": lst(before),
        "samr_change_after": lst(after),
        "samr_change_date": to_date(between(rng, pop["founded"][r])),
    }


def samr_industry(pop: Population) -> Cols:
    rows = _samr(pop)
    code = np.char.add(pop["industry"][rows].astype(str), pop["division"][rows].astype(str))
    return ident(pop, rows) | {"samr_industry_code": lst(code)}


def shareholders(pop: Population) -> dict[str, Any]:
    """Shareholder rows of companies (shared by samr_shareholders and samr_equity_pledges)."""
    rng = rng_for(pop, "samr_shareholders")
    owner, pos = expand(pop["n_shareholders"])
    m = len(owner)
    corporate = rng.random(m) < 0.15
    person = vocab.person_names(rng, m)
    person = np.where(pos == 0, pop["legal_rep"][owner], person)  # the founder holds shares
    other = rng.integers(0, pop.n, m)
    name = np.where(corporate, pop["name"][other], person)
    birth = AS_OF64 - days((rng.uniform(25, 65, m) * 365.25).astype(np.int64))
    person_id = id_card_numbers(rng, pop["region"][owner], birth)
    corp_id = synthetic_uscc(pop, "9", "1", pop["region"][other], chunk_slots(pop, m), HOLDER_BASE)
    weight = rng.gamma(1.0, 1.0, m) + 0.05
    sums = np.bincount(owner, weights=weight, minlength=pop.n)
    ratio = np.round(weight / sums[owner], 4)
    subscribed = np.round(pop["reg_capital"][owner] * ratio, 2)
    paid_share = rng.choice([0.0, 1.0, 0.5], size=pop.n, p=[0.4, 0.4, 0.2])[owner]
    return {
        "owner": owner,
        "name": name,
        "type": np.where(corporate, "企业法人", "自然人股东"),
        "id": np.where(corporate, corp_id, person_id),
        "ratio": ratio,
        "subscribed": subscribed,
        "paid": np.round(subscribed * paid_share, 2),
        "method": np.asarray(vocab.pick(rng, np.array(["货币"] * 18 + ["实物", "知识产权"]), m)),
    }


def samr_shareholders(pop: Population) -> Cols:
    sh = shareholders(pop)
    return ident(pop, sh["owner"]) | {
        "samr_shareholder_name": lst(sh["name"]),
        "samr_shareholder_type": lst(sh["type"]),
        "samr_shareholding_ratio": lst(sh["ratio"]),
        "samr_contribution_paid": lst(sh["paid"]),
        "samr_contribution_method": lst(sh["method"]),
        "samr_contribution_subscribed": lst(sh["subscribed"]),
    }


def samr_branches(pop: Population) -> Cols:
    rng = rng_for(pop, "samr_branches")
    lam = np.array([0.03, 0.25, 1.2])[pop["size"]] * (pop["kind"] == COMPANY)
    owner, _ = expand(np.minimum(rng.poisson(lam), 6))
    m = len(owner)
    rt = vocab.region_text()
    bridx = rng.choice(len(rt.codes), size=m, p=rt.province_weight)
    codes = synthetic_uscc(pop, "9", "1", rt.codes[bridx], chunk_slots(pop, m), BRANCH_BASE)
    address = vocab.join(
        rt.full[bridx], vocab.pick(rng, vocab.ROADS, m), rng.integers(1, 999, m).astype(str), "号"
    )
    status = np.where(rng.random(m) < 0.95, "active", "deregistered")
    return ident(pop, owner) | {
        "samr_branch_name": lst(vocab.join(pop["name"][owner], rt.local[bridx], "分公司")),
        "samr_branch_uscc": lst(codes),
        "samr_branch_head": lst(vocab.person_names(rng, m)),
        "samr_branch_founding_date": to_date(between(rng, pop["founded"][owner])),
        "samr_branch_address": lst(address),
        "samr_branch_reg_status": lst(status),
        "samr_branch_reg_authority": lst(rt.market_authority[bridx]),
    }


def samr_equity_pledges(pop: Population) -> Cols:
    rng = rng_for(pop, "samr_equity_pledges")
    sh = shareholders(pop)
    first = np.full(pop.n, -1)
    first[sh["owner"][::-1]] = np.arange(len(sh["owner"]))[::-1]  # first shareholder row
    p = sigmoid(-3.8 - 0.8 * pop["health"] + 0.6 * pop["size"])
    pledging = (first >= 0) & (rng.random(pop.n) < p)
    owner, _ = expand(np.where(pledging, rng.integers(1, 3, pop.n), 0))
    m = len(owner)
    holder = first[owner]
    reg = between(rng, np.maximum(pop["founded"][owner], np.datetime64("2016-01-01")))
    bank, bank_id = bank_branch(rng, pop, pop["region_idx"][owner])
    seq = rng.integers(0, 10**6, m).tolist()
    regno = [
        f"{r}{y}{s:06d}"
        for r, y, s in zip(pop["region"][owner].tolist(), years(reg).tolist(), seq, strict=True)
    ]
    return ident(pop, owner) | {
        "samr_pledge_reg_no": regno,
        "samr_pledgor": lst(sh["name"][holder]),
        "samr_pledgor_id_no": lst(sh["id"][holder]),
        "samr_pledged_amount": lst(
            np.round(sh["subscribed"][holder] * rng.uniform(0.3, 1.0, m), 2)
        ),
        "samr_pledgee": bank,
        "samr_pledgee_id_no": bank_id,
        "samr_pledge_reg_date": to_date(reg),
        "samr_pledge_publicity_date": to_date(
            np.minimum(reg + days(rng.integers(1, 8, m)), AS_OF64)
        ),
        "samr_pledge_status": lst(np.where(rng.random(m) < 0.8, "valid", "invalid")),
    }


REPORT_YEARS = (2022, 2023, 2024)


def samr_annual_report(pop: Population) -> Cols:
    """Reports for 2022-2024; 2024 holds the latent financials exactly, earlier years are
    back-cast with a health-dependent growth rate.  Enterprises listed as abnormal for a
    missing annual report lack the 2024 report."""
    rng = rng_for(pop, "samr_annual_report")
    samr = pop["samr"]
    founded_year = years(pop["founded"])
    growth = np.clip(0.05 + 0.06 * pop["health"], -0.3, 0.4)
    guarantee = rng.random(pop.n) < sigmoid(-2.5 + 0.5 * pop["size"] - 0.3 * pop["health"])
    parts: list[Cols] = []
    for year in REPORT_YEARS:
        has = samr & (founded_year <= year)
        if year == 2024:
            has &= pop["abnormal_reason"] != "annual_report_missing"
        rows = np.flatnonzero(has)
        back = 2024 - year
        f = (1 + growth[rows]) ** (-back) * np.exp(rng.normal(0, 0.05, len(rows)) * (back > 0))

        def wan(col: str, rows: Any = rows, f: Any = f) -> list[Any]:
            return lst(np.round(pop[col][rows] * f / 1e4, 2))

        head = np.maximum(1, np.round(pop["headcount"][rows] * f)).astype(np.int64)
        parts.append(
            ident(pop, rows)
            | {
                "samr_report_year": [year] * len(rows),
                "samr_total_assets": wan("assets"),
                "samr_owner_equity": wan("equity"),
                "samr_total_revenue": wan("revenue"),
                "samr_total_profit": wan("total_profit"),
                "samr_net_profit": wan("net_profit"),
                "samr_total_tax": wan("tax_total"),
                "samr_total_liabilities": wan("liabilities"),
                "samr_external_guarantee": lst(guarantee[rows]),
                "samr_headcount": lst(head),
            }
        )
    return {k: [v for part in parts for v in part[k]] for k in parts[0]}


def samr_abnormal_list(pop: Population) -> Cols:
    rng = rng_for(pop, "samr_abnormal_list")
    rows = _samr(pop)
    listed = pop["abnormal"][rows]
    date = between(rng, np.full(len(rows), np.datetime64("2022-07-01")))
    date = np.maximum(date, pop["founded"][rows])
    return ident(pop, rows) | {
        "samr_abnormal_listed": lst(listed),
        "samr_abnormal_reason": lst(pop["abnormal_reason"][rows], listed),
        "samr_abnormal_date": lst(date.astype("datetime64[D]"), listed),
    }


SV_REASONS = np.array(
    [
        "被列入经营异常名录届满3年仍未履行相关义务",
        "提交虚假材料或者采取其他欺诈手段隐瞒重要事实，取得公司登记，被撤销登记",
        "组织策划传销",
    ]
)


def samr_serious_violation(pop: Population) -> Cols:
    rng = rng_for(pop, "samr_serious_violation")
    rows = np.flatnonzero(pop["serious_violation"])
    m = len(rows)
    rt = vocab.region_text()
    date_in = between(rng, np.maximum(pop["founded"][rows], np.datetime64("2019-01-01")))
    date_out = between(rng, date_in + days(np.full(m, 365)))
    removed = (rng.random(m) < 0.3) & (date_out <= AS_OF64)
    authority = rt.market_authority[pop["region_idx"][rows]]
    return ident(pop, rows) | {
        "samr_sv_reason_in": lst(SV_REASONS[rng.choice(3, m, p=[0.85, 0.1, 0.05])]),
        "samr_sv_date_in": to_date(date_in),
        "samr_sv_authority_in": lst(authority),
        "samr_sv_reason_out": lst(np.full(m, "依法履行相关义务并申请移出"), removed),
        "samr_sv_date_out": lst(date_out.astype("datetime64[D]"), removed),
        "samr_sv_authority_out": lst(authority, removed),
    }


def samr_spot_checks(pop: Population) -> Cols:
    rows = _samr(pop)
    return ident(pop, rows) | {"samr_failed_checks_3y": lst(pop["spot_failed"][rows])}


BUILDERS = {
    "samr_basic": samr_basic,
    "samr_scope": samr_scope,
    "samr_changes": samr_changes,
    "samr_industry": samr_industry,
    "samr_shareholders": samr_shareholders,
    "samr_branches": samr_branches,
    "samr_equity_pledges": samr_equity_pledges,
    "samr_annual_report": samr_annual_report,
    "samr_abnormal_list": samr_abnormal_list,
    "samr_serious_violation": samr_serious_violation,
    "samr_spot_checks": samr_spot_checks,
}
