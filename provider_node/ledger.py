"""The provider's own ledger: every request it answered or refused, in its own store.

The plan requires that every use of a unit's data is fed back to it (反馈数据提供单位).
The unit does not have to trust the platform's account of that: this ledger is the
unit's independent record, later reconciled against the platform's transparency log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

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
    insert,
    select,
)

from veil.config import NodeConfig
from veil.store.engine import make_engine

metadata = MetaData()

ledger_table = Table(
    "veil_provider_ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("request_id", String(64), nullable=False, index=True),
    Column("method", String(64), nullable=False),
    Column("caller", String(128), nullable=False),
    Column("uscc", String(18), nullable=True, index=True),
    Column("datasets", Text, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)


_INSERT = insert(ledger_table)  # built once; the values come as parameters


@dataclass(frozen=True)
class LedgerEntry:
    at: dt.datetime
    request_id: str
    method: str
    caller: str
    uscc: str | None
    datasets: tuple[str, ...]
    outcome: str
    detail: str


def ledger_url(config: NodeConfig) -> str:
    """``[ledger] url``: where the node keeps its ledger and its other tables; by default
    the unit's own store (``[store] url``)."""
    return str(config.section("ledger").get("url", config.store_url))


class Ledger:
    """Append-only record of requests, one row per request, written before answering."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    @classmethod
    def open(cls, url: str) -> Ledger:
        return cls(make_engine(url))  # SQLite: WAL and a busy timeout (veil.store.engine)

    def record(
        self,
        *,
        request_id: str,
        method: str,
        caller: str,
        uscc: str | None,
        datasets: Sequence[str],
        outcome: str,
        detail: str = "",
        at: dt.datetime | None = None,
        conn: Connection | None = None,
    ) -> None:
        """Append one row, committed before this returns — or, with ``conn``, as part of
        that open transaction (:meth:`provider_node.guard.Guard.claimed`: the replay claim
        and the ledger row of one request commit together)."""
        row = {
            "at": at or dt.datetime.now(dt.UTC),
            "request_id": request_id,
            "method": method,
            "caller": caller,
            "uscc": uscc,
            "datasets": ",".join(datasets),
            "outcome": outcome,
            "detail": detail,
        }
        if conn is not None:
            conn.execute(_INSERT, row)
            return
        with self.engine.begin() as own:
            own.execute(_INSERT, row)

    def entries(self, limit: int = 1000) -> list[LedgerEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ledger_table).order_by(ledger_table.c.id.desc()).limit(limit)
            ).all()
        return [
            LedgerEntry(
                at=row.at,
                request_id=row.request_id,
                method=row.method,
                caller=row.caller,
                uscc=row.uscc,
                datasets=tuple(d for d in row.datasets.split(",") if d),
                outcome=row.outcome,
                detail=row.detail,
            )
            for row in rows
        ]
