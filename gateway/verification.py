"""VerificationService at the gateway: institutions' verification questions, forwarded.

``Verify`` and ``VerifyMany`` (up to 256 checks in one call, each answered or refused
on its own) need a client assertion (the interceptor in :mod:`gateway.auth`) and an
institution caller; the platform does everything else and returns the answer already
signed (``signed_result``, verifiable with ``GatewayService.GetJwks``).
``GetVerificationPolicy`` is public: the grid, the budgets and the providers' answer keys
are published so that anyone can check a result and know how coarse a question may be.
"""

from __future__ import annotations

from typing import Any

from gateway.forward import Coalesced, forward_many, request_id_of, require_caller, to_platform
from veil.server import ServiceBinding
from veil.uscc import validate_uscc
from veil.v1 import forwarding_pb2 as fpb
from veil.v1 import forwarding_pb2_grpc, verification_pb2_grpc
from veil.v1 import verification_pb2 as vpb

FORWARD_TIMEOUT_S = 10.0
FORWARD_MANY_TIMEOUT_S = 60.0
POLICY_TIMEOUT_S = 5.0


class VerificationForwarder(verification_pb2_grpc.VerificationServiceServicer):
    """``Verify`` calls in flight together leave for the platform in one
    ``Forwarding.VerifyForwarded`` (:class:`~gateway.forward.Coalesced`): each still gets
    exactly its own answer or refusal."""

    def __init__(
        self,
        platform: verification_pb2_grpc.VerificationServiceAsyncStub,
        forwarding: forwarding_pb2_grpc.ForwardingAsyncStub,
    ) -> None:
        self.platform = platform
        self._coalesced: Coalesced[vpb.VerifyRequest, vpb.VerifyResponse] = Coalesced(
            name="VerifyForwarded",
            lone=platform.Verify,
            together=forwarding.VerifyForwarded,
            item=fpb.ForwardedVerify,
            batch=fpb.ForwardedVerifyBatch,
            timeout_s=FORWARD_TIMEOUT_S,
        )

    async def Verify(self, request: vpb.VerifyRequest, context: Any) -> vpb.VerifyResponse:
        caller = require_caller("institution")
        validate_uscc(request.uscc)
        forwarded = vpb.VerifyRequest()
        forwarded.CopyFrom(request)
        forwarded.request_id = request_id_of(request.request_id)
        return await self._coalesced.call(caller, forwarded)

    async def VerifyMany(
        self, request: vpb.VerifyManyRequest, context: Any
    ) -> vpb.VerifyManyResponse:
        caller = require_caller("institution")
        answer: vpb.VerifyManyResponse = await forward_many(
            self.platform.VerifyMany, request, caller, FORWARD_MANY_TIMEOUT_S
        )
        return answer

    async def GetVerificationPolicy(
        self, request: vpb.GetVerificationPolicyRequest, context: Any
    ) -> vpb.VerificationPolicy:
        answer: vpb.VerificationPolicy = await to_platform(
            self.platform.GetVerificationPolicy, request, None, POLICY_TIMEOUT_S
        )
        return answer


def verification_binding(channel: Any) -> ServiceBinding:
    """The ServiceBinding the gateway adds to serve ``VerificationService`` over the
    platform channel it already has."""
    forwarder = VerificationForwarder(
        verification_pb2_grpc.VerificationServiceStub(channel),
        forwarding_pb2_grpc.ForwardingStub(channel),
    )
    return ServiceBinding(
        name=vpb.DESCRIPTOR.services_by_name["VerificationService"].full_name,
        register=lambda server: verification_pb2_grpc.add_VerificationServiceServicer_to_server(
            forwarder, server
        ),
    )
