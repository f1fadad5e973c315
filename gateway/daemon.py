"""Run the gateway: ``create_server(config) -> (server, port)`` and ``serve(config)``."""

from __future__ import annotations

import grpc

from gateway.service import GatewayServicer
from veil.catalog import load_catalog
from veil.config import NodeConfig
from veil.errors import ConfigError
from veil.metrics import MetricsInterceptor, serve_metrics
from veil.node import RunningNode
from veil.server import ServiceBinding
from veil.server import create_server as create_grpc_server
from veil.tls import PeerIdentity, secure_channel
from veil.v1 import gateway_pb2, gateway_pb2_grpc, platform_pb2_grpc

ALLOWED_ROLES = frozenset({"institution", "enterprise", "auditor", "admin"})


async def create_node(config: NodeConfig) -> RunningNode:
    platforms = [p for p in config.peers if p.role == "platform"]
    if len(platforms) != 1:
        raise ConfigError(
            str(config.path), "peers", "the gateway needs exactly one peer with role = 'platform'"
        )
    peer = platforms[0]
    channel = secure_channel(peer.address, config.tls, PeerIdentity("platform", peer.name))
    servicer = GatewayServicer(load_catalog(), platform_pb2_grpc.PlatformServiceStub(channel))
    binding = ServiceBinding(
        name=gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
        register=lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
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

    async def close() -> None:
        await channel.close(None)

    return RunningNode(server, port, health, on_stop=close)


async def create_server(config: NodeConfig) -> tuple[grpc.aio.Server, int]:
    node = await create_node(config)
    return node.server, node.port


async def serve(config: NodeConfig) -> None:
    node = await create_node(config)
    await node.serve_until_signal(config.grace_s)
