"""Rows of the court datasets: judgments, terminated enforcement, dishonest debtors, bankruptcy."""

from __future__ import annotations

from typing import Any

import numpy as np

from veil.synth import vocab
from veil.synth.ids import id_card_numbers
from veil.synth.population import AS_OF64, Population, sigmoid
from veil.synth.rows import (
    Cols,
    between,
    case_numbers,
    days,
    expand,
    ident,
    lst,
    rng_for,
    to_date,
    years,
)

CAUSES = np.array(
    [
        "买卖合同纠纷",
        "借款合同纠纷",
        "金融借款合同纠纷",
        "劳动争议",
        "租赁合同纠纷",
        "建设工程施工合同纠纷",
        "服务合同纠纷",
        "民间借贷纠纷",
        "承揽合同纠纷",
        "运输合同纠纷",
    ]
)
CONDUCT = np.array(
    [
        "有履行能力而拒不履行生效法律文书确定义务",
        "违反财产报告制度",
        "违反限制消费令",
        "以伪造证据、暴力、威胁等方法妨碍、抗拒执行",
    ]
)


def court_judgments(pop: Population) -> Cols:
    rng = rng_for(pop, "court_judgments")
    owner, _ = expand(pop["n_judgments"])
    m = len(owner)
    defendant = rng.random(m) < sigmoid(0.2 - 0.6 * pop["health"][owner])
    person = rng.random(m) < 0.4
    other = rng.integers(0, pop.n, m)
    birth = AS_OF64 - days((rng.uniform(22, 70, m) * 365.25).astype(np.int64))
    cp_name = np.where(person, vocab.person_names(rng, m), pop["name"][other])
    cp_id = np.where(person, id_card_numbers(rng, pop["region"][owner], birth), pop["uscc"][other])
    me_name, me_id = pop["name"][owner], pop["uscc"][owner]
    amount = np.round(np.exp(rng.normal(11.0, 1.2, m)), 2).tolist()
    won = rng.random(m) < 0.75
    result = [
        (f"被告于本判决生效之日起十日内向原告支付人民币{a:.2f}元" if w else "驳回原告的诉讼请求")
        for a, w in zip(amount, won.tolist(), strict=True)
    ]
    publish = between(rng, np.maximum(pop["founded"][owner], np.datetime64("2018-01-01")))
    rt = vocab.region_text()
    ridx = pop["region_idx"][owner]
    return ident(pop, owner) | {
        "court_judgment_cause": lst(vocab.pick(rng, CAUSES, m)),
        "court_judgment_case_no": case_numbers(rng, years(publish), pop["region"][owner], "民初"),
        "court_judgment_plaintiff": lst(np.where(defendant, cp_name, me_name)),
        "court_judgment_plaintiff_id": lst(np.where(defendant, cp_id, me_id)),
        "court_judgment_defendant": lst(np.where(defendant, me_name, cp_name)),
        "court_judgment_defendant_id": lst(np.where(defendant, me_id, cp_id)),
        "court_judgment_result": result,
        "court_judgment_court": lst(rt.court[ridx]),
        "court_judgment_location": lst(np.char.add(rt.province[ridx], rt.city[ridx])),
        "court_judgment_publish_date": to_date(publish),
    }


def _events(pop: Population, flag: str, dataset: str) -> tuple[np.random.Generator, Cols, Any]:
    rng = rng_for(pop, dataset)
    counts = np.where(pop[flag], rng.integers(1, 3, pop.n), 0)
    owner, _ = expand(counts)
    return rng, ident(pop, owner), owner


def court_terminated_cases(pop: Population) -> Cols:
    rng, out, owner = _events(pop, "terminated", "court_terminated_cases")
    m = len(owner)
    filed = between(rng, np.maximum(pop["founded"][owner], np.datetime64("2019-01-01")))
    ended = np.minimum(filed + days(rng.integers(90, 400, m)), AS_OF64)
    rt = vocab.region_text()
    return out | {
        "court_terminated_case_no": case_numbers(rng, years(filed), pop["region"][owner], "执"),
        "court_terminated_court": lst(rt.court[pop["region_idx"][owner]]),
        "court_terminated_filing_date": to_date(filed),
        "court_terminated_date": to_date(ended),
    }


def court_dishonest_debtors(pop: Population) -> Cols:
    rng, out, owner = _events(pop, "dishonest", "court_dishonest_debtors")
    m = len(owner)
    filed = between(rng, np.maximum(pop["founded"][owner], np.datetime64("2019-01-01")))
    published = np.minimum(filed + days(rng.integers(30, 200, m)), AS_OF64)
    rt = vocab.region_text()
    ridx = pop["region_idx"][owner]
    return out | {
        "court_dishonest_case_no": case_numbers(rng, years(filed), pop["region"][owner], "执"),
        "court_dishonest_legal_rep": lst(pop["legal_rep"][owner]),
        "court_dishonest_performance": lst(
            np.where(rng.random(m) < 0.8, "none_performed", "partly_performed")
        ),
        "court_dishonest_conduct": lst(CONDUCT[rng.choice(4, m, p=[0.7, 0.15, 0.1, 0.05])]),
        "court_dishonest_court": lst(rt.court[ridx]),
        "court_dishonest_location": lst(np.char.add(rt.province[ridx], rt.city[ridx])),
        "court_dishonest_filing_date": to_date(filed),
        "court_dishonest_publish_date": to_date(published),
    }


def court_bankruptcy(pop: Population) -> Cols:
    rng = rng_for(pop, "court_bankruptcy")
    owner = np.flatnonzero(pop["bankrupt"])
    m = len(owner)
    accepted = between(rng, np.maximum(pop["founded"][owner], np.datetime64("2019-01-01")))
    kind = np.array(["liquidation", "reorganization", "conciliation"])[
        rng.choice(3, m, p=[0.75, 0.2, 0.05])
    ]
    closed_at = accepted + days(rng.integers(180, 900, m))
    closed = closed_at <= AS_OF64
    method = np.select(
        [kind == "liquidation", kind == "reorganization"],
        ["宣告破产并终结破产程序", "重整计划执行完毕"],
        default="和解协议履行完毕",
    )
    rt = vocab.region_text()
    ridx = pop["region_idx"][owner]
    admin = vocab.join(rt.place[ridx], vocab.pick(rng, vocab.ZIHAO, m), "律师事务所")
    return ident(pop, owner) | {
        "court_bankruptcy_case_no": case_numbers(rng, years(accepted), pop["region"][owner], "破"),
        "court_bankruptcy_type": lst(kind),
        "court_bankruptcy_accepted_date": to_date(accepted),
        "court_bankruptcy_court": lst(rt.court[ridx]),
        "court_bankruptcy_administrator": lst(admin),
        "court_bankruptcy_closure_method": lst(method, closed),
        "court_bankruptcy_closure_date": lst(closed_at.astype("datetime64[D]"), closed),
    }


BUILDERS = {
    "court_judgments": court_judgments,
    "court_terminated_cases": court_terminated_cases,
    "court_dishonest_debtors": court_dishonest_debtors,
    "court_bankruptcy": court_bankruptcy,
}
