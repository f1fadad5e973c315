"""ProviderService: what a data-providing unit answers, and what it refuses.

Every request is checked here, by the unit itself, whatever the platform claims:
only datasets this unit holds, only their public fields for public calls, and every
request (answered or refused) is written to the unit's own ledger before it answers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

import grpc

from provider_node.guard import Guard
from provider_node.ledger import Ledger
from veil.catalog import Cardinality, Catalog, Classification, Dataset, SharingMode
from veil.errors import FailedPrecondition, InvalidArgument, PermissionDenied, VeilError
from veil.sealed import recipient_bytes, seal_records
from veil.server import current_peer
from veil.store import IDENTITY_USCC, ProviderStore
from veil.uscc import validate_uscc
from veil.v1 import common_pb2, provider_pb2, provider_pb2_grpc
from veil.values import to_record

DEFAULT_EXPORT_BATCH = 1000
MAX_EXPORT_BATCH = 10_000


def catalog_digest() -> str:
    data = resources.files("veil.catalog").joinpath("annex.toml").read_bytes()
    return hashlib.sha256(data).hexdigest()


def is_aggregated(dataset: Dataset) -> bool:
    """Physically aggregated (物理归集) as a whole, or through a public subset of its rows."""
    subset = dataset.public_subset
    return dataset.mode == SharingMode.PHYSICAL_AGGREGATION or (
        subset is not None and subset.mode == SharingMode.PHYSICAL_AGGREGATION
    )


def public_field_ids(dataset: Dataset) -> list[str]:
    return [f.id for f in dataset.fields if f.classification == Classification.PUBLIC]


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(
        self,
        unit: str,
        catalog: Catalog,
        store: ProviderStore,
        ledger: Ledger,
        guard: Guard | None = None,
    ) -> None:
        self.unit = unit
        self.guard = guard
        self.catalog = catalog
        self.store = store
        self.ledger = ledger
        self.datasets = {
            d.id: d for d in catalog.datasets_for_provider(unit) if d.id in store.mapping.tables
        }
        self._digest = catalog_digest()

    def _enterprise_count(self) -> int:
        """Enterprises on record: the largest one-row-per-enterprise dataset."""
        single = [d.id for d in self.datasets.values() if d.cardinality == Cardinality.ONE]
        return max((self.store.count(ds_id) for ds_id in single), default=0)

    def _caller(self) -> str:
        peer = current_peer.get()
        return f"{peer.role}/{peer.name}" if peer else "unauthenticated"

    def _held(self, dataset_ids: Sequence[str]) -> list[Dataset]:
        out = []
        for ds_id in dataset_ids:
            if ds_id not in self.datasets:
                raise InvalidArgument(f"dataset {ds_id!r} is not held by provider {self.unit!r}")
            out.append(self.datasets[ds_id])
        return out

    async def _record(
        self,
        method: str,
        request_id: str,
        uscc: str | None,
        datasets: Sequence[str],
        outcome: str,
        detail: str = "",
    ) -> None:
        await asyncio.to_thread(
            self.ledger.record,
            request_id=request_id,
            method=method,
            caller=self._caller(),
            uscc=uscc,
            datasets=datasets,
            outcome=outcome,
            detail=detail,
        )

    async def Describe(
        self, request: provider_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> provider_pb2.DescribeResponse:
        count = await asyncio.to_thread(self._enterprise_count)
        categories = sorted({d.category_id for d in self.datasets.values()})
        return provider_pb2.DescribeResponse(
            unit=self.unit,
            categories=categories,
            datasets=sorted(self.datasets),
            enterprises=count,
            catalog_digest=self._digest,
        )

    async def FetchPublic(
        self, request: provider_pb2.FetchPublicRequest, context: grpc.aio.ServicerContext
    ) -> provider_pb2.FetchPublicResponse:
        requested = list(request.dataset_ids)
        try:
            if not request.request_id:
                raise InvalidArgument("request_id is required")
            validate_uscc(request.uscc)
            if not requested:
                raise InvalidArgument("dataset_ids is empty")
            datasets = self._held(requested)
            for ds in datasets:
                if ds.authorization or not public_field_ids(ds):
                    raise PermissionDenied(
                        f"dataset {ds.id!r} needs an enterprise authorization; "
                        "FetchPublic serves public datasets only"
                    )
        except VeilError as exc:
            await self._record(
                "FetchPublic",
                request.request_id,
                request.uscc or None,
                requested,
                "refused",
                exc.message,
            )
            raise
        await self._record("FetchPublic", request.request_id, request.uscc, requested, "answered")
        response = provider_pb2.FetchPublicResponse(request_id=request.request_id)
        for ds in datasets:
            fields = public_field_ids(ds)
            found = await asyncio.to_thread(self.store.fetch, request.uscc, fields)
            out = response.datasets.add(dataset_id=ds.id, source=self.unit)
            rows = found.get(ds.id, [])
            for row in rows:
                out.records.append(to_record(ds.id, row))
        return response

    async def ExportAggregated(
        self, request: provider_pb2.ExportAggregatedRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[provider_pb2.ExportAggregatedBatch]:
        batch_size = request.batch_size or DEFAULT_EXPORT_BATCH
        requested = list(request.dataset_ids) or sorted(
            d.id for d in self.datasets.values() if is_aggregated(d)
        )
        try:
            if not request.request_id:
                raise InvalidArgument("request_id is required")
            if batch_size > MAX_EXPORT_BATCH:
                raise InvalidArgument(f"batch_size must be at most {MAX_EXPORT_BATCH}")
            datasets = self._held(requested)
            for ds in datasets:
                if not is_aggregated(ds):
                    raise PermissionDenied(
                        f"dataset {ds.id!r} is shared by {ds.mode.value}, not physical aggregation"
                    )
        except VeilError as exc:
            await self._record(
                "ExportAggregated", request.request_id, None, requested, "refused", exc.message
            )
            raise
        await self._record("ExportAggregated", request.request_id, None, requested, "answered")
        for ds in datasets:
            if ds.mode != SharingMode.PHYSICAL_AGGREGATION:
                async for subset_batch in self._export_subset(ds, batch_size):
                    yield subset_batch
                continue
            fields = public_field_ids(ds)
            total = await asyncio.to_thread(self.store.count, ds.id)
            batches = self.store.iter_dataset(ds.id, fields, batch_size, identity=True)
            sent = 0
            while True:
                chunk = await asyncio.to_thread(next, batches, None)
                if chunk is None:
                    break
                sent += len(chunk)
                msg = provider_pb2.ExportAggregatedBatch(
                    dataset_id=ds.id, total_in_dataset=total, last_of_dataset=sent >= total
                )
                for row in chunk:
                    msg.usccs.append(row.pop(IDENTITY_USCC))
                    msg.records.append(to_record(ds.id, row))
                yield msg
            if sent < total or total == 0:
                yield provider_pb2.ExportAggregatedBatch(
                    dataset_id=ds.id, total_in_dataset=total, last_of_dataset=True
                )

    async def _export_subset(
        self, ds: Dataset, batch_size: int
    ) -> AsyncIterator[provider_pb2.ExportAggregatedBatch]:
        """Rows of a public subset only (e.g. the A-grade taxpayer list of 纳税信用等级)."""
        subset = ds.public_subset
        assert subset is not None
        batches = self.store.iter_dataset(ds.id, list(ds.field_ids), batch_size, identity=True)
        sent = 0
        while True:
            chunk = await asyncio.to_thread(next, batches, None)
            if chunk is None:
                break
            rows = [r for r in chunk if str(r.get(subset.field)) in subset.values]
            if not rows:
                continue
            msg = provider_pb2.ExportAggregatedBatch(dataset_id=ds.id)
            for row in rows:
                msg.usccs.append(row.pop(IDENTITY_USCC))
                msg.records.append(to_record(ds.id, row))
            sent += len(rows)
            yield msg
        yield provider_pb2.ExportAggregatedBatch(
            dataset_id=ds.id, total_in_dataset=sent, last_of_dataset=True
        )

    async def FetchAuthorized(
        self,
        request: provider_pb2.ProviderFetchAuthorizedRequest,
        context: grpc.aio.ServicerContext,
    ) -> provider_pb2.ProviderFetchAuthorizedResponse:
        fields = list(request.fields)
        datasets: list[str] = []
        try:
            if self.guard is None:
                raise FailedPrecondition(
                    f"provider {self.unit!r} is not configured for authorized requests "
                    "([authorization] eia_jwks and a platform peer)"
                )
            if not request.request_id:
                raise InvalidArgument("request_id is required")
            validate_uscc(request.uscc)
            if not fields:
                raise InvalidArgument("fields is empty")
            datasets = sorted({self._held_field(f) for f in fields})
            claims, grant = await self.guard.authenticate(  # replay, revocation: below
                request_id=request.request_id,
                uscc=request.uscc,
                fields=fields,
                request_token=request.request_token,
                grant_jws=request.grant_jws,
            )
            if claims.use != "fetch":
                raise PermissionDenied(
                    f"the request token is for use {claims.use!r}; values are fetched only "
                    "under a token (and grant) for 'fetch'"
                )
            if claims.recipient is None:
                raise PermissionDenied(
                    "the request token names no recipient key: detail values leave this "
                    "provider only sealed to the institution"
                )
            recipient_bytes(claims.recipient)
        except VeilError as exc:
            await self._record(
                "FetchAuthorized",
                request.request_id,
                request.uscc or None,
                datasets,
                "refused",
                exc.message,
            )
            raise
        detail = (
            f"institution={claims.institution};purpose={claims.purpose};"
            f"loan_ref={claims.loan_ref};grant={grant.grant_id};fields={','.join(sorted(fields))}"
        )
        guard = self.guard
        assert guard is not None

        def answer() -> dict[str, list[dict[str, Any]]]:  # one worker thread, one commit
            with guard.claimed(claims, grant) as conn:  # replay + revocation first
                self.ledger.record(
                    request_id=request.request_id,
                    method="FetchAuthorized",
                    caller=self._caller(),
                    uscc=request.uscc,
                    datasets=datasets,
                    outcome="answered",
                    detail=detail,
                    conn=conn,
                )
                return self.store.fetch(request.uscc, fields)

        try:
            found = await asyncio.to_thread(answer)
        except VeilError as exc:  # replayed, revoked or the read failed: rolled back
            await self._record(
                "FetchAuthorized",
                request.request_id,
                request.uscc,
                datasets,
                "refused",
                exc.message,
            )
            raise
        records = []
        for ds_id in datasets:
            out = common_pb2.DatasetRecords(dataset_id=ds_id, source=self.unit)
            for row in found.get(ds_id, []):
                out.records.append(to_record(ds_id, row))
            records.append(out)
        sealed = seal_records(
            recipient_bytes(claims.recipient or ""),
            records,
            request_id=request.request_id,
            provider=self.unit,
            uscc=request.uscc,
        )
        return provider_pb2.ProviderFetchAuthorizedResponse(
            request_id=request.request_id, sealed=sealed
        )

    def _held_field(self, field_id: str) -> str:
        """The dataset of a field this provider may return as a value; refuse others."""
        field = self.catalog.field(field_id)
        if field.dataset_id not in self.datasets:
            raise InvalidArgument(f"field {field_id!r} is not held by provider {self.unit!r}")
        if field.classification == Classification.VERIFICATION_ONLY:
            raise PermissionDenied(
                f"field {field_id!r} is verification-only: it never leaves provider "
                f"{self.unit!r} as a value, whatever the grant says"
            )
        return field.dataset_id
