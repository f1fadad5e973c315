"""GatewayService: what institutions, enterprises and auditors may ask."""

from __future__ import annotations

import uuid

import grpc

from gateway.catalog_view import catalog_response
from veil.catalog import Catalog
from veil.errors import InvalidArgument, PermissionDenied, Unavailable, from_rpc_error
from veil.server import current_peer
from veil.tls import PeerIdentity
from veil.uscc import validate_uscc
from veil.v1 import gateway_pb2, gateway_pb2_grpc, platform_pb2, platform_pb2_grpc

PLATFORM_TIMEOUT_S = 10.0
MAX_REQUEST_ID_LEN = 64


def require_role(*roles: str) -> PeerIdentity:
    peer = current_peer.get()
    if peer is None or peer.role not in roles:
        raise PermissionDenied(f"this call is for role(s) {', '.join(roles)}")
    return peer


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self, catalog: Catalog, platform: platform_pb2_grpc.PlatformServiceAsyncStub
    ) -> None:
        self.platform = platform
        self.catalog_msg = catalog_response(catalog)

    async def LookupEnterprise(
        self, request: gateway_pb2.GatewayLookupRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GatewayLookupResponse:
        peer = require_role("institution")
        validate_uscc(request.uscc)
        if len(request.request_id) > MAX_REQUEST_ID_LEN:
            raise InvalidArgument(f"request_id is longer than {MAX_REQUEST_ID_LEN} characters")
        request_id = request.request_id or uuid.uuid4().hex
        try:
            answer = await self.platform.LookupEnterprise(
                platform_pb2.LookupEnterpriseRequest(
                    request_id=request_id, uscc=request.uscc, institution_id=peer.name
                ),
                timeout=PLATFORM_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise Unavailable(
                    f"the platform did not answer within {PLATFORM_TIMEOUT_S:g} s"
                ) from None
            raise from_rpc_error(err) from None
        return gateway_pb2.GatewayLookupResponse(
            request_id=answer.request_id,
            uscc=answer.uscc,
            name=answer.name,
            datasets=answer.datasets,
        )

    async def GetCatalog(
        self, request: gateway_pb2.GetCatalogRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetCatalogResponse:
        return self.catalog_msg
