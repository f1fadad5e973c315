"""PlatformService: the public credit report, provider status and aggregation."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass

import grpc

from platform_node.aggregation import aggregate_provider
from platform_node.audit import AuditLog
from platform_node.callers import CallerCheck
from platform_node.detail import AuthorizedDetail
from platform_node.providers import ProviderRegistry
from platform_node.public_store import PublicStore
from platform_node.registry import GrantRegistry, InstitutionRegistry
from platform_node.signing import PlatformKeys
from veil.catalog import Catalog, Classification, SharingMode
from veil.errors import InvalidArgument, NotFound, PermissionDenied, VeilError
from veil.server import current_peer, require_peer
from veil.uscc import validate_uscc
from veil.v1 import common_pb2, platform_pb2, platform_pb2_grpc

REGISTRATION_DATASET = "samr_basic"
MAX_REVOCATIONS_PAGE = 10_000


def report_datasets(catalog: Catalog) -> tuple[list[str], list[str]]:
    """The public report's datasets: (physically aggregated, public interface calls)."""
    aggregated, live = [], []
    for ds in catalog.datasets:
        subset = ds.public_subset
        if subset is not None and subset.mode == SharingMode.PHYSICAL_AGGREGATION:
            aggregated.append(ds.id)  # only the public rows (e.g. A-grade taxpayers) arrive
            continue
        if not any(f.classification == Classification.PUBLIC for f in ds.fields):
            continue
        if ds.mode == SharingMode.PHYSICAL_AGGREGATION:
            aggregated.append(ds.id)
        elif ds.mode == SharingMode.INTERFACE_CALL and not ds.authorization:
            live.append(ds.id)
    return aggregated, live


@dataclass(frozen=True)
class AuthorizationParts:
    """What the authorization-gated RPCs need (docs/authorization.md)."""

    callers: CallerCheck
    institutions: InstitutionRegistry
    grants: GrantRegistry
    keys: PlatformKeys
    detail: AuthorizedDetail


class PlatformServicer(platform_pb2_grpc.PlatformServiceServicer):
    def __init__(
        self,
        catalog: Catalog,
        registry: ProviderRegistry,
        store: PublicStore,
        *,
        audit: AuditLog,
        authz: AuthorizationParts,
    ) -> None:
        self.authz = authz
        self.catalog = catalog
        self.audit = audit  # the transparency log: every use is recorded before it is answered
        self.registry = registry
        self.store = store
        self.aggregated_ids, self.live_ids = report_datasets(catalog)
        self.name_field = catalog.enterprise_name_field(REGISTRATION_DATASET)

    async def LookupEnterprise(
        self, request: platform_pb2.LookupEnterpriseRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.LookupEnterpriseResponse:
        caller = await self.authz.callers.require(context, {"institution"})
        if request.institution_id != caller.subject:
            raise PermissionDenied("institution_id differs from the authenticated caller")
        validate_uscc(request.uscc)
        request_id = request.request_id or uuid.uuid4().hex
        stored = await asyncio.to_thread(self.store.records_for, request.uscc)
        registration = stored.get(REGISTRATION_DATASET)
        if not registration:
            await self.audit.lookup(request, request_id)
            raise NotFound(f"enterprise {request.uscc} is not in the registration data")
        name_value = registration[0].fields.get(self.name_field)
        response = platform_pb2.LookupEnterpriseResponse(
            request_id=request_id,
            uscc=request.uscc,
            name=name_value.text if name_value is not None else "",
        )
        for ds_id in self.aggregated_ids:
            if ds_id in stored:
                response.datasets.append(
                    common_pb2.DatasetRecords(
                        dataset_id=ds_id, source="platform", records=stored[ds_id]
                    )
                )
        by_provider = self.registry.holding(self.catalog, self.live_ids)
        calls = [
            self.registry.fetch_public(name, request_id, request.uscc, ds_ids)
            for name, ds_ids in sorted(by_provider.items())
        ]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException):
                await self.audit.lookup(request, request_id, sorted(by_provider), answers)
                raise answer
        for answer in answers:
            assert not isinstance(answer, BaseException)
            response.datasets.extend(answer.datasets)
        response.providers_consulted.extend(sorted(by_provider))
        response.log_index = await self.audit.lookup(
            request, request_id, sorted(by_provider), answers, response
        )
        return response

    def _status(self, name: str) -> platform_pb2.ProviderStatus:
        link = self.registry.link(name)
        rows = sum(r.rows for r in self.store.runs() if r.source == name)
        return platform_pb2.ProviderStatus(
            name=link.name,
            address=link.peer.address,
            categories=list(link.peer.categories),
            reachable=not link.last_error,
            error=link.last_error,
            aggregated_records=rows,
            last_aggregated_at=link.last_aggregated_at.isoformat()
            if link.last_aggregated_at
            else "",
        )

    async def ListProviders(
        self, request: platform_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.ListProvidersResponse:
        require_peer(context, roles={"gateway", "admin"})
        names = sorted(self.registry.links)
        results = await asyncio.gather(
            *(self.registry.describe(n) for n in names), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, VeilError):
                raise result
        statuses = await asyncio.to_thread(lambda: [self._status(n) for n in names])
        return platform_pb2.ListProvidersResponse(providers=statuses)

    async def Aggregate(
        self, request: platform_pb2.AggregateRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.AggregateResponse:
        peer = current_peer.get()
        if peer is None or peer.role != "admin":
            raise PermissionDenied("Aggregate is for platform administrators (role admin)")
        names = list(request.providers) or sorted(self.registry.links)
        for name in names:
            if name not in self.registry.links:
                raise InvalidArgument(f"provider {name!r} is not registered at the platform")
        for name in names:
            try:
                await aggregate_provider(self.registry, self.store, name, self.audit)
            except VeilError as exc:
                self.registry.links[name].last_error = exc.message
                raise
        statuses = await asyncio.to_thread(lambda: [self._status(n) for n in names])
        return platform_pb2.AggregateResponse(providers=statuses)

    async def FetchAuthorized(
        self, request: platform_pb2.FetchAuthorizedRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.FetchAuthorizedResponse:
        return await self.authz.detail.fetch(request, context)

    async def GetJwks(
        self, request: platform_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.Jwks:
        require_peer(context, roles={"gateway", "admin", "provider"})
        return platform_pb2.Jwks(jwks_json=self.authz.keys.jwks_json())

    async def ListRevocations(
        self, request: platform_pb2.ListRevocationsRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.ListRevocationsResponse:
        require_peer(context, roles={"provider", "admin"})
        limit = request.limit or 1000
        if limit > MAX_REVOCATIONS_PAGE:
            raise InvalidArgument(f"limit must be at most {MAX_REVOCATIONS_PAGE}")
        entries = await asyncio.to_thread(
            self.authz.grants.revocations_after, request.after_seq, limit
        )
        out = platform_pb2.ListRevocationsResponse()
        for entry in entries:
            out.revocations.add(
                seq=entry.seq,
                uscc=entry.uscc,
                grant_id=entry.grant_id,
                revocation_jws=entry.revocation_jws,
            )
        return out

    async def GetInstitutionKeys(
        self, request: platform_pb2.GetInstitutionKeysRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.InstitutionKeys:
        require_peer(context, roles={"gateway", "admin"})
        inst = await asyncio.to_thread(self.authz.institutions.get, request.institution_id)
        return platform_pb2.InstitutionKeys(
            institution_id=inst.id,
            active=inst.state == "active",
            state=inst.state,
            jwks_json=json.dumps(inst.jwks(), sort_keys=True),
        )
