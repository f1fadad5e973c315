"""The platform's registry of provider nodes and the calls it makes to them.

Each provider is reached over mutually authenticated TLS; the channel refuses a
server whose certificate does not carry ``veil://provider/<name>``.  Every call has a
deadline, and a provider that does not answer in time is named in the error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from veil.catalog import Catalog
from veil.config import PeerConfig, TLSConfig
from veil.errors import (
    FailedPrecondition,
    Unavailable,
    VeilError,
    from_rpc_error,
    from_status_bytes,
)
from veil.tls import PeerIdentity, secure_channel
from veil.v1 import provider_pb2, provider_pb2_grpc

EXPORT_TIMEOUT_S = 300.0
_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass
class ProviderLink:
    peer: PeerConfig
    stub: provider_pb2_grpc.ProviderServiceAsyncStub
    channel: grpc.aio.Channel
    last_error: str = ""
    last_aggregated_at: dt.datetime | None = None
    datasets: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.peer.name

    @property
    def unit(self) -> str:
        return self.peer.unit


def provider_error(name: str, err: grpc.RpcError, timeout_s: float) -> VeilError:
    """Name the provider in every error that crosses back to the caller."""
    code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
    if code in _UNREACHABLE:
        reason = (
            "did not answer within the deadline"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED
            else "is unreachable"
        )
        return Unavailable(f"provider {name!r} {reason} ({timeout_s:g} s)")
    inner = from_rpc_error(err)
    inner.message = f"provider {name!r}: {inner.message}"
    inner.args = (inner.message,)
    return inner


def provider_item_error(name: str, status: bytes) -> VeilError:
    """One refused item of a batched answer (a serialized ``google.rpc.Status``), named
    like :func:`provider_error` names a refused call."""
    inner = from_status_bytes(status)
    inner.message = f"provider {name!r}: {inner.message}"
    inner.args = (inner.message,)
    return inner


class ProviderMisbehaved(Unavailable):
    """A provider answered with something malformed (a ciphertext invalid under the
    platform's key, a batched answer that does not match its requests): rejected,
    named, never imputed as a drop-out."""


def unpack_batch(name: str, requests: Sequence[Any], results: Sequence[Any]) -> list[Any]:
    """A batched answer (``PartialScoresResponse.results``, ``ContributeManyResponse.
    results``), item by item: each request's ``answer`` or its refusal
    (:func:`provider_item_error`).  A result count that differs, an item with neither,
    or an answer to another request id is a malformed batch: UNAVAILABLE naming the
    provider, for every request of it (never an answer matched to the wrong request)."""
    if len(results) != len(requests):
        raise ProviderMisbehaved(
            f"provider {name!r} gave a malformed batched answer "
            f"({len(results)} results for {len(requests)} requests)"
        )
    out: list[Any] = []
    for request, result in zip(requests, results, strict=True):
        kind = result.WhichOneof("outcome")
        if kind == "answer" and result.answer.request_id == request.request_id:
            out.append(result.answer)
        elif kind == "error":
            out.append(provider_item_error(name, result.error))
        else:
            raise ProviderMisbehaved(f"provider {name!r} gave a malformed batched answer")
    return out


class ProviderRegistry:
    def __init__(self, peers: Sequence[PeerConfig], tls: TLSConfig, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.links: dict[str, ProviderLink] = {}
        for peer in peers:
            if peer.role != "provider":
                continue
            channel = secure_channel(peer.address, tls, PeerIdentity("provider", peer.name))
            self.links[peer.unit] = ProviderLink(
                peer=peer, stub=provider_pb2_grpc.ProviderServiceStub(channel), channel=channel
            )

    def link(self, unit: str) -> ProviderLink:
        try:
            return self.links[unit]
        except KeyError:
            raise FailedPrecondition(
                f"provider {unit!r} is not registered at the platform"
            ) from None

    def holding(self, catalog: Catalog, dataset_ids: Sequence[str]) -> dict[str, list[str]]:
        """Group dataset ids by the unit of the registered provider that holds them."""
        out: dict[str, list[str]] = {}
        for ds_id in dataset_ids:
            provider = catalog.dataset(ds_id).provider
            if provider in self.links:
                out.setdefault(provider, []).append(ds_id)
        return out

    async def describe(self, unit: str) -> provider_pb2.DescribeResponse:
        link = self.link(unit)
        name = link.name
        try:
            response = await link.stub.Describe(
                provider_pb2.DescribeRequest(), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as err:
            link.last_error = provider_error(name, err, self.timeout_s).message
            raise provider_error(name, err, self.timeout_s) from None
        link.last_error = ""
        link.datasets = tuple(response.datasets)
        return response

    async def fetch_public(
        self, unit: str, request_id: str, uscc: str, dataset_ids: Sequence[str]
    ) -> provider_pb2.FetchPublicResponse:
        link = self.link(unit)
        name = link.name
        request = provider_pb2.FetchPublicRequest(
            request_id=request_id, uscc=uscc, dataset_ids=list(dataset_ids)
        )
        try:
            return await link.stub.FetchPublic(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise provider_error(name, err, self.timeout_s) from None

    async def fetch_authorized(
        self,
        unit: str,
        request_id: str,
        uscc: str,
        fields: Sequence[str],
        request_token: str,
        grant_jws: str,
    ) -> provider_pb2.ProviderFetchAuthorizedResponse:
        link = self.link(unit)
        request = provider_pb2.ProviderFetchAuthorizedRequest(
            request_id=request_id,
            uscc=uscc,
            fields=list(fields),
            request_token=request_token,
            grant_jws=grant_jws,
        )
        try:
            return await link.stub.FetchAuthorized(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as err:
            raise provider_error(link.name, err, self.timeout_s) from None

    async def export_aggregated(
        self, unit: str, request_id: str, dataset_ids: Sequence[str] = ()
    ) -> AsyncIterator[provider_pb2.ExportAggregatedBatch]:
        link = self.link(unit)
        name = link.name
        request = provider_pb2.ExportAggregatedRequest(
            request_id=request_id, dataset_ids=list(dataset_ids)
        )
        call = link.stub.ExportAggregated(request, timeout=EXPORT_TIMEOUT_S)
        try:
            async for batch in call:
                yield batch
        except grpc.aio.AioRpcError as err:
            raise provider_error(name, err, EXPORT_TIMEOUT_S) from None

    async def close(self) -> None:
        for link in self.links.values():
            await link.channel.close(None)
