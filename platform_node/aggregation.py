"""Physical aggregation (物理归集): pull public datasets from providers into the platform.

Each dataset is streamed from its provider, then replaced atomically in the platform's
public store: a stream that breaks half way leaves the previous copy untouched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

from platform_node.providers import ProviderRegistry
from platform_node.public_store import PublicStore
from veil.errors import VeilError
from veil.v1 import common_pb2

log = logging.getLogger("veil.platform.aggregation")

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0


async def aggregate_provider(registry: ProviderRegistry, store: PublicStore, name: str) -> int:
    """Pull every physically aggregated dataset ``name`` holds; returns rows stored."""
    link = registry.link(name)
    total = 0
    pending: dict[str, list[tuple[str, common_pb2.Record]]] = {}
    async for batch in registry.export_aggregated(name, uuid.uuid4().hex):
        rows = pending.setdefault(batch.dataset_id, [])
        rows.extend(zip(batch.usccs, batch.records, strict=True))
        if batch.last_of_dataset:
            complete = pending.pop(batch.dataset_id)
            if len(complete) != batch.total_in_dataset:
                raise VeilError(
                    f"provider {name!r} sent {len(complete)} rows of {batch.dataset_id} "
                    f"but announced {batch.total_in_dataset}"
                )
            total += await asyncio.to_thread(
                store.replace_dataset, batch.dataset_id, name, complete
            )
    if pending:
        raise VeilError(f"provider {name!r} ended the export before finishing {sorted(pending)}")
    link.last_aggregated_at = dt.datetime.now(dt.UTC)
    link.last_error = ""
    return total


async def aggregate_forever(
    registry: ProviderRegistry, store: PublicStore, interval_s: float
) -> None:
    """Aggregate every provider at start (retrying until it answers), then periodically."""
    pending = set(registry.links)
    delay = RETRY_INITIAL_S
    while True:
        for name in sorted(pending):
            try:
                rows = await aggregate_provider(registry, store, name)
                log.info("aggregated %d public rows from provider %s", rows, name)
                pending.discard(name)
            except VeilError as exc:
                registry.links[name].last_error = exc.message
                log.warning("aggregation from %s failed: %s", name, exc.message)
        if pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
            continue
        await asyncio.sleep(interval_s)
        pending = set(registry.links)
        delay = RETRY_INITIAL_S
