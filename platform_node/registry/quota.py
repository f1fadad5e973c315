"""Per-institution daily quotas, counted per UTC day, safe under concurrency.

One row per (institution, day) holds ``used``.  Consuming is, in one transaction:

1. ``UPDATE … SET used = used + cost WHERE used + cost <= daily_quota`` — usually the
   only statement;
2. when it matched no row: the institution is read (:class:`NotFound` if unknown), the
   day's row made (``INSERT … ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL; a
   savepointed INSERT elsewhere), and the UPDATE run once more.

The check and the increment are one statement, so no interleaving of concurrent callers
can pass the limit: PostgreSQL re-evaluates the WHERE clause on the row version left by
a concurrent committed UPDATE (READ COMMITTED), SQLite runs writers one at a time.  When
the UPDATE matches no row the quota would be exceeded, and the transaction is rolled
back, consuming nothing.
"""

from __future__ import annotations

import datetime as dt

from google.rpc import error_details_pb2
from sqlalchemy import BindParameter, Connection, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from platform_node.registry.schema import institutions, quota_usage
from veil.errors import NotFound, ResourceExhausted

__all__ = ["consume", "take", "used_on"]


# Statements built once with bind parameters (``q_inst``, ``q_day``, ``q_cost``): a
# request then reuses their compiled form and cache key instead of rebuilding both.
_ID: BindParameter[str] = bindparam("q_inst")
_KEY = (quota_usage.c.institution_id == _ID) & (quota_usage.c.day == bindparam("q_day"))
_LIMIT = select(institutions.c.daily_quota).where(institutions.c.id == _ID)
_ENSURE = {
    "postgresql": postgresql.insert(quota_usage)
    .values(institution_id=_ID, day=bindparam("q_day"), used=0)
    .on_conflict_do_nothing(),
    "sqlite": sqlite.insert(quota_usage)
    .values(institution_id=_ID, day=bindparam("q_day"), used=0)
    .on_conflict_do_nothing(),
}
_TAKE = (
    update(quota_usage)
    .where(_KEY, quota_usage.c.used + bindparam("q_cost") <= _LIMIT.scalar_subquery())
    .values(used=quota_usage.c.used + bindparam("q_cost"))
)
_USED = select(quota_usage.c.used).where(_KEY)
_REMAINING = (
    select(quota_usage.c.used, institutions.c.daily_quota)
    .join(institutions, institutions.c.id == quota_usage.c.institution_id)
    .where(_KEY)
)


def _ensure_row(conn: Connection, institution_id: str, day: dt.date) -> None:
    name = conn.dialect.name
    if name in _ENSURE:
        conn.execute(_ENSURE[name], {"q_inst": institution_id, "q_day": day})
    else:  # pragma: no cover - other backends
        values = {"institution_id": institution_id, "day": day, "used": 0}
        try:
            with conn.begin_nested():
                conn.execute(insert(quota_usage).values(**values))
        except IntegrityError:
            pass


def consume(conn: Connection, institution_id: str, now: dt.datetime, cost: int) -> int:
    """Consume ``cost`` of today's quota inside ``conn``'s transaction; return what remains.

    Raises :class:`~veil.errors.ResourceExhausted` (details: institution, limit, day) when
    it would exceed the daily quota; the caller's transaction must then be rolled back.
    """
    take(conn, institution_id, now, cost)
    row = conn.execute(_REMAINING, {"q_inst": institution_id, "q_day": now.date()}).one()
    return int(row.daily_quota) - int(row.used)


def take(conn: Connection, institution_id: str, now: dt.datetime, cost: int) -> None:
    """:func:`consume` for a caller that does not need what remains.  Usually one
    statement: the guarded UPDATE of today's row; only when it matches nothing (the
    day's first request, an unknown institution, or the quota used up) are the
    institution read and today's row made.  A refusal writes nothing but today's (zero)
    usage row."""
    day = now.date()
    key = {"q_inst": institution_id, "q_day": day}
    if conn.execute(_TAKE, {**key, "q_cost": cost}).rowcount == 1:
        return
    limit = conn.execute(_LIMIT, {"q_inst": institution_id}).scalar_one_or_none()
    if limit is None:
        raise NotFound(f"no institution {institution_id!r}")
    _ensure_row(conn, institution_id, day)
    if conn.execute(_TAKE, {**key, "q_cost": cost}).rowcount != 1:
        used = conn.execute(_USED, key).scalar_one()
        violation = error_details_pb2.QuotaFailure.Violation(
            subject=f"institution:{institution_id}",
            description=f"daily quota {limit} for {day.isoformat()} (UTC) used up ({used} used)",
        )
        raise ResourceExhausted(
            f"institution {institution_id!r} has used {used} of its daily quota of {limit} "
            f"for {day.isoformat()} (UTC); {cost} more would exceed it",
            details={"institution": institution_id, "limit": str(limit), "day": day.isoformat()},
            extra=[error_details_pb2.QuotaFailure(violations=[violation])],
        )


def used_on(conn: Connection, institution_id: str, day: dt.date) -> int:
    """How much of ``day``'s quota the institution has used (0 when nothing yet)."""
    used = conn.execute(
        select(quota_usage.c.used).where(
            quota_usage.c.institution_id == institution_id, quota_usage.c.day == day
        )
    ).scalar_one_or_none()
    return int(used or 0)
