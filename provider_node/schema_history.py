"""A provider's own tables as one Alembic history (``provider_node/migrations``).

The tables Veil keeps beside a unit's records, in the ledger's database (``[ledger]
url``, by default the unit's store): the ledger of every use of its data, the request
ids and revocations its guard has seen, the model parts it scores with, its warm
randomizer pools.  The unit's own tables are the unit's, never migrated by Veil.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import MetaData

from veil.migrations import SchemaHistory


def _metadata() -> Sequence[MetaData]:
    from provider_node import guard, ledger, scoring, warm_pools

    return [ledger.metadata, guard.metadata, scoring.metadata, warm_pools.metadata]


PROVIDER_SCHEMA = SchemaHistory("provider", "provider_node:migrations", _metadata)
