"""Run a provider node: ``create_server(config) -> (server, port)`` and ``serve(config)``."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from provider_node.guard import REVOCATION_POLL_S, Guard, PlatformKeys
from provider_node.ledger import Ledger, ledger_url
from provider_node.mask_keys import ProviderMaskKeys, mask_key_binding
from provider_node.schema_history import PROVIDER_SCHEMA
from provider_node.scoring import scoring_binding
from provider_node.service import ProviderServicer
from provider_node.settings import provider_settings
from provider_node.verify import verification_binding
from veil.catalog import load_catalog
from veil.config import NodeConfig
from veil.errors import ConfigError
from veil.metrics import MetricsInterceptor, serve_metrics, watch_pools
from veil.migrations import prepare_schema, schema_mode
from veil.node import RunningNode
from veil.server import ServiceBinding
from veil.server import create_server as create_grpc_server
from veil.store import ProviderStore, load_mapping
from veil.tls import PeerIdentity, secure_channel
from veil.trust import load_eia_keys
from veil.v1 import platform_pb2_grpc, provider_pb2, provider_pb2_grpc

ALLOWED_ROLES = frozenset({"platform"})


def build_servicer(config: NodeConfig, guard: Guard | None = None) -> ProviderServicer:
    settings = provider_settings(config)
    catalog = load_catalog()
    mapping = load_mapping(settings.mapping.removeprefix("builtin:"), catalog)
    if mapping.unit != settings.unit:
        raise ConfigError(
            str(config.path),
            "store.mapping",
            f"maps unit {mapping.unit!r}, but this node serves provider.unit {settings.unit!r}",
        )
    store = ProviderStore(config.store_url, mapping, catalog)
    ledger = Ledger.open(ledger_url(config))
    return ProviderServicer(settings.unit, catalog, store, ledger, guard)


async def create_node(config: NodeConfig) -> RunningNode:
    settings = provider_settings(config)
    ledger_at = ledger_url(config)
    prepare_schema(ledger_at, PROVIDER_SCHEMA, schema_mode(config))
    guard = None
    channel = None
    poller: asyncio.Task[None] | None = None
    if "authorization" in config.raw:
        platforms = [p for p in config.peers if p.role == "platform"]
        if len(platforms) != 1:
            raise ConfigError(
                str(config.path),
                "peers",
                "authorized requests need exactly one peer with role = 'platform' (its keys "
                "and revocations are fetched from it)",
            )
        peer = platforms[0]
        channel = secure_channel(peer.address, config.tls, PeerIdentity("platform", peer.name))
        platform = platform_pb2_grpc.PlatformServiceStub(channel)
        guard = Guard(
            unit=settings.unit,
            engine=Ledger.open(ledger_at).engine,
            eia_keys=load_eia_keys(config),
            platform_keys=PlatformKeys(platform),
        )
        poller = asyncio.create_task(guard.poll_revocations(platform, REVOCATION_POLL_S))
    servicer = build_servicer(config, guard)
    masks = ProviderMaskKeys.from_config(config, settings.unit) if "masks" in config.raw else None
    extra = [mask_key_binding(masks)] if masks is not None else []
    verifier = None
    if "verification" in config.raw and guard is not None:
        verification, verifier = verification_binding(config, servicer, guard, masks)
        extra.append(verification)
        watch_pools("verification", verifier)
    scorer = None
    if "scoring" in config.raw:  # joint-model scoring (provider_node/scoring.py)
        scoring, scorer = scoring_binding(config, servicer, guard, masks)
        extra.append(scoring)
        watch_pools("scoring", scorer)
    binding = ServiceBinding(
        name=provider_pb2.DESCRIPTOR.services_by_name["ProviderService"].full_name,
        register=lambda server: provider_pb2_grpc.add_ProviderServiceServicer_to_server(
            servicer, server
        ),
    )
    server, port, health = await create_grpc_server(
        config.listen,
        config.tls,
        [binding, *extra],
        allowed_roles=ALLOWED_ROLES,
        extra_interceptors=[MetricsInterceptor()],
    )
    serve_metrics(config.metrics_listen)

    async def stop_background() -> None:
        if verifier is not None:
            verifier.close()
        if scorer is not None:
            scorer.close()
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if channel is not None:
            await channel.close(None)

    return RunningNode(server, port, health, on_stop=stop_background)


async def create_server(config: NodeConfig) -> tuple[grpc.aio.Server, int]:
    node = await create_node(config)
    return node.server, node.port


async def serve(config: NodeConfig) -> None:
    node = await create_node(config)
    await node.serve_until_signal(config.grace_s)
