"""Verification budgets and the answer cache (platform_node/budgets.py), on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.rpc import error_details_pb2
from sqlalchemy import Engine

from platform_node.budgets import BudgetPolicy, CachedAnswer, Question, VerificationBudgets
from tests.conftest import fresh_database
from veil.errors import ConfigError, ResourceExhausted

GRANT = "6f1c1a52-7d0e-4e55-9f43-6b1fbd2f0c11"
USCC = "91110000MA01AB2C32"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    """A fresh database: a SQLite file, or a new PostgreSQL schema dropped afterwards
    (PostgreSQL must be reachable: a connection error fails the test)."""
    with fresh_database(request.param, tmp_path, "budget") as engine:
        yield engine


def question(fields: tuple[str, ...] = ("tax_vat_paid_last_year",), **kw: str) -> Question:
    return Question(
        grant_id=kw.get("grant_id", GRANT),
        institution=kw.get("institution", "demo-bank"),
        uscc=kw.get("uscc", USCC),
        claims_sha256=kw.get("digest", "a" * 64),
        fields=fields,
    )


def test_budget_is_spent_per_field_and_exhaustion_names_each_field(engine: Engine) -> None:
    budgets = VerificationBudgets(
        engine, BudgetPolicy(budget=3, field_budgets={"tax_in_arrears": 1})
    )
    both = question(("tax_vat_paid_last_year", "tax_in_arrears"))
    budgets.spend(both)
    assert budgets.used(both, "tax_in_arrears") == 1
    with pytest.raises(ResourceExhausted) as info:
        budgets.spend(both)
    # all or nothing: the other field was not charged by the refused question
    assert budgets.used(both, "tax_vat_paid_last_year") == 1
    quota = [e for e in info.value.extra if isinstance(e, error_details_pb2.QuotaFailure)]
    assert len(quota) == 1
    (violation,) = quota[0].violations
    assert violation.subject == f"institution:demo-bank/enterprise:{USCC}/field:tax_in_arrears"
    assert "budget of 1" in violation.description
    assert "tax_in_arrears" in info.value.message
    budgets.spend(question())
    budgets.spend(question())
    with pytest.raises(ResourceExhausted):
        budgets.spend(question())
    assert budgets.used(question(), "tax_vat_paid_last_year") == 3


def test_budgets_are_separate_per_grant_institution_and_enterprise(engine: Engine) -> None:
    budgets = VerificationBudgets(engine, BudgetPolicy(budget=1))
    budgets.spend(question())
    for other in (
        question(grant_id=str(uuid.uuid4())),
        question(institution="other-bank"),
        question(uscc="91310000MA1FL8X091"),
        question(("tax_in_arrears",)),
    ):
        budgets.spend(other)
    with pytest.raises(ResourceExhausted):
        budgets.spend(question())


def test_refund_gives_back_an_unanswered_question(engine: Engine) -> None:
    budgets = VerificationBudgets(engine, BudgetPolicy(budget=1))
    budgets.spend(question())
    budgets.refund(question())
    assert budgets.used(question(), "tax_vat_paid_last_year") == 0
    budgets.spend(question())
    budgets.refund(question(("tax_in_arrears",)))  # never spent: stays at 0, no error
    assert budgets.used(question(), "tax_in_arrears") == 0


def test_cache_answers_identical_questions_until_it_expires(engine: Engine) -> None:
    budgets = VerificationBudgets(engine, BudgetPolicy(cache_ttl_s=60))
    q = question()
    assert budgets.cached(q, NOW) is None
    answer = CachedAnswer("true", "single", ("tax",), ("jws-from-tax",))
    budgets.remember(q, answer, NOW)
    assert budgets.cached(q, NOW + dt.timedelta(seconds=59)) == answer
    assert budgets.cached(q, NOW + dt.timedelta(seconds=60)) is None
    assert budgets.cached(question(digest="b" * 64), NOW) is None
    assert budgets.cached(question(institution="other-bank"), NOW) is None
    budgets.remember(q, CachedAnswer("false", "single", ("tax",), ()), NOW)  # replaced
    assert budgets.cached(q, NOW) == CachedAnswer("false", "single", ("tax",), ())


def test_cache_can_be_turned_off(engine: Engine) -> None:
    budgets = VerificationBudgets(engine, BudgetPolicy(cache_ttl_s=0))
    budgets.remember(question(), CachedAnswer("true", "single", ("tax",), ()), NOW)
    assert budgets.cached(question(), NOW) is None


def test_concurrent_spending_never_exceeds_the_budget(engine: Engine) -> None:
    budgets = VerificationBudgets(engine, BudgetPolicy(budget=10))

    def one(_: int) -> bool:
        try:
            budgets.spend(question())
        except ResourceExhausted:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(one, range(40)))
    assert sum(outcomes) == 10
    assert budgets.used(question(), "tax_vat_paid_last_year") == 10


def test_policy_configuration() -> None:
    policy = BudgetPolicy.from_config(
        {"budget": 5, "cache_ttl_s": 10, "field_budgets": {"tax_vat_paid_last_year": 2}}, "p.toml"
    )
    assert policy.limit("tax_vat_paid_last_year") == 2 and policy.limit("x") == 5
    for bad in ({"budget": 0}, {"budget": True}, {"cache_ttl_s": -1}, {"field_budgets": 3}):
        with pytest.raises(ConfigError):
            BudgetPolicy.from_config(bad, "p.toml")


def test_admit_takes_quota_cache_and_budget_in_one_transaction(engine: Engine) -> None:
    """``admit`` = consume_quota, then cached or spend: same outcomes, one commit."""
    from sqlalchemy import event

    from platform_node.registry import InstitutionRegistry

    institutions = InstitutionRegistry(engine)
    institutions.register("demo-bank", "Demo", "bank", ["loan_origination"], 3, "admin", now=NOW)
    budgets = VerificationBudgets(engine, BudgetPolicy(budget=1, cache_ttl_s=60))
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    assert budgets.admit(question(), NOW) is None  # fresh question: budget spent
    assert len(commits) == 1
    assert budgets.used(question(), "tax_vat_paid_last_year") == 1
    assert institutions.quota_remaining("demo-bank", NOW) == 2
    answer = CachedAnswer("true", "single", ("tax",), ())
    budgets.remember(question(), answer, NOW)
    assert budgets.admit(question(), NOW) == answer  # cached: quota yes, budget no
    assert institutions.quota_remaining("demo-bank", NOW) == 1
    with pytest.raises(ResourceExhausted, match="verification budget"):
        budgets.admit(question(digest="c" * 64), NOW)  # budget refused: quota still taken
    assert institutions.quota_remaining("demo-bank", NOW) == 0
    assert budgets.used(question(), "tax_vat_paid_last_year") == 1
    with pytest.raises(ResourceExhausted, match="daily quota"):
        budgets.admit(question(("tax_in_arrears",)), NOW)  # quota refused: nothing spent
    assert budgets.used(question(), "tax_in_arrears") == 0


def test_admit_on_the_callers_transaction_leaves_it_usable_after_a_refusal(
    engine: Engine,
) -> None:
    """The platform admits a question inside the transaction that also consumes the
    caller's assertion: a budget refusal spends no budget (the quota stays taken), no
    statement fails, and the transaction can still commit — on PostgreSQL too."""
    from sqlalchemy import select

    from platform_node.registry import InstitutionRegistry
    from platform_node.registry.schema import institutions as institutions_table
    from platform_node.registry.schema import write_tx

    institutions = InstitutionRegistry(engine)
    institutions.register("demo-bank", "Demo", "bank", ["loan_origination"], 5, "admin", now=NOW)
    budgets = VerificationBudgets(engine, BudgetPolicy(budget=1, cache_ttl_s=0))
    assert budgets.admit(question(), NOW) is None
    with write_tx(engine) as conn:
        with pytest.raises(ResourceExhausted, match="verification budget"):
            budgets.admit(question(digest="d" * 64), NOW, conn)
        assert conn.execute(select(institutions_table.c.id)).scalar_one() == "demo-bank"
        assert institutions.consume_quota("demo-bank", NOW, conn=conn) == 2
    assert institutions.quota_remaining("demo-bank", NOW) == 2
    with write_tx(engine) as conn, pytest.raises(ResourceExhausted, match="daily quota"):
        institutions.consume_quota("demo-bank", NOW, cost=3, conn=conn)
    assert institutions.quota_remaining("demo-bank", NOW) == 2


def test_a_refused_question_spends_no_field_on_the_callers_transaction(engine: Engine) -> None:
    """A question on two fields, one of them exhausted, admitted on the caller's
    transaction (as the platform admits): refused naming that field, and the other
    field's budget is as before once the transaction commits — all or nothing with no
    savepoint and no failed statement, on PostgreSQL too."""
    from platform_node.registry import InstitutionRegistry
    from platform_node.registry.schema import write_tx

    institutions = InstitutionRegistry(engine)
    institutions.register("demo-bank", "Demo", "bank", ["loan_origination"], 50, "admin", now=NOW)
    budgets = VerificationBudgets(
        engine, BudgetPolicy(budget=5, cache_ttl_s=0, field_budgets={"tax_in_arrears": 1})
    )
    both = ("tax_vat_paid_last_year", "tax_in_arrears", "tax_grade")
    assert budgets.admit(question(both), NOW) is None
    before = {f: budgets.used(question(both), f) for f in both}
    assert before == {"tax_vat_paid_last_year": 1, "tax_in_arrears": 1, "tax_grade": 1}
    with write_tx(engine) as conn:
        with pytest.raises(ResourceExhausted) as info:
            budgets.admit(question(both, digest="b" * 64), NOW, conn)
        assert "tax_in_arrears" in info.value.message
        assert "tax_vat_paid_last_year" not in info.value.message
    assert {f: budgets.used(question(both), f) for f in both} == before
    assert institutions.quota_remaining("demo-bank", NOW) == 48  # both questions were asked
    assert (
        budgets.admit(question(("tax_vat_paid_last_year", "tax_grade"), digest="c" * 64), NOW)
        is None
    )
    assert budgets.used(question(both), "tax_grade") == 2
