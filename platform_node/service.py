"""PlatformService: the public credit report, provider status and aggregation."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from platform_node.aggregation import aggregate_provider
from platform_node.providers import ProviderRegistry
from platform_node.public_store import PublicStore
from veil.catalog import Catalog, Classification, SharingMode
from veil.errors import InvalidArgument, NotFound, PermissionDenied, VeilError
from veil.server import current_peer
from veil.uscc import validate_uscc
from veil.v1 import common_pb2, platform_pb2, platform_pb2_grpc

REGISTRATION_DATASET = "samr_basic"


def report_datasets(catalog: Catalog) -> tuple[list[str], list[str]]:
    """The public report's datasets: (physically aggregated, public interface calls)."""
    aggregated, live = [], []
    for ds in catalog.datasets:
        if not any(f.classification == Classification.PUBLIC for f in ds.fields):
            continue
        if ds.mode == SharingMode.PHYSICAL_AGGREGATION:
            aggregated.append(ds.id)
        elif ds.mode == SharingMode.INTERFACE_CALL and not ds.authorization:
            live.append(ds.id)
    return aggregated, live


class PlatformServicer(platform_pb2_grpc.PlatformServiceServicer):
    def __init__(self, catalog: Catalog, registry: ProviderRegistry, store: PublicStore) -> None:
        self.catalog = catalog
        self.registry = registry
        self.store = store
        self.aggregated_ids, self.live_ids = report_datasets(catalog)
        self.name_field = catalog.enterprise_name_field(REGISTRATION_DATASET)

    async def LookupEnterprise(
        self, request: platform_pb2.LookupEnterpriseRequest, context: grpc.aio.ServicerContext
    ) -> platform_pb2.LookupEnterpriseResponse:
        validate_uscc(request.uscc)
        request_id = request.request_id or uuid.uuid4().hex
        stored = await asyncio.to_thread(self.store.records_for, request.uscc)
        registration = stored.get(REGISTRATION_DATASET)
        if not registration:
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
                raise answer
        for answer in answers:
            assert not isinstance(answer, BaseException)
            response.datasets.extend(answer.datasets)
        response.providers_consulted.extend(sorted(by_provider))
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
                await aggregate_provider(self.registry, self.store, name)
            except VeilError as exc:
                self.registry.links[name].last_error = exc.message
                raise
        statuses = await asyncio.to_thread(lambda: [self._status(n) for n in names])
        return platform_pb2.AggregateResponse(providers=statuses)
