"""Prometheus metrics for every daemon: RPC counts by outcome and latency.

A node with ``node.metrics_listen = "host:port"`` serves ``/metrics`` there
(prometheus-client's own HTTP server).  Labels carry method names and status codes
only — never enterprise codes, institution names or values.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram, start_http_server

from veil.errors import VeilError
from veil.server import WrappedHandlers

RPCS = Counter("veil_rpc_total", "RPCs handled, by method and status code", ["method", "code"])
LATENCY = Histogram(
    "veil_rpc_seconds",
    "RPC handling time in seconds",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return self._wrapped.get(handler, handler_call_details.method, self._guard)  # type: ignore[return-value]

    @staticmethod
    @contextlib.asynccontextmanager
    async def _guard(method: str, context: Any) -> AsyncIterator[None]:
        started = time.perf_counter()
        code = "OK"
        try:
            yield
        except VeilError as exc:
            code = exc.code.name
            raise
        except grpc.aio.AbortError:
            status = context.code() if hasattr(context, "code") else None
            code = status.name if isinstance(status, grpc.StatusCode) else "ABORTED"
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            RPCS.labels(method, code).inc()
            LATENCY.labels(method).observe(time.perf_counter() - started)


def serve_metrics(listen: str | None) -> None:
    """Start the /metrics HTTP endpoint if ``listen`` (host:port) is configured."""
    if not listen:
        return
    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")
