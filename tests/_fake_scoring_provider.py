"""A misbehaving provider for tests: serves ProviderScoring on a real provider's address
with its certificate and mask key, but answers PartialScore(s) with a malformed ciphertext.

    python tests/_fake_scoring_provider.py CONFIG MODE

MODE: out_of_range | wrong_length | not_coprime.

Prints ``ready`` once serving; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from sqlalchemy import create_engine, select

from provider_node.mask_keys import ProviderMaskKeys, mask_key_binding
from provider_node.scoring import installed_parts
from provider_node.settings import provider_settings
from veil.config import load_node_config
from veil.server import ServiceBinding, create_server
from veil.v1 import provider_scoring_pb2 as pb
from veil.v1 import provider_scoring_pb2_grpc


class Fake(provider_scoring_pb2_grpc.ProviderScoringServicer):
    def __init__(self, n: int, mode: str) -> None:
        self.n, self.mode = n, mode
        self.size = (2 * n.bit_length() + 7) // 8

    async def InstallModel(self, request: pb.InstallModelRequest, context: Any) -> Any:
        return pb.InstallModelResponse(model_id=request.model_id, version=request.version)

    async def PartialScore(self, request: pb.PartialScoreRequest, context: Any) -> Any:
        if self.mode == "wrong_length":
            blob = b"\x01" * 10
        elif self.mode == "not_coprime":
            blob = self.n.to_bytes(self.size, "big")
        else:
            blob = (self.n * self.n + 5).to_bytes(self.size, "big")
        return pb.PartialScoreResponse(request_id=request.request_id, ciphertext=blob)

    async def PartialScores(self, request: pb.PartialScoresRequest, context: Any) -> Any:
        return pb.PartialScoresResponse(
            results=[
                pb.PartialScoreResult(answer=await self.PartialScore(item, context))
                for item in request.requests
            ]
        )


async def main(config_path: str, mode: str) -> None:
    config = load_node_config(config_path)
    unit = provider_settings(config).unit
    ledger = str(config.section("ledger").get("url", config.store_url))
    with create_engine(ledger).connect() as conn:
        blob = conn.execute(select(installed_parts.c.request)).scalars().first()
    n = int.from_bytes(pb.InstallModelRequest.FromString(blob).paillier_n, "big")
    masks = ProviderMaskKeys.from_config(config, unit)
    fake = Fake(n, mode)
    binding = ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["ProviderScoring"].full_name,
        register=lambda server: provider_scoring_pb2_grpc.add_ProviderScoringServicer_to_server(
            fake, server
        ),
    )
    server, _, _ = await create_server(
        config.listen, config.tls, [binding, mask_key_binding(masks)], allowed_roles={"platform"}
    )
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
