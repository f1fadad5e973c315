"""Run the platform node: ``create_server(config) -> (server, port)`` and ``serve(config)``."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from sqlalchemy import Engine

from platform_node.aggregation import aggregate_forever
from platform_node.audit import AuditLog, log_settings
from platform_node.authorization import AuthorizationServicer
from platform_node.callers import CallerCheck
from platform_node.detail import AuthorizedDetail
from platform_node.forwarding import ForwardingServicer
from platform_node.institutions_service import InstitutionRegistryServicer
from platform_node.key_events import record_key_changes
from platform_node.log_service import log_service_binding
from platform_node.providers import ProviderRegistry
from platform_node.public_store import PublicStore
from platform_node.registry import GrantRegistry, InstitutionRegistry, ReplayGuard
from platform_node.schema_history import PLATFORM_SCHEMA
from platform_node.scoring import build_scoring
from platform_node.service import AuthorizationParts, PlatformServicer
from platform_node.signing import load_platform_keys
from platform_node.verification import Verification, build_verification
from veil.catalog import Catalog, load_catalog
from veil.config import NodeConfig
from veil.errors import ConfigError
from veil.metrics import MetricsInterceptor, serve_metrics
from veil.migrations import prepare_schema, schema_mode
from veil.node import RunningNode
from veil.server import ServiceBinding
from veil.server import create_server as create_grpc_server
from veil.store import make_engine
from veil.trust import load_eia_keys
from veil.v1 import (
    authorization_pb2,
    authorization_pb2_grpc,
    forwarding_pb2,
    forwarding_pb2_grpc,
    institution_pb2,
    institution_pb2_grpc,
    platform_pb2,
    platform_pb2_grpc,
)

# Providers call GetJwks and ListRevocations only; every handler checks its own roles.
ALLOWED_ROLES = frozenset({"gateway", "admin", "provider"})
DEFAULT_AGGREGATE_INTERVAL_S = 3600.0


def aggregate_interval(config: NodeConfig) -> float | None:
    """Seconds between physical aggregations; ``None`` when turned off (0)."""
    value = config.section("platform").get("aggregate_interval_s", DEFAULT_AGGREGATE_INTERVAL_S)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(
            str(config.path), "platform.aggregate_interval_s", "must be a number ≥ 0 (0: off)"
        )
    return float(value) or None


def build_authorization(
    config: NodeConfig,
    catalog: Catalog,
    providers: ProviderRegistry,
    engine: Engine,
    audit: AuditLog,
) -> AuthorizationParts:
    """Registries on the platform's store, its signing keys and the EIA's keys."""
    institutions = InstitutionRegistry(engine)
    grants = GrantRegistry(engine, load_eia_keys(config), institutions)
    callers = CallerCheck(institutions, ReplayGuard(engine))
    keys = load_platform_keys(config)
    detail = AuthorizedDetail(
        catalog=catalog,
        providers=providers,
        institutions=institutions,
        grants=grants,
        callers=callers,
        keys=keys,
        audit=audit,
    )
    return AuthorizationParts(callers, institutions, grants, keys, detail)


async def create_node(config: NodeConfig) -> RunningNode:
    if not config.store_url:
        raise ConfigError(str(config.path), "store.url", "is required for the platform")
    interval = aggregate_interval(config)
    prepare_schema(config.store_url, PLATFORM_SCHEMA, schema_mode(config))
    catalog = load_catalog()
    registry = ProviderRegistry(config.peers, config.tls, config.call_timeout_s)
    store = PublicStore(make_engine(config.store_url))
    audit = await AuditLog.open(
        config.store_url, log_settings(config), actor=f"platform/{config.name}"
    )
    authz = build_authorization(config, catalog, registry, store.engine, audit)
    await record_key_changes(
        store.engine,
        audit,
        {
            "results_and_request_tokens": list(authz.keys.keyset().kids),
            "log_checkpoints": [audit.verifier_key.split("+")[1]],
        },
    )
    verification: list[ServiceBinding] = []
    verifier: Verification | None = None
    if "verification" in config.raw:  # composite contributions are encrypted to its key
        verify_binding, verification_kid, verifier = build_verification(
            config, catalog, registry, store.engine, audit, authz
        )
        verification.append(verify_binding)
        await record_key_changes(store.engine, audit, {"verification_paillier": [verification_kid]})
    scoring = (  # models, online scoring, batch evaluation (platform_node/scoring.py)
        build_scoring(config, registry, store.engine, audit, authz)
        if "scoring" in config.raw
        else None
    )
    if scoring is not None:  # the Paillier key providers' partial scores are encrypted to
        await record_key_changes(
            store.engine, audit, {"scoring_paillier": [scoring.online.keys.key_id]}
        )
    forwarding = ForwardingServicer(  # the gateway's coalesced Verify / Score calls
        verify=verifier.verify_coalesced if verifier is not None else None,
        score=scoring.online.score_coalesced if scoring is not None else None,
    )
    verification.append(
        ServiceBinding(
            name=forwarding_pb2.DESCRIPTOR.services_by_name["Forwarding"].full_name,
            register=lambda server: forwarding_pb2_grpc.add_ForwardingServicer_to_server(
                forwarding, server
            ),
        )
    )
    servicer = PlatformServicer(catalog, registry, store, audit=audit, authz=authz)
    binding = ServiceBinding(
        name=platform_pb2.DESCRIPTOR.services_by_name["PlatformService"].full_name,
        register=lambda server: platform_pb2_grpc.add_PlatformServiceServicer_to_server(
            servicer, server
        ),
    )
    institutions = InstitutionRegistryServicer(authz.institutions, audit)
    institutions_binding = ServiceBinding(
        name=institution_pb2.DESCRIPTOR.services_by_name["InstitutionRegistry"].full_name,
        register=lambda server: institution_pb2_grpc.add_InstitutionRegistryServicer_to_server(
            institutions, server
        ),
    )
    grants = AuthorizationServicer(authz.grants, authz.callers, audit)
    grants_binding = ServiceBinding(
        name=authorization_pb2.DESCRIPTOR.services_by_name["AuthorizationService"].full_name,
        register=lambda server: authorization_pb2_grpc.add_AuthorizationServiceServicer_to_server(
            grants, server
        ),
    )
    server, port, health = await create_grpc_server(
        config.listen,
        config.tls,
        [
            binding,
            institutions_binding,
            grants_binding,
            log_service_binding(audit),
            *verification,
            *(scoring.bindings if scoring is not None else []),
        ],
        allowed_roles=ALLOWED_ROLES,
        extra_interceptors=[MetricsInterceptor()],
    )
    serve_metrics(config.metrics_listen)
    if scoring is not None:
        scoring.start()  # resume batch jobs a crash left running
    task = (
        asyncio.create_task(aggregate_forever(registry, store, interval, audit))
        if interval is not None
        else None
    )

    async def stop_background() -> None:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if scoring is not None:
            await scoring.close()
        await audit.close()
        await registry.close()

    return RunningNode(server, port, health, on_stop=stop_background)


async def create_server(config: NodeConfig) -> tuple[grpc.aio.Server, int]:
    node = await create_node(config)
    return node.server, node.port


async def serve(config: NodeConfig) -> None:
    node = await create_node(config)
    await node.serve_until_signal(config.grace_s)
