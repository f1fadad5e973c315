"""Per-institution daily quotas, counted per UTC day, safe under concurrency.

One row per (institution, day) holds ``used``.  Consuming is two statements in one
transaction:

1. make sure the row exists (``INSERT … ON CONFLICT DO NOTHING`` on SQLite and
   PostgreSQL; a savepointed INSERT elsewhere);
2. ``UPDATE … SET used = used + cost WHERE used + cost <= daily_quota``.

The check and the increment are one statement, so no interleaving of concurrent callers
can pass the limit: PostgreSQL re-evaluates the WHERE clause on the row version left by
a concurrent committed UPDATE (READ COMMITTED), SQLite runs writers one at a time.  When
the UPDATE matches no row the quota would be exceeded, and the transaction is rolled
back, consuming nothing.
"""

from __future__ import annotations

import datetime as dt

from google.rpc import error_details_pb2
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from platform_node.registry.schema import institutions, quota_usage
from veil.errors import NotFound, ResourceExhausted

__all__ = ["consume", "used_on"]


def _ensure_row(conn: Connection, institution_id: str, day: dt.date) -> None:
    values = {"institution_id": institution_id, "day": day, "used": 0}
    name = conn.dialect.name
    if name == "postgresql":
        conn.execute(postgresql.insert(quota_usage).values(**values).on_conflict_do_nothing())
    elif name == "sqlite":
        conn.execute(sqlite.insert(quota_usage).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - other backends
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
    limit = conn.execute(
        select(institutions.c.daily_quota).where(institutions.c.id == institution_id)
    ).scalar_one_or_none()
    if limit is None:
        raise NotFound(f"no institution {institution_id!r}")
    day = now.date()
    _ensure_row(conn, institution_id, day)
    key = (quota_usage.c.institution_id == institution_id) & (quota_usage.c.day == day)
    limit_now = (
        select(institutions.c.daily_quota)
        .where(institutions.c.id == institution_id)
        .scalar_subquery()
    )
    result = conn.execute(
        update(quota_usage)
        .where(key, quota_usage.c.used + cost <= limit_now)
        .values(used=quota_usage.c.used + cost)
    )
    if result.rowcount != 1:
        used = conn.execute(select(quota_usage.c.used).where(key)).scalar_one()
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
    row = conn.execute(
        select(quota_usage.c.used, institutions.c.daily_quota)
        .join(institutions, institutions.c.id == quota_usage.c.institution_id)
        .where(key)
    ).one()
    return int(row.daily_quota) - int(row.used)


def used_on(conn: Connection, institution_id: str, day: dt.date) -> int:
    """How much of ``day``'s quota the institution has used (0 when nothing yet)."""
    used = conn.execute(
        select(quota_usage.c.used).where(
            quota_usage.c.institution_id == institution_id, quota_usage.c.day == day
        )
    ).scalar_one_or_none()
    return int(used or 0)
