"""Run a provider node: ``create_server(config) -> (server, port)`` and ``serve(config)``."""

from __future__ import annotations

import grpc

from provider_node.ledger import Ledger
from provider_node.service import ProviderServicer
from provider_node.settings import provider_settings
from veil.catalog import load_catalog
from veil.config import NodeConfig
from veil.metrics import MetricsInterceptor, serve_metrics
from veil.node import RunningNode
from veil.server import ServiceBinding
from veil.server import create_server as create_grpc_server
from veil.store import ProviderStore, load_mapping
from veil.v1 import provider_pb2, provider_pb2_grpc

ALLOWED_ROLES = frozenset({"platform"})


def build_servicer(config: NodeConfig) -> ProviderServicer:
    settings = provider_settings(config)
    catalog = load_catalog()
    mapping = settings.mapping.removeprefix("builtin:")
    store = ProviderStore(config.store_url, load_mapping(mapping, catalog), catalog)
    ledger_url = config.section("ledger").get("url", config.store_url)
    return ProviderServicer(settings.unit, catalog, store, Ledger.open(str(ledger_url)))


async def create_node(config: NodeConfig) -> RunningNode:
    servicer = build_servicer(config)
    binding = ServiceBinding(
        name=provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
        register=lambda server: provider_pb2_grpc.add_ProviderServiceServicer_to_server(
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
    return RunningNode(server, port, health)


async def create_server(config: NodeConfig) -> tuple[grpc.aio.Server, int]:
    node = await create_node(config)
    return node.server, node.port


async def serve(config: NodeConfig) -> None:
    node = await create_node(config)
    await node.serve_until_signal(config.grace_s)
