"""GatewayService: what institutions may ask, and what anyone may read (catalog, keys)."""

from __future__ import annotations

import grpc

from gateway.catalog_view import catalog_response
from gateway.forward import request_id_of, require_caller, to_platform
from veil.catalog import Catalog
from veil.uscc import validate_uscc
from veil.v1 import gateway_pb2, gateway_pb2_grpc, platform_pb2, platform_pb2_grpc


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self, catalog: Catalog, platform: platform_pb2_grpc.PlatformServiceAsyncStub
    ) -> None:
        self.platform = platform
        self.catalog_msg = catalog_response(catalog)

    async def LookupEnterprise(
        self, request: gateway_pb2.GatewayLookupRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GatewayLookupResponse:
        caller = require_caller("institution")
        validate_uscc(request.uscc)
        answer = await to_platform(
            self.platform.LookupEnterprise,
            platform_pb2.LookupEnterpriseRequest(
                request_id=request_id_of(request.request_id),
                uscc=request.uscc,
                institution_id=caller.subject,
            ),
            caller,
        )
        return gateway_pb2.GatewayLookupResponse(
            request_id=answer.request_id,
            uscc=answer.uscc,
            name=answer.name,
            datasets=answer.datasets,
            log_index=answer.log_index,
        )

    async def FetchAuthorized(
        self,
        request: gateway_pb2.GatewayFetchAuthorizedRequest,
        context: grpc.aio.ServicerContext,
    ) -> gateway_pb2.GatewayFetchAuthorizedResponse:
        caller = require_caller("institution")
        validate_uscc(request.uscc)
        answer = await to_platform(
            self.platform.FetchAuthorized,
            platform_pb2.FetchAuthorizedRequest(
                request_id=request_id_of(request.request_id),
                uscc=request.uscc,
                fields=request.fields,
                grant_id=request.grant_id,
                purpose=request.purpose,
                loan_ref=request.loan_ref,
                recipient_public_key=request.recipient_public_key,
            ),
            caller,
        )
        return gateway_pb2.GatewayFetchAuthorizedResponse(
            request_id=answer.request_id,
            uscc=answer.uscc,
            grant_id=answer.grant_id,
            sealed=answer.sealed,
            log_index=answer.log_index,
        )

    async def GetCatalog(
        self, request: gateway_pb2.GetCatalogRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetCatalogResponse:
        return self.catalog_msg

    async def GetJwks(
        self, request: gateway_pb2.GatewayGetJwksRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GatewayJwks:
        answer = await to_platform(self.platform.GetJwks, platform_pb2.GetJwksRequest(), None)
        return gateway_pb2.GatewayJwks(jwks_json=answer.jwks_json)
