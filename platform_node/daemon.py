"""Run the platform node: ``create_server(config) -> (server, port)`` and ``serve(config)``."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from platform_node.aggregation import aggregate_forever
from platform_node.providers import ProviderRegistry
from platform_node.public_store import PublicStore
from platform_node.service import PlatformServicer
from veil.catalog import load_catalog
from veil.config import NodeConfig
from veil.errors import ConfigError
from veil.metrics import MetricsInterceptor, serve_metrics
from veil.node import RunningNode
from veil.server import ServiceBinding
from veil.server import create_server as create_grpc_server
from veil.store import make_engine
from veil.v1 import platform_pb2, platform_pb2_grpc

ALLOWED_ROLES = frozenset({"gateway", "admin"})
DEFAULT_AGGREGATE_INTERVAL_S = 3600.0


def aggregate_interval(config: NodeConfig) -> float | None:
    """Seconds between physical aggregations; ``None`` when turned off (0)."""
    value = config.section("platform").get("aggregate_interval_s", DEFAULT_AGGREGATE_INTERVAL_S)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            str(config.path), "platform.aggregate_interval_s", "must be a number ≥ 0 (0: off)"
        )
    return float(value) or None


async def create_node(config: NodeConfig) -> RunningNode:
    if not config.store_url:
        raise ConfigError(str(config.path), "store.url", "is required for the platform")
    interval = aggregate_interval(config)
    catalog = load_catalog()
    registry = ProviderRegistry(config.peers, config.tls, config.call_timeout_s)
    store = PublicStore(make_engine(config.store_url))
    servicer = PlatformServicer(catalog, registry, store)
    binding = ServiceBinding(
        name=platform_pb2.DESCRIPTOR.services_by_name["PlatformService"].full_name,
        register=lambda server: platform_pb2_grpc.add_PlatformServiceServicer_to_server(
            servicer, server
        ),
    )
    server, port, health = await create_grpc_server(
        config.listen,
        config.tls,
        [binding],
        allowed_roles=ALLOWED_ROLES,
        extra_interceptors=[MetricsInterceptor()],
    )
    serve_metrics(config.metrics_listen)
    task = (
        asyncio.create_task(aggregate_forever(registry, store, interval))
        if interval is not None
        else None
    )

    async def stop_background() -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await registry.close()

    return RunningNode(server, port, health, on_stop=stop_background)


async def create_server(config: NodeConfig) -> tuple[grpc.aio.Server, int]:
    node = await create_node(config)
    return node.server, node.port


async def serve(config: NodeConfig) -> None:
    node = await create_node(config)
    await node.serve_until_signal(config.grace_s)
