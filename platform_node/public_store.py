"""The platform's store of physically aggregated (物理归集) public records.

Records are kept as the serialized ``veil.v1.Record`` they arrived as, so the values
a provider sent (decimals, dates) come back bit for bit.  A dataset is replaced as a
whole inside one transaction: a failed aggregation leaves the previous copy intact.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    insert,
    select,
)

from veil.v1 import common_pb2

metadata = MetaData()

public_records = Table(
    "platform_public_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dataset_id", String(64), nullable=False),
    Column("uscc", String(18), nullable=False, index=True),
    Column("source", String(64), nullable=False),
    Column("record", LargeBinary, nullable=False),
)

aggregation_runs = Table(
    "platform_aggregation_runs",
    metadata,
    Column("dataset_id", String(64), primary_key=True),
    Column("source", String(64), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
)

INSERT_CHUNK = 5000


@dataclass(frozen=True)
class AggregationRun:
    dataset_id: str
    source: str
    rows: int
    finished_at: dt.datetime


class PublicStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def replace_dataset(
        self,
        dataset_id: str,
        source: str,
        rows: Iterable[tuple[str, common_pb2.Record]],
        at: dt.datetime | None = None,
    ) -> int:
        """Atomically replace every stored row of ``dataset_id`` with ``rows``."""
        count = 0
        with self.engine.begin() as conn:
            conn.execute(delete(public_records).where(public_records.c.dataset_id == dataset_id))
            chunk: list[dict[str, object]] = []
            for uscc, record in rows:
                chunk.append(
                    {
                        "dataset_id": dataset_id,
                        "uscc": uscc,
                        "source": source,
                        "record": record.SerializeToString(deterministic=True),
                    }
                )
                if len(chunk) >= INSERT_CHUNK:
                    conn.execute(insert(public_records), chunk)
                    count += len(chunk)
                    chunk = []
            if chunk:
                conn.execute(insert(public_records), chunk)
                count += len(chunk)
            conn.execute(
                delete(aggregation_runs).where(aggregation_runs.c.dataset_id == dataset_id)
            )
            conn.execute(
                insert(aggregation_runs).values(
                    dataset_id=dataset_id,
                    source=source,
                    rows=count,
                    finished_at=at or dt.datetime.now(dt.UTC),
                )
            )
        return count

    def records_for(self, uscc: str) -> dict[str, list[common_pb2.Record]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(public_records.c.dataset_id, public_records.c.record)
                .where(public_records.c.uscc == uscc)
                .order_by(public_records.c.id)
            ).all()
        out: dict[str, list[common_pb2.Record]] = {}
        for dataset_id, blob in rows:
            out.setdefault(dataset_id, []).append(common_pb2.Record.FromString(blob))
        return out

    def runs(self) -> list[AggregationRun]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(aggregation_runs)).all()
        return [AggregationRun(r.dataset_id, r.source, r.rows, r.finished_at) for r in rows]

    def total_rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(public_records)).scalar_one())
