"""Key rotation is an event: the platform logs when its signing keys change.

At start the platform compares the key ids it now publishes (request-token / result keys,
the log's checkpoint key and the Paillier keys providers encrypt partial scores and
verification contributions to) with those it published last time, kept in its own store,
and appends a ``key.rotated`` entry to the transparency log when they differ — so an
auditor sees every key the platform ever signed with, and when it appeared.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, Text, select

from platform_node.audit import AuditLog
from veil.audit.entry import AuditEvent, EventType

metadata = MetaData()
published_keys = Table(
    "platform_published_keys",
    metadata,
    Column("purpose", String(32), primary_key=True),
    Column("kids", Text, nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
)


def _swap(engine: Engine, purpose: str, kids: str) -> str | None:
    """Store ``kids`` for ``purpose``; return the previous value when it changed."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        row = conn.execute(
            select(published_keys.c.kids).where(published_keys.c.purpose == purpose)
        ).first()
        if row is not None and row.kids == kids:
            return None
        previous = row.kids if row is not None else ""
        conn.execute(published_keys.delete().where(published_keys.c.purpose == purpose))
        conn.execute(
            published_keys.insert().values(
                purpose=purpose, kids=kids, since=dt.datetime.now(dt.UTC)
            )
        )
        return previous


async def record_key_changes(engine: Engine, audit: AuditLog, keys: dict[str, list[str]]) -> None:
    """Log a ``key.rotated`` entry for each purpose whose published key ids changed."""
    for purpose, kids in sorted(keys.items()):
        text = ",".join(f"kid:{k}" for k in sorted(kids))
        previous = await asyncio.to_thread(_swap, engine, purpose, text)
        if previous is None:
            continue
        await audit.record(
            AuditEvent(
                type=EventType.KEY_ROTATED,
                actor=audit.actor,
                detail={"purpose": purpose, "kids": text, "previous": previous or "none"},
            )
        )
