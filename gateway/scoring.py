"""ScoringService at the gateway: institutions' scores, model cards and batch deliveries.

The gateway authenticates the institution (client assertion, bound to its certificate)
and forwards who it is; the platform checks the grant, runs the protocol and signs the
score.  Nothing about the score is computed or kept here.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.forward import Coalesced, forward_many, request_id_of, require_caller, to_platform
from gateway.jwks_http import JwksHttpServer, start_jwks_http
from veil.config import NodeConfig
from veil.errors import InvalidArgument
from veil.server import ServiceBinding
from veil.uscc import validate_uscc
from veil.v1 import forwarding_pb2 as fpb
from veil.v1 import forwarding_pb2_grpc, platform_pb2, platform_pb2_grpc, scoring_pb2_grpc
from veil.v1 import scoring_pb2 as pb

SCORE_TIMEOUT_S = 12.0
SCORE_MANY_TIMEOUT_S = 60.0
FORWARD_TIMEOUT_S = 8.0


class ScoringForwarder(scoring_pb2_grpc.ScoringServiceServicer):
    """``Score`` calls in flight together leave for the platform in one
    ``Forwarding.ScoreForwarded`` (:class:`~gateway.forward.Coalesced`): each still gets
    exactly its own score or refusal."""

    def __init__(
        self,
        platform: scoring_pb2_grpc.ScoringServiceAsyncStub,
        forwarding: forwarding_pb2_grpc.ForwardingAsyncStub,
    ) -> None:
        self.platform = platform
        self._coalesced: Coalesced[pb.ScoreRequest, pb.ScoreResponse] = Coalesced(
            name="ScoreForwarded",
            lone=platform.Score,
            together=forwarding.ScoreForwarded,
            item=fpb.ForwardedScore,
            batch=fpb.ForwardedScoreBatch,
            timeout_s=SCORE_TIMEOUT_S,
        )

    async def Score(self, request: pb.ScoreRequest, context: Any) -> pb.ScoreResponse:
        caller = require_caller("institution")
        validate_uscc(request.uscc)
        if not request.model_id:
            raise InvalidArgument("model_id is required")
        forwarded = pb.ScoreRequest()
        forwarded.CopyFrom(request)
        forwarded.request_id = request_id_of(request.request_id)
        return await self._coalesced.call(caller, forwarded)

    async def ScoreMany(self, request: pb.ScoreManyRequest, context: Any) -> pb.ScoreManyResponse:
        caller = require_caller("institution")
        answer: pb.ScoreManyResponse = await forward_many(
            self.platform.ScoreMany, request, caller, SCORE_MANY_TIMEOUT_S
        )
        return answer

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        caller = require_caller("institution")
        answer: pb.ListModelsResponse = await to_platform(
            self.platform.ListModels, request, caller, FORWARD_TIMEOUT_S
        )
        return answer

    async def Subscribe(self, request: pb.SubscribeRequest, context: Any) -> pb.Subscription:
        caller = require_caller("institution")
        answer: pb.Subscription = await to_platform(
            self.platform.Subscribe, request, caller, FORWARD_TIMEOUT_S
        )
        return answer

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Any
    ) -> pb.ListDeliveriesResponse:
        caller = require_caller("institution")
        answer: pb.ListDeliveriesResponse = await to_platform(
            self.platform.ListDeliveries, request, caller, FORWARD_TIMEOUT_S
        )
        return answer

    async def GetDelivery(
        self, request: pb.GetDeliveryRequest, context: Any
    ) -> pb.GetDeliveryResponse:
        caller = require_caller("institution")
        answer: pb.GetDeliveryResponse = await to_platform(
            self.platform.GetDelivery, request, caller, FORWARD_TIMEOUT_S
        )
        return answer


def scoring_binding(channel: grpc.aio.Channel) -> ServiceBinding:
    """ScoringService at the gateway, forwarding over the platform channel it has."""
    servicer = ScoringForwarder(
        scoring_pb2_grpc.ScoringServiceStub(channel), forwarding_pb2_grpc.ForwardingStub(channel)
    )
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["ScoringService"].full_name,
        register=lambda server: scoring_pb2_grpc.add_ScoringServiceServicer_to_server(
            servicer, server
        ),
    )


async def start_jwks(config: NodeConfig, channel: grpc.aio.Channel) -> JwksHttpServer | None:
    """``/.well-known/jwks.json`` over HTTP when ``[gateway] jwks_http_listen`` is set."""
    platform = platform_pb2_grpc.PlatformServiceStub(channel)

    async def fetch() -> str:
        answer = await to_platform(platform.GetJwks, platform_pb2.GetJwksRequest(), None, 5.0)
        return str(answer.jwks_json)

    return await start_jwks_http(config, fetch)
