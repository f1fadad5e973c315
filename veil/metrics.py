"""Prometheus metrics for every daemon: RPC counts by outcome and latency, and how
well the randomizer pools keep up.

A node with ``node.metrics_listen = "host:port"`` serves ``/metrics`` there
(prometheus-client's own HTTP server).  Labels carry method names and status codes
only — never enterprise codes, institution names or values.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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


class _Pool(Protocol):
    @property
    def ready(self) -> int: ...
    @property
    def inline_count(self) -> int: ...


class PoolOwner(Protocol):
    """A service that keeps randomizer pools (``veil.crypto.RandomnessPool``)."""

    retired_inline: int  # inline randomizers of the pools it has closed

    def pools(self) -> Sequence[_Pool]: ...


class _PoolsCollector:
    """``veil_randomizer_pool_ready`` (precomputed randomizers waiting) and
    ``veil_randomizers_inline_total`` (randomizers computed on the request path because
    the pool was empty or still building its tables), by service.  A rising inline count
    says the pool is too small for the load (``pool_size``) or the node just started."""

    def __init__(self) -> None:
        self.owners: dict[str, weakref.WeakSet[Any]] = {}

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "veil_randomizer_pool_ready", "Precomputed randomizers waiting", labels=["service"]
        )
        inline = CounterMetricFamily(
            "veil_randomizers_inline",
            "Randomizers computed on the request path (pool empty or still setting up)",
            labels=["service"],
        )
        for service, owners in sorted(self.owners.items()):
            live = list(owners)
            pools = [pool for owner in live for pool in owner.pools()]
            ready.add_metric([service], sum(pool.ready for pool in pools))
            inline.add_metric(
                [service],
                sum(pool.inline_count for pool in pools) + sum(o.retired_inline for o in live),
            )
        yield ready
        yield inline


_POOLS = _PoolsCollector()
REGISTRY.register(_POOLS)


def watch_pools(service: str, owner: PoolOwner) -> None:
    """Export ``owner``'s pools under ``service`` for as long as it lives."""
    _POOLS.owners.setdefault(service, weakref.WeakSet()).add(owner)
