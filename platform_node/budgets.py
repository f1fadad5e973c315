"""Verification budgets and the answer cache: the platform's reconstruction defence.

Every verification answer is information about a hidden value; enough threshold
questions rebuild it (binary search).  Two measures bound what an institution can learn:

* **Coarse thresholds** (:mod:`veil.claims_grid`): claims are snapped to the published
  grid before anything else, so answers depend only on the grid cell of each value.
* **Budgets**: each (grant, institution, enterprise, field) may be asked about at most
  ``budget`` times (per field override: ``field_budgets``).  The grant is the
  authorization window: a new window needs a new grant signed by the enterprise.  A
  question reading several fields spends one unit of each, all or nothing; a question
  that would exceed any of them is refused with RESOURCE_EXHAUSTED carrying a
  ``google.rpc.QuotaFailure`` naming every exhausted (enterprise, field).
* **Cache**: an identical question (same grant, institution, enterprise and snapped
  claim hash) within ``cache_ttl_s`` is answered from here without asking a provider
  and without spending budget — repeating a question reveals nothing new, and a fresh
  answer to it would (the value may have changed).

Spending happens before the providers are asked; if they cannot answer (a provider is
down) the spend is refunded, since nothing was learned.  Tables live in the platform's
store (SQLite or PostgreSQL) and are created on first use.

:meth:`VerificationBudgets.admit` does a request's whole admission — the institution's
daily quota, the cache look-up and the spend — in one write transaction: one commit (one
``fsync`` with SQLite's ``synchronous=FULL``) per question instead of two.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.rpc import error_details_pb2
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from platform_node.registry import quota
from platform_node.registry.schema import write_tx
from veil.errors import ConfigError, ResourceExhausted

__all__ = ["BudgetPolicy", "CachedAnswer", "VerificationBudgets"]

DEFAULT_BUDGET = 20
DEFAULT_CACHE_TTL_S = 24 * 3600

metadata = MetaData()
budget_usage = Table(
    "verification_budget",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("institution", String(64), primary_key=True),
    Column("uscc", String(18), primary_key=True),
    Column("field", String(128), primary_key=True),
    Column("used", Integer, nullable=False),
)
answer_cache = Table(
    "verification_cache",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("institution", String(64), primary_key=True),
    Column("uscc", String(18), primary_key=True),
    Column("claims_sha256", String(64), primary_key=True),
    Column("result", String(16), nullable=False),
    Column("protocol", String(16), nullable=False),
    Column("providers", Text, nullable=False),
    Column("attestations", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


# The hot statements, built once with bind parameters: SQLAlchemy then reuses their
# compiled form and cache key instead of rebuilding both on every question.
_WHO = (
    budget_usage.c.grant_id == bindparam("b_grant"),
    budget_usage.c.institution == bindparam("b_institution"),
    budget_usage.c.uscc == bindparam("b_uscc"),
)
_SPEND = (
    update(budget_usage)
    .where(
        *_WHO,
        budget_usage.c.field.in_(bindparam("b_fields", expanding=True)),
        budget_usage.c.used < bindparam("b_limit"),
    )
    .values(used=budget_usage.c.used + 1)
)
_SPEND_RETURNING = _SPEND.returning(budget_usage.c.field)
_UNSPEND = (
    update(budget_usage)
    .where(*_WHO, budget_usage.c.field.in_(bindparam("b_fields", expanding=True)))
    .values(used=budget_usage.c.used - 1)
)
_CACHE_KEY = (
    answer_cache.c.grant_id == bindparam("c_grant"),
    answer_cache.c.institution == bindparam("c_institution"),
    answer_cache.c.uscc == bindparam("c_uscc"),
    answer_cache.c.claims_sha256 == bindparam("c_claims"),
)
_CACHED = select(answer_cache).where(*_CACHE_KEY)
_FORGET = delete(answer_cache).where(*_CACHE_KEY)
_REMEMBER = insert(answer_cache)
_ENSURE = {
    "sqlite": sqlite.insert(budget_usage).values(used=0).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(budget_usage).values(used=0).on_conflict_do_nothing(),
}


@dataclass(frozen=True)
class BudgetPolicy:
    budget: int = DEFAULT_BUDGET
    field_budgets: Mapping[str, int] = field(default_factory=dict)
    cache_ttl_s: int = DEFAULT_CACHE_TTL_S

    def limit(self, field_id: str) -> int:
        return self.field_budgets.get(field_id, self.budget)

    @classmethod
    def from_config(cls, section: Mapping[str, object], path: str) -> BudgetPolicy:
        """``[verification] budget = 20``, ``cache_ttl_s = 86400`` and
        ``[verification.field_budgets] tax_vat_paid_last_year = 8``."""

        def count(key: str, value: object, minimum: int) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(path, f"verification.{key}", f"must be an integer ≥ {minimum}")
            return value

        overrides = section.get("field_budgets", {})
        if not isinstance(overrides, Mapping):
            raise ConfigError(path, "verification.field_budgets", "must be a table")
        return cls(
            budget=count("budget", section.get("budget", DEFAULT_BUDGET), 1),
            field_budgets={str(k): count(f"field_budgets.{k}", v, 0) for k, v in overrides.items()},
            cache_ttl_s=count("cache_ttl_s", section.get("cache_ttl_s", DEFAULT_CACHE_TTL_S), 0),
        )


@dataclass(frozen=True)
class CachedAnswer:
    result: str
    protocol: str
    providers: tuple[str, ...]
    attestations: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    """Who asks what about whom, under which grant (the budget and cache key)."""

    grant_id: str
    institution: str
    uscc: str
    claims_sha256: str
    fields: tuple[str, ...]


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class VerificationBudgets:
    def __init__(self, engine: Engine, policy: BudgetPolicy) -> None:
        self.engine = engine
        self.policy = policy
        metadata.create_all(engine)

    # --- admission ---

    def admit(
        self, q: Question, now: dt.datetime | None = None, conn: Connection | None = None
    ) -> CachedAnswer | None:
        """Consume one unit of the institution's daily quota, then answer from the cache
        or spend the budget, in one write transaction (its own, or ``conn``).

        A quota refusal takes nothing (:func:`quota.take` writes at most today's zero
        usage row, and no statement fails); a budget refusal (``ResourceExhausted``
        naming each field, with a ``QuotaFailure``) still takes the quota — the question
        was asked — and spends no budget (:meth:`_spend` gives back, in the same
        transaction, what it took from the fields that were not exhausted).  No
        statement fails either way, so on ``conn`` the caller's transaction stays usable
        and must be committed after a refusal (what the platform's admission does: the
        caller's assertion commits with it).
        """
        if conn is None:
            refusal: ResourceExhausted | None = None
            with write_tx(self.engine) as own:
                try:
                    return self.admit(q, now, own)
                except ResourceExhausted as exc:
                    refusal = exc  # commit what was taken (the quota), then refuse
            raise refusal
        at = _now(now)
        quota.take(conn, q.institution, at, 1)
        found = self._cached(conn, q, at)
        if found is None:
            self._spend(conn, q)
        return found

    # --- cache ---

    def cached(self, q: Question, now: dt.datetime | None = None) -> CachedAnswer | None:
        """The remembered answer to exactly this question, if still fresh."""
        with self.engine.connect() as conn:
            return self._cached(conn, q, _now(now))

    def _cached(self, conn: Connection, q: Question, now: dt.datetime) -> CachedAnswer | None:
        row = conn.execute(_CACHED, self._cache_key(q)).first()
        if row is None or _aware(row.expires_at) <= now:
            return None
        return CachedAnswer(
            result=row.result,
            protocol=row.protocol,
            providers=tuple(json.loads(row.providers)),
            attestations=tuple(json.loads(row.attestations)),
        )

    def remember(
        self,
        q: Question,
        answer: CachedAnswer,
        now: dt.datetime | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Cache ``answer`` to ``q`` for ``cache_ttl_s`` (in its own transaction, or on
        ``conn``: the platform writes it along the question's log entry)."""
        if self.policy.cache_ttl_s == 0:
            return
        values = self._cache_values(answer, now)
        if conn is None:
            with self.engine.begin() as own:
                self._remember(own, q, values)
        else:
            self._remember(conn, q, values)

    def _cache_values(self, answer: CachedAnswer, now: dt.datetime | None) -> dict[str, Any]:
        return {
            "result": answer.result,
            "protocol": answer.protocol,
            "providers": json.dumps(list(answer.providers)),
            "attestations": json.dumps(list(answer.attestations)),
            "expires_at": _now(now) + dt.timedelta(seconds=self.policy.cache_ttl_s),
        }

    def _remember(self, conn: Connection, q: Question, values: dict[str, Any]) -> None:
        key = self._cache_key(q)
        conn.execute(_FORGET, key)
        conn.execute(
            _REMEMBER,
            {
                "grant_id": q.grant_id,
                "institution": q.institution,
                "uscc": q.uscc,
                "claims_sha256": q.claims_sha256,
                **values,
            },
        )

    @staticmethod
    def _cache_key(q: Question) -> dict[str, str]:
        return {
            "c_grant": q.grant_id,
            "c_institution": q.institution,
            "c_uscc": q.uscc,
            "c_claims": q.claims_sha256,
        }

    # --- budgets ---

    def spend(self, q: Question) -> None:
        """Spend one unit of every field's budget, all or nothing.

        Raises :class:`~veil.errors.ResourceExhausted` with a ``QuotaFailure`` listing
        each field whose budget is used up (the transaction is rolled back).
        """
        with self.engine.begin() as conn:
            self._spend(conn, q)

    def _spend(self, conn: Connection, q: Question) -> None:
        """One guarded ``UPDATE … RETURNING field`` per distinct limit (usually one for
        the whole question) instead of two statements per field.  All or nothing: when
        a field is exhausted, what the others took is given back (one more ``UPDATE``,
        on the rows this transaction holds) before the refusal is raised, so the
        caller's transaction needs no savepoint."""
        fields = sorted(set(q.fields))
        self._ensure(conn, q, fields)
        who = {"b_grant": q.grant_id, "b_institution": q.institution, "b_uscc": q.uscc}
        by_limit: dict[int, list[str]] = {}
        for field_id in fields:
            by_limit.setdefault(self.policy.limit(field_id), []).append(field_id)
        exhausted: list[tuple[str, int]] = []
        taken: list[str] = []
        for limit, group in by_limit.items():
            if conn.dialect.update_returning:
                spent = set(
                    conn.execute(
                        _SPEND_RETURNING, {**who, "b_fields": group, "b_limit": limit}
                    ).scalars()
                )
            else:  # pragma: no cover - backends without UPDATE … RETURNING
                spent = {
                    f
                    for f in group
                    if conn.execute(_SPEND, {**who, "b_fields": [f], "b_limit": limit}).rowcount
                }
            exhausted += [(f, limit) for f in group if f not in spent]
            taken += [f for f in group if f in spent]
        if exhausted:
            if taken:
                conn.execute(_UNSPEND, {**who, "b_fields": taken})
            raise self._exhausted(q, sorted(exhausted))

    def refund(self, q: Question) -> None:
        """Give back what :meth:`spend` took (the question was not answered)."""
        with self.engine.begin() as conn:
            for field_id in sorted(set(q.fields)):
                conn.execute(
                    update(budget_usage)
                    .where(*self._key(q, field_id), budget_usage.c.used > 0)
                    .values(used=budget_usage.c.used - 1)
                )

    def used(self, q: Question, field_id: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(budget_usage.c.used).where(*self._key(q, field_id))
            ).scalar_one_or_none()
        return int(value or 0)

    @staticmethod
    def _key(q: Question, field_id: str) -> list[ColumnElement[bool]]:
        return [
            budget_usage.c.grant_id == q.grant_id,
            budget_usage.c.institution == q.institution,
            budget_usage.c.uscc == q.uscc,
            budget_usage.c.field == field_id,
        ]

    @staticmethod
    def _ensure(conn: Connection, q: Question, fields: Sequence[str]) -> None:
        """Make sure a usage row exists for each field (one executemany)."""
        rows = [
            {"grant_id": q.grant_id, "institution": q.institution, "uscc": q.uscc, "field": f}
            for f in fields
        ]
        name = conn.dialect.name
        if name in _ENSURE:
            conn.execute(_ENSURE[name], rows)
        else:  # pragma: no cover - other backends
            for row in rows:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(budget_usage).values(used=0, **row))
                except IntegrityError:
                    pass

    def _exhausted(self, q: Question, fields: Sequence[tuple[str, int]]) -> ResourceExhausted:
        violations = [
            error_details_pb2.QuotaFailure.Violation(
                subject=f"institution:{q.institution}/enterprise:{q.uscc}/field:{field_id}",
                description=(
                    f"verification budget of {limit} questions on {field_id} under grant "
                    f"{q.grant_id} is used up"
                ),
            )
            for field_id, limit in fields
        ]
        names = ", ".join(f for f, _ in fields)
        return ResourceExhausted(
            f"verification budget exhausted for {names} of enterprise {q.uscc} under grant "
            f"{q.grant_id}: repeated questions are answered from the cache, new ones need a "
            "new authorization window",
            details={
                "grant_id": q.grant_id,
                "uscc": q.uscc,
                "fields": ",".join(f for f, _ in fields),
            },
            extra=[error_details_pb2.QuotaFailure(violations=violations)],
        )
