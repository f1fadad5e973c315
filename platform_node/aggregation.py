"""Physical aggregation (物理归集): pull public datasets from providers into the platform.

Each dataset is streamed from its provider, then replaced atomically in the platform's
public store: a stream that breaks half way leaves the previous copy untouched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid

from platform_node.audit import AuditLog
from platform_node.providers import ProviderRegistry
from platform_node.public_store import PublicStore
from veil.errors import VeilError
from veil.v1 import common_pb2

log = logging.getLogger("veil.platform.aggregation")

RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0


async def aggregate_provider(
    registry: ProviderRegistry, store: PublicStore, name: str, audit: AuditLog
) -> int:
    """Pull every physically aggregated dataset ``name`` holds; returns rows stored.

    Every run is recorded in the transparency log (datasets and row counts stored,
    the request id the provider saw), whether it succeeded or not.
    """
    link = registry.link(name)
    request_id = uuid.uuid4().hex
    stored: dict[str, int] = {}
    try:
        await _pull(registry, store, name, request_id, stored)
    except BaseException as exc:
        await audit.aggregation(name, request_id, stored, exc)
        raise
    await audit.aggregation(name, request_id, stored)
    total = sum(stored.values())
    link.last_aggregated_at = dt.datetime.now(dt.UTC)
    link.last_error = ""
    return total


async def _pull(
    registry: ProviderRegistry,
    store: PublicStore,
    name: str,
    request_id: str,
    stored: dict[str, int],
) -> None:
    pending: dict[str, list[tuple[str, common_pb2.Record]]] = {}
    async for batch in registry.export_aggregated(name, request_id):
        rows = pending.setdefault(batch.dataset_id, [])
        rows.extend(zip(batch.usccs, batch.records, strict=True))
        if batch.last_of_dataset:
            complete = pending.pop(batch.dataset_id)
            if len(complete) != batch.total_in_dataset:
                raise VeilError(
                    f"provider {name!r} sent {len(complete)} rows of {batch.dataset_id} "
                    f"but announced {batch.total_in_dataset}"
                )
            stored[batch.dataset_id] = await asyncio.to_thread(
                store.replace_dataset, batch.dataset_id, name, complete
            )
    if pending:
        raise VeilError(f"provider {name!r} ended the export before finishing {sorted(pending)}")


async def aggregate_forever(
    registry: ProviderRegistry, store: PublicStore, interval_s: float, audit: AuditLog
) -> None:
    """Aggregate every provider at start (retrying until it answers), then periodically."""
    pending = set(registry.links)
    delay = RETRY_INITIAL_S
    while True:
        for name in sorted(pending):
            try:
                rows = await aggregate_provider(registry, store, name, audit)
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
