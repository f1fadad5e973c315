"""The platform's tables as one Alembic history (``platform_node/migrations``).

Every table the platform keeps in its store: registries of institutions, grants and
letters; budgets and quotas; models; batch jobs; the public store; key events; the
transparency log and its search index.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import MetaData

from veil.migrations import SchemaHistory


def _metadata() -> Sequence[MetaData]:
    from platform_node import batch, budgets, key_events, public_store
    from platform_node.audit import INDEX_TABLE_PREFIX, LOG_TABLE_PREFIX
    from platform_node.audit_index import IndexTables
    from platform_node.models import registry as models
    from platform_node.registry import schema as registry
    from veil.tlog.schema import Tables

    return [
        registry.metadata,
        budgets.metadata,
        key_events.metadata,
        public_store.metadata,
        batch.metadata,
        models.metadata,
        Tables(LOG_TABLE_PREFIX).metadata,
        IndexTables(INDEX_TABLE_PREFIX).metadata,
    ]


PLATFORM_SCHEMA = SchemaHistory("platform", "platform_node:migrations", _metadata)
