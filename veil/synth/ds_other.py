"""Rows of the minor categories: environment, customs, IP, software copyright, real estate,
administrative licensing/penalties/enforcement, science and agriculture.

Simple but plausible: formats follow the real registers (certificate and application
numbers, unit numbers, decision numbers), contents come from short word lists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from veil.synth import vocab
from veil.synth.population import AS_OF64, COMPANY, COOP, INDIVIDUAL, Population, sigmoid
from veil.synth.rows import (
    Cols,
    abbr,
    authority_uscc,
    bank_branch,
    between,
    days,
    expand,
    ident,
    lst,
    rng_for,
    to_date,
    years,
)


def _years_after(start: Any, n_years: Any) -> Any:
    return np.asarray(start, dtype="datetime64[D]") + days(np.round(np.asarray(n_years) * 365.25))


# --- environment, customs ---------------------------------------------------------------------


def env_credit(pop: Population) -> Cols:
    rng = rng_for(pop, "env_credit")
    industrial = np.isin(pop["industry"], ["B", "C", "D", "E", "N"]) & (pop["kind"] == COMPANY)
    rated = industrial & (rng.random(pop.n) < np.array([0.08, 0.5, 0.8])[pop["size"]])
    owner, pos = expand(np.where(rated, rng.integers(1, 3, pop.n), 0))
    m = len(owner)
    score = np.clip(82 + 6 * pop["health"][owner] + rng.normal(0, 4, m), 30, 100).round(1)
    grade = np.select(
        [score >= 90, score >= 80, score >= 70, score >= 60],
        ["green", "blue", "yellow", "red"],
        default="black",
    )
    year = 2024 - pos
    date = np.array([f"{y}-04-01" for y in year.tolist()], dtype="datetime64[D]")
    date = date + days(rng.integers(0, 60, m))
    return ident(pop, owner) | {
        "env_credit_score": lst(score),
        "env_credit_grade": lst(grade),
        "env_evaluation_date": to_date(date),
    }


def _customs_rows(pop: Population) -> Any:
    rng = rng_for(pop, "customs_registration")
    trader = np.isin(pop["industry"], ["C", "F"]) & (pop["kind"] == COMPANY)
    p = np.where(trader, np.array([0.1, 0.35, 0.6])[pop["size"]], 0.02 * (pop["kind"] == COMPANY))
    rows = np.flatnonzero(rng.random(pop.n) < p)
    seq = rng.integers(0, 10**4, len(rows)).tolist()
    digits = rng.integers(1, 10, len(rows)).tolist()
    code = [
        f"{r[:4]}{d}6{s:04d}"
        for r, d, s in zip(pop["region"][rows].tolist(), digits, seq, strict=True)
    ]
    return rng, rows, code


def customs_registration(pop: Population) -> Cols:
    rng, rows, code = _customs_rows(pop)
    m = len(rows)
    return ident(pop, rows) | {
        "customs_reg_code": code,
        "customs_business_category": lst(
            np.where(rng.random(m) < 0.9, "进出口货物收发货人", "报关企业")
        ),
        "customs_reg_flag": lst(np.where(rng.random(m) < 0.96, "正常", "注销")),
    }


def customs_credit_grade(pop: Population) -> Cols:
    _, rows, code = _customs_rows(pop)
    rng = rng_for(pop, "customs_credit_grade")
    m = len(rows)
    h = pop["health"][rows] + rng.normal(0, 0.4, m)
    grade = np.select(
        [h > 1.6, (h > 1.0) & (rng.random(m) < 0.3), h < -1.8],
        ["advanced_certified", "general_certified", "dishonest"],
        default="general_credit",
    )
    start = np.maximum(pop["founded"][rows], np.datetime64("2018-05-01"))
    since = between(rng, start)
    since = np.where(
        grade == "general_certified", np.minimum(since, np.datetime64("2021-10-31")), since
    )
    since = np.maximum(since, pop["founded"][rows])
    return ident(pop, rows) | {
        "customs_grade_reg_code": code,
        "customs_grade": lst(grade),
        "customs_grade_since": to_date(since),
    }


# --- IP office, copyright ---------------------------------------------------------------------

_NICE = {
    "C": ["7", "9", "11", "17"],
    "F": ["35", "30", "3"],
    "H": ["43"],
    "I": ["9", "42"],
    "M": ["42"],
    "A": ["31", "29"],
    "R": ["41"],
    "G": ["39"],
    "P": ["41"],
    "Q": ["44"],
}
_TECH = np.array(
    ["智能", "节能", "高效", "便携式", "自动化", "多功能", "新型", "环保", "可调节", "模块化"]
)
_DEVICE = np.array(
    ["输送装置", "检测装置", "控制系统", "加工设备", "清洗装置", "固定结构", "冷却装置", "包装机构"]
)
_SOFT = np.array(
    [
        "企业资源管理系统",
        "仓储物流管理系统",
        "智慧门店平台",
        "数据分析平台",
        "客户关系管理系统",
        "生产执行系统",
        "移动办公平台",
        "设备监控系统",
    ]
)


def ip_trademarks(pop: Population) -> Cols:
    rng = rng_for(pop, "ip_trademarks")
    lam = np.array([0.25, 1.0, 3.0])[pop["size"]] * np.exp(0.2 * pop["health"])
    lam = np.where(np.isin(pop["industry"], ["F", "C", "H", "I", "R"]), lam * 1.5, lam)
    lam = np.where(pop["kind"] == INDIVIDUAL, 0.05, lam) * pop["samr"]
    owner, _ = expand(np.minimum(rng.poisson(lam), 15))
    m = len(owner)
    applied = between(rng, pop["founded"][owner])
    start = applied + days(rng.integers(250, 400, m))
    registered = start <= AS_OF64
    end = _years_after(start, 10) - days(np.ones(m, dtype=np.int64))
    nice = np.array(
        [vocab.pick(rng, _NICE.get(s, ["35"]), 1)[0] for s in pop["industry"][owner].tolist()]
    )
    name = vocab.join(vocab.pick(rng, vocab.ZIHAO, m), vocab.pick(rng, vocab.ZIHAO, m))
    return ident(pop, owner) | {
        "ip_tm_name": lst(name),
        "ip_tm_reg_no": lst(rng.integers(10_000_000, 70_000_000, m).astype(str)),
        "ip_tm_applicant": lst(pop["name"][owner]),
        "ip_tm_application_date": to_date(applied),
        "ip_tm_nice_class": lst(nice),
        "ip_tm_exclusive_start": lst(start.astype("datetime64[D]"), registered),
        "ip_tm_exclusive_end": lst(end.astype("datetime64[D]"), registered),
    }


def _patent_check(number: str) -> str:
    """Check character of a 12-digit Chinese patent application number."""
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    r = sum(int(d) * w for d, w in zip(number, weights, strict=True)) % 11
    return "X" if r == 10 else str(r)


def ip_patents(pop: Population) -> Cols:
    rng = rng_for(pop, "ip_patents")
    tech = np.isin(pop["industry"], ["C", "I", "M"])
    lam = np.array([0.2, 1.5, 5.0])[pop["size"]] * np.exp(0.3 * pop["health"])
    lam = np.where(tech, lam, 0.02) * (pop["kind"] == COMPANY)
    owner, _ = expand(np.minimum(rng.poisson(lam), 20))
    m = len(owner)
    ptype = np.array(["invention", "utility_model", "design"])[
        rng.choice(3, m, p=[0.25, 0.55, 0.2])
    ]
    digit = np.select([ptype == "invention", ptype == "utility_model"], ["1", "2"], default="3")
    applied = between(rng, pop["founded"][owner])
    seq = rng.integers(0, 10**7, m).tolist()
    base = [
        f"{y}{d}{s:07d}"
        for y, d, s in zip(years(applied).tolist(), digit.tolist(), seq, strict=True)
    ]
    app_no = [f"{b}.{_patent_check(b)}" for b in base]
    delay = np.where(ptype == "invention", 548, rng.integers(150, 360, m))
    published_at = applied + days(delay)
    published = published_at <= AS_OF64
    kind_letter = np.select([ptype == "invention", ptype == "utility_model"], ["A", "U"], "S")
    pub_no = [
        f"CN{n:09d}{k}"
        for n, k in zip(rng.integers(10**8, 10**9, m).tolist(), kind_letter.tolist(), strict=True)
    ]
    title = np.where(
        ptype == "design",
        vocab.join("包装盒（", vocab.pick(rng, vocab.ZIHAO, m), "款）"),
        vocab.join("一种", vocab.pick(rng, _TECH, m), "的", vocab.pick(rng, _DEVICE, m)),
    )
    status = np.where(
        published,
        np.where(ptype == "invention", np.where(rng.random(m) < 0.5, "授权", "实质审查"), "授权"),
        "申请受理",
    )
    status = np.where(published & (rng.random(m) < 0.1), "未缴年费专利权终止", status)
    inventors = (
        [
            "；".join(names)
            for names in np.split(vocab.person_names(rng, 2 * m), np.arange(2, 2 * m, 2))[:m]
        ]
        if m
        else []
    )
    return ident(pop, owner) | {
        "ip_patent_title": lst(title),
        "ip_patent_type": lst(ptype),
        "ip_patent_application_no": app_no,
        "ip_patent_applicant": lst(pop["name"][owner]),
        "ip_patent_applicant_address": lst(pop["address"][owner]),
        "ip_patent_application_date": to_date(applied),
        "ip_patent_inventor": inventors,
        "ip_patent_publication_no": lst(np.array(pub_no), published),
        "ip_patent_publication_date": lst(published_at.astype("datetime64[D]"), published),
        "ip_patent_legal_status": lst(status),
    }


def software_copyrights(pop: Population) -> Cols:
    rng = rng_for(pop, "software_copyrights")
    lam = np.select(
        [pop["industry"] == "I", pop["industry"] == "M"],
        [np.array([0.8, 3.0, 8.0])[pop["size"]], np.array([0.3, 1.0, 3.0])[pop["size"]]],
        default=0.02,
    ) * (pop["kind"] == COMPANY)
    owner, _ = expand(np.minimum(rng.poisson(lam), 25))
    m = len(owner)
    first = between(rng, pop["founded"][owner])
    reg = np.minimum(first + days(rng.integers(20, 200, m)), AS_OF64)
    seq = rng.integers(0, 10**7, m).tolist()
    industry_name = np.array(
        [vocab.COMPANY_WORDS.get(s, ["通用"])[0] for s in pop["industry"][owner].tolist()]
    )
    return ident(pop, owner) | {
        "sc_owner": lst(pop["name"][owner]),
        "sc_title": lst(vocab.join(vocab.pick(rng, vocab.ZIHAO, m), vocab.pick(rng, _SOFT, m))),
        "sc_first_publication_date": to_date(first),
        "sc_version": [
            f"V{a}.{b}"
            for a, b in zip(
                rng.integers(1, 6, m).tolist(), rng.integers(0, 10, m).tolist(), strict=True
            )
        ],
        "sc_class": lst(np.where(rng.random(m) < 0.85, "应用软件", "嵌入式软件")),
        "sc_industry": lst(np.where(rng.random(m) < 0.6, "通用", industry_name)),
        "sc_reg_no": [f"{y}SR{s:07d}" for y, s in zip(years(reg).tolist(), seq, strict=True)],
        "sc_reg_date": to_date(reg),
    }


# --- real estate ------------------------------------------------------------------------------


def properties(pop: Population) -> dict[str, Any]:
    """Property rows, shared by re_properties and re_mortgages."""
    rng = rng_for(pop, "re_properties")
    owner, pos = expand(pop["n_properties"])
    m = len(owner)
    industry, size = pop["industry"][owner], pop["size"][owner]
    use = np.where(
        np.isin(industry, ["B", "C", "D"]) & (rng.random(m) < 0.7),
        "工业",
        np.array(["办公", "商业", "仓储", "住宅"])[rng.choice(4, m, p=[0.45, 0.3, 0.15, 0.1])],
    )
    term = np.select([use == "工业", use == "住宅"], [50, 70], default=40)
    reg = between(rng, pop["founded"][owner])
    rt = vocab.region_text()
    ridx = pop["region_idx"][owner]
    region = pop["region"][owner].tolist()
    cad = rng.integers(1, 999, m).tolist()
    parcel = rng.integers(1, 99999, m).tolist()
    unit_no = [
        f"{r}{c:03d}{c:03d}GB{p:05d}F{i + 1:04d}{j:04d}"
        for r, c, p, i, j in zip(
            region, cad, parcel, pos.tolist(), rng.integers(1, 9999, m).tolist(), strict=True
        )
    ]
    ab = abbr(pop["region"][owner]).tolist()
    place = rt.place[ridx].tolist()
    cert = [
        f"{a}({y}){p}不动产权第{s:07d}号"
        for a, y, p, s in zip(
            ab, years(reg).tolist(), place, rng.integers(1, 10**7, m).tolist(), strict=True
        )
    ]
    location = vocab.join(
        rt.full[ridx],
        vocab.pick(rng, vocab.ROADS, m),
        rng.integers(1, 999, m).astype(str),
        "号",
        rng.integers(1, 30, m).astype(str),
        "栋",
    )
    area = np.round(np.exp(rng.normal(np.log(np.array([150, 800, 4000])[size]), 0.7)), 2)
    mortgaged = rng.random(m) < sigmoid(-0.5 + 2.0 * (pop["leverage"][owner] - 0.6))
    return {
        "owner": owner, "reg": reg, "use": use, "term": term, "unit_no": unit_no, "cert": cert,
        "location": location, "area": area, "ridx": ridx, "abbr": ab, "place": place,
        "mortgaged": mortgaged,
    }  # fmt: skip


def re_properties(pop: Population) -> Cols:
    pr = properties(pop)
    rt = vocab.region_text()
    return ident(pop, pr["owner"]) | {
        "re_certificate_no": pr["cert"],
        "re_unit_no": pr["unit_no"],
        "re_use": lst(pr["use"]),
        "re_location": lst(pr["location"]),
        "re_area": lst(pr["area"]),
        "re_term_end": to_date(_years_after(pr["reg"], pr["term"])),
        "re_registry": lst(np.char.add(rt.local[pr["ridx"]], "不动产登记中心")),
        "re_reg_date": to_date(pr["reg"]),
    }


def re_mortgages(pop: Population) -> Cols:
    pr = properties(pop)
    rng = rng_for(pop, "re_mortgages")
    sel = np.flatnonzero(pr["mortgaged"])
    m = len(sel)
    owner = pr["owner"][sel]
    bank, bank_id = bank_branch(rng, pop, pr["ridx"][sel])
    reg = between(rng, pr["reg"][sel])
    cert = [
        f"{pr['abbr'][i]}({y}){pr['place'][i]}不动产证明第{s:07d}号"
        for i, y, s in zip(
            sel.tolist(), years(reg).tolist(), rng.integers(1, 10**7, m).tolist(), strict=True
        )
    ]
    return ident(pop, owner) | {
        "re_mortgagee": bank,
        "re_mortgagee_id": bank_id,
        "re_mortgage_cert_no": cert,
        "re_mortgage_unit_no": [pr["unit_no"][i] for i in sel.tolist()],
        "re_right_type": lst(np.where(rng.random(m) < 0.7, "抵押权", "最高额抵押权")),
        "re_mortgage_reg_date": to_date(reg),
    }


# --- administrative (NDRC / Credit China) -----------------------------------------------------

# industry section -> (licence, issuing authority, authority kind for its synthetic USCC)
_LICENCES = {
    "H": ("食品经营许可证", "市场监督管理局", 0),
    "F": ("食品经营许可证", "市场监督管理局", 0),
    "C": ("排污许可证", "生态环境局", 1),
    "B": ("安全生产许可证", "应急管理局", 2),
    "E": ("建筑业企业资质证书", "住房和城乡建设局", 3),
    "G": ("道路运输经营许可证", "交通运输局", 4),
    "Q": ("医疗机构执业许可证", "卫生健康委员会", 5),
    "P": ("民办学校办学许可证", "教育局", 6),
    "A": ("种子生产经营许可证", "农业农村局", 7),
}
_DEFAULT_LICENCE = ("特种行业许可证", "公安局", 8)
_PENALTY_CAUSES = np.array(
    ["违反食品安全管理规定", "未按规定申报纳税", "违反安全生产规定", "超标排放污染物",
     "违反广告管理规定", "违反价格管理规定", "未按规定办理消防手续"]
)  # fmt: skip
_ENF_METHODS = np.array(
    ["查封场所、设施或者财物", "扣押财物", "冻结存款、汇款", "加处罚款或者滞纳金"]
)


def _admin_common(pop: Population, owner: Any, rng: np.random.Generator, prefix: str) -> Cols:
    rt = vocab.region_text()
    industry = pop["industry"][owner].tolist()
    info = [_LICENCES.get(s, _DEFAULT_LICENCE) for s in industry]
    ridx = pop["region_idx"][owner]
    authority = vocab.join(rt.local[ridx], np.array([i[1] for i in info]))
    which = np.array([i[2] for i in info], dtype=np.int64)
    return {
        f"{prefix}_legal_rep": lst(pop["legal_rep"][owner]),
        f"{prefix}_legal_rep_id_type": ["居民身份证"] * len(owner),
        f"{prefix}_legal_rep_id_no": lst(pop["legal_rep_id"][owner]),
        f"{prefix}_authority": lst(authority),
        f"{prefix}_authority_uscc": lst(authority_uscc(pop, ridx, which)),
        f"{prefix}_data_source": lst(np.char.add("信用", rt.province[ridx])),
        "_licence": [i[0] for i in info],
    }


def _counterpart(pop: Population, owner: Any) -> list[Any]:
    return lst(np.where(pop["kind"][owner] == INDIVIDUAL, "individual_business", "legal_person"))


def _decision_no(
    rng: np.random.Generator, pop: Population, owner: Any, word: str, when: Any
) -> list[str]:
    ab = abbr(pop["region"][owner]).tolist()
    place = vocab.region_text().place[pop["region_idx"][owner]].tolist()
    seq = rng.integers(1, 9999, len(owner)).tolist()
    return [
        f"{a}{p}{word}〔{y}〕{s}号"
        for a, p, y, s in zip(ab, place, years(when).tolist(), seq, strict=True)
    ]


def admin_licences(pop: Population) -> Cols:
    rng = rng_for(pop, "admin_licences")
    lam = np.array([0.4, 0.9, 1.8])[pop["size"]]
    owner, _ = expand(np.minimum(rng.poisson(lam), 8))
    m = len(owner)
    common = _admin_common(pop, owner, rng, "admin_lic")
    licence = np.array(common.pop("_licence"))
    decided = between(rng, pop["founded"][owner])
    until = _years_after(decided, 5)
    seq = rng.integers(0, 10**6, m).tolist()
    return (
        ident(pop, owner)
        | common
        | {
            "admin_lic_counterpart_type": _counterpart(pop, owner),
            "admin_lic_decision_name": ["准予行政许可决定书"] * m,
            "admin_lic_decision_no": _decision_no(rng, pop, owner, "许准字", decided),
            "admin_lic_category": lst(
                np.array(["general", "registration", "recognition", "approval"])[
                    rng.choice(4, m, p=[0.8, 0.1, 0.05, 0.05])
                ]
            ),
            "admin_lic_certificate_name": lst(licence),
            "admin_lic_no": [
                f"{r}{y}{s:06d}"
                for r, y, s in zip(
                    pop["region"][owner].tolist(), years(decided).tolist(), seq, strict=True
                )
            ],
            "admin_lic_content": lst(vocab.join("准予核发", licence)),
            "admin_lic_decision_date": to_date(decided),
            "admin_lic_valid_until": to_date(until),
            "admin_lic_status": lst(np.where(until > AS_OF64, "valid", "invalid")),
        }
    )


def admin_penalties(pop: Population) -> Cols:
    rng = rng_for(pop, "admin_penalties")
    p = sigmoid(-3.3 - 0.9 * pop["health"])
    owner, _ = expand(np.where(rng.random(pop.n) < p, rng.integers(1, 3, pop.n), 0))
    m = len(owner)
    common = _admin_common(pop, owner, rng, "admin_pen")
    licence = np.array(common.pop("_licence"))
    decided = between(rng, np.maximum(pop["founded"][owner], np.datetime64("2020-01-01")))
    fine = np.round(np.exp(rng.normal(np.log(0.3), 1.0, m)) * (1 + pop["size"][owner]), 4)
    confiscated = np.where(rng.random(m) < 0.1, np.round(fine * rng.uniform(0.2, 2.0, m), 4), 0.0)
    revoked = rng.random(m) < 0.03
    cause = vocab.pick(rng, _PENALTY_CAUSES, m)
    seq = rng.integers(0, 10**6, m).tolist()
    return (
        ident(pop, owner)
        | common
        | {
            "admin_pen_counterpart_type": _counterpart(pop, owner),
            "admin_pen_decision_name": ["行政处罚决定书"] * m,
            "admin_pen_decision_no": _decision_no(rng, pop, owner, "罚决字", decided),
            "admin_pen_violation_type": lst(cause),
            "admin_pen_facts": lst(vocab.join("经查，当事人存在", cause, "的行为")),
            "admin_pen_basis": ["《中华人民共和国行政处罚法》第二十八条"] * m,
            "admin_pen_content": [f"罚款人民币{f * 1e4:.2f}元" for f in fine.tolist()],
            "admin_pen_fine": lst(fine),
            "admin_pen_confiscation": lst(confiscated),
            "admin_pen_licence_name": lst(licence, revoked),
            "admin_pen_licence_no": lst(np.array([f"{s:06d}" for s in seq]), revoked),
            "admin_pen_decision_date": to_date(decided),
            "admin_pen_valid_until": to_date(_years_after(decided, 3)),
            "admin_pen_publicity_end": to_date(_years_after(decided, 1)),
        }
    )


def admin_enforcement(pop: Population) -> Cols:
    rng = rng_for(pop, "admin_enforcement")
    owner = np.flatnonzero(rng.random(pop.n) < sigmoid(-5.6 - 1.0 * pop["health"]))
    m = len(owner)
    common = _admin_common(pop, owner, rng, "admin_enf")
    common.pop("_licence")
    when = between(rng, np.maximum(pop["founded"][owner], np.datetime64("2020-01-01")))
    return (
        ident(pop, owner)
        | common
        | {
            "admin_enf_decision_name": ["行政强制执行决定书"] * m,
            "admin_enf_decision_no": _decision_no(rng, pop, owner, "强执字", when),
            "admin_enf_reason": [
                "当事人在法定期限内不申请行政复议或者提起行政诉讼，又不履行行政决定"
            ]
            * m,
            "admin_enf_basis": ["《中华人民共和国行政强制法》第五十四条"] * m,
            "admin_enf_method": lst(vocab.pick(rng, _ENF_METHODS, m)),
            "admin_enf_date": to_date(when),
        }
    )


# --- science, agriculture ---------------------------------------------------------------------


def science_rd(pop: Population) -> Cols:
    rng = rng_for(pop, "science_rd")
    techy = np.isin(pop["industry"], ["C", "I", "M"]) & (pop["kind"] == COMPANY)
    owner = np.flatnonzero(techy & (rng.random(pop.n) < np.array([0.1, 0.4, 0.7])[pop["size"]]))
    m = len(owner)
    h, size = pop["health"][owner], pop["size"][owner]
    high_tech = rng.random(m) < sigmoid(-1.2 + 0.5 * h + 0.8 * size)
    place = vocab.region_text().place[pop["region_idx"][owner]]
    year = rng.integers(2019, 2025, m).astype(str)
    lab = vocab.join(place, "市级重点实验室（", year, "年认定）")
    fund = vocab.join(
        year, "年度", place, "科技计划项目资助", rng.integers(10, 300, m).astype(str), "万元"
    )
    std = vocab.join("参与制定团体标准《", vocab.pick(rng, _DEVICE, m), "技术规范》")
    talent = vocab.join(
        year, "年", rng.integers(1, 5, m).astype(str), "人入选", place, "高层次人才计划"
    )
    return ident(pop, owner) | {
        "sci_high_tech": lst(high_tech),
        "sci_lab_construction": lst(lab, rng.random(m) < 0.1 + 0.2 * high_tech),
        "sci_government_funding": lst(fund, rng.random(m) < 0.2 + 0.3 * high_tech),
        "sci_standard_setting": lst(std, rng.random(m) < 0.05 + 0.1 * high_tech),
        "sci_talent_certification": lst(talent, rng.random(m) < 0.1 + 0.1 * high_tech),
    }


def agri_entities(pop: Population) -> Cols:
    rng = rng_for(pop, "agri_entities")
    kind, agri = pop["kind"], pop["industry"] == "A"
    draw = rng.random(pop.n)
    atype = np.select(
        [kind == COOP, (kind == INDIVIDUAL) & agri, (kind == COMPANY) & agri & (draw < 0.3),
         (kind == COMPANY) & agri & (draw < 0.5)],
        ["cooperative", "family_farm", "leading_enterprise", "service_organisation"],
        default="",
    )  # fmt: skip
    owner = np.flatnonzero(atype != "")
    m = len(owner)
    rt = vocab.region_text()
    land = vocab.join("流转土地经营权", rng.integers(20, 3000, m).astype(str), "亩，期限至",
                      rng.integers(2027, 2040, m).astype(str), "年")  # fmt: skip
    housing = vocab.join("农民住房财产权抵押", rng.integers(1, 6, m).astype(str), "处")
    return ident(pop, owner) | {
        "agri_type": lst(atype[owner]),
        "agri_head": lst(pop["legal_rep"][owner]),
        "agri_location": lst(rt.full[pop["region_idx"][owner]]),
        "agri_scope": [vocab.SCOPE_PHRASES["A"]] * m,
        "agri_land_rights": lst(land, rng.random(m) < 0.7),
        "agri_housing_rights": lst(housing, rng.random(m) < 0.1),
    }


BUILDERS = {
    "env_credit": env_credit,
    "customs_registration": customs_registration,
    "customs_credit_grade": customs_credit_grade,
    "ip_trademarks": ip_trademarks,
    "ip_patents": ip_patents,
    "software_copyrights": software_copyrights,
    "re_properties": re_properties,
    "re_mortgages": re_mortgages,
    "admin_licences": admin_licences,
    "admin_penalties": admin_penalties,
    "admin_enforcement": admin_enforcement,
    "science_rd": science_rd,
    "agri_entities": agri_entities,
}
