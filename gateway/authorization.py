"""AuthorizationService at the gateway: forwards enterprises' and institutions' calls.

The platform implements the service; the gateway authenticates the caller (client
assertion interceptor) and forwards who it is.  Which kind of caller may do what is
decided by the platform, which owns the grants.
"""

from __future__ import annotations

from typing import Any

from gateway.forward import require_caller, to_platform
from veil.v1 import authorization_pb2 as pb
from veil.v1 import authorization_pb2_grpc

FORWARD_TIMEOUT_S = 8.0


class AuthorizationForwarder(authorization_pb2_grpc.AuthorizationServiceServicer):
    def __init__(self, platform: authorization_pb2_grpc.AuthorizationServiceAsyncStub) -> None:
        self.platform = platform

    async def _forward(self, name: str, request: Any) -> Any:
        caller = require_caller("institution", "enterprise")
        return await to_platform(getattr(self.platform, name), request, caller, FORWARD_TIMEOUT_S)

    async def CreateGrant(self, request: pb.CreateGrantRequest, context: Any) -> pb.GrantInfo:
        return await self._forward("CreateGrant", request)

    async def RevokeGrant(self, request: pb.RevokeGrantRequest, context: Any) -> pb.GrantInfo:
        return await self._forward("RevokeGrant", request)

    async def ListGrants(
        self, request: pb.ListGrantsRequest, context: Any
    ) -> pb.ListGrantsResponse:
        return await self._forward("ListGrants", request)

    async def ListGrantUses(
        self, request: pb.ListGrantUsesRequest, context: Any
    ) -> pb.ListGrantUsesResponse:
        return await self._forward("ListGrantUses", request)

    async def UploadLetter(self, request: pb.UploadLetterRequest, context: Any) -> pb.LetterInfo:
        return await self._forward("UploadLetter", request)

    async def ListLetters(
        self, request: pb.ListLettersRequest, context: Any
    ) -> pb.ListLettersResponse:
        return await self._forward("ListLetters", request)
