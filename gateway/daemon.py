"""Run the gateway: ``create_server(config) -> (server, port)`` and ``serve(config)``."""

from __future__ import annotations

import grpc

from gateway.audit_service import audit_service_binding
from gateway.auth import ClientAssertionInterceptor, InstitutionKeyCache
from gateway.authorization import AuthorizationForwarder
from gateway.scoring import scoring_binding, start_jwks
from gateway.service import GatewayServicer
from gateway.verification import verification_binding
from veil.catalog import load_catalog
from veil.config import NodeConfig
from veil.errors import ConfigError
from veil.metrics import MetricsInterceptor, serve_metrics
from veil.node import RunningNode
from veil.server import ServiceBinding
from veil.server import create_server as create_grpc_server
from veil.tls import PeerIdentity, secure_channel
from veil.tokens import gateway_audience
from veil.trust import load_eia_keys
from veil.v1 import (
    authorization_pb2,
    authorization_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    platform_pb2_grpc,
)

# "provider": data-providing units read the log entries concerning them through
# AuditService.  Every GatewayService/AuthorizationService method except the public
# GetCatalog and GetJwks needs a client assertion (gateway/auth.py), bound to the
# certificate's identity; AuditService checks certificate roles itself.
ALLOWED_ROLES = frozenset({"institution", "enterprise", "auditor", "admin", "provider"})


async def create_node(config: NodeConfig) -> RunningNode:
    platforms = [p for p in config.peers if p.role == "platform"]
    if len(platforms) != 1:
        raise ConfigError(
            str(config.path), "peers", "the gateway needs exactly one peer with role = 'platform'"
        )
    peer = platforms[0]
    channel = secure_channel(peer.address, config.tls, PeerIdentity("platform", peer.name))
    platform = platform_pb2_grpc.PlatformServiceStub(channel)
    servicer = GatewayServicer(load_catalog(), platform)
    binding = ServiceBinding(
        name=gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
        register=lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            servicer, server
        ),
    )
    forwarder = AuthorizationForwarder(authorization_pb2_grpc.AuthorizationServiceStub(channel))
    authorization = ServiceBinding(
        name=authorization_pb2.DESCRIPTOR.services_by_name["AuthorizationService"].full_name,
        register=lambda server: authorization_pb2_grpc.add_AuthorizationServiceServicer_to_server(
            forwarder, server
        ),
    )
    assertions = ClientAssertionInterceptor(
        audience=gateway_audience(config.name),
        institutions=InstitutionKeyCache(platform),
        eia_keys=load_eia_keys(config),
    )
    server, port, health = await create_grpc_server(
        config.listen,
        config.tls,
        [
            binding,
            authorization,
            audit_service_binding(channel),
            verification_binding(channel),
            scoring_binding(channel),
        ],
        allowed_roles=ALLOWED_ROLES,
        extra_interceptors=[MetricsInterceptor(), assertions],
    )
    serve_metrics(config.metrics_listen)
    jwks_http = await start_jwks(config, channel)  # [gateway] jwks_http_listen

    async def close() -> None:
        if jwks_http is not None:
            await jwks_http.close()
        await channel.close(None)

    return RunningNode(server, port, health, on_stop=close)


async def create_server(config: NodeConfig) -> tuple[grpc.aio.Server, int]:
    node = await create_node(config)
    return node.server, node.port


async def serve(config: NodeConfig) -> None:
    node = await create_node(config)
    await node.serve_until_signal(config.grace_s)
