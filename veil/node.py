"""A started daemon: its server, bound port, health servicer and clean-up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1._async import HealthServicer

from veil.server import serve_until_signal


@dataclass
class RunningNode:
    """What every daemon's ``create_node(config)`` returns (already listening)."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    on_stop: Callable[[], Awaitable[None]] | None = None

    async def serve_until_signal(self, grace_s: float) -> None:
        """Serve until SIGTERM/SIGINT, then go NOT_SERVING, drain, and clean up."""
        await serve_until_signal(self.server, self.health, grace_s=grace_s, on_stop=self.on_stop)

    async def stop(self, grace_s: float = 0.0) -> None:
        await self.server.stop(grace_s)
        if self.on_stop is not None:
            await self.on_stop()
