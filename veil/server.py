"""gRPC server bootstrap shared by the provider, platform and gateway daemons.

:func:`create_server` gives every daemon the same shape:

* mutual TLS (:mod:`veil.tls`) — unknown clients fail in the handshake;
* the standard health service (``grpc.health.v1.Health``) and server reflection;
* two interceptors, outermost first:

  1. **error mapping** — a :class:`veil.errors.VeilError` raised by a handler becomes
     its gRPC status code and message plus a rich ``google.rpc.Status`` trailer
     (``ErrorInfo`` reason = class name, domain ``veil.v1``); any other exception
     becomes ``INTERNAL: internal error`` and is logged with its traceback here only;
  2. **peer role check** — the client certificate's ``veil://role/name`` identity
     must have one of ``allowed_roles``; otherwise ``UNAUTHENTICATED`` (no identity)
     or ``PERMISSION_DENIED`` (wrong role).  Health and reflection only need a
     CA-signed certificate (the handshake already proved that).  The identity is
     published to the handler in the :data:`current_peer` context variable.

The peer check runs inside the error mapping, so its refusals carry the same rich
status as handler errors.  gRPC aio runs every RPC in its own asyncio task, so the
context variable is per call.

Client side, :func:`connect` / :func:`call_with_deadline` make sure no outgoing call
is ever made without a deadline, and :func:`wait_healthy` polls a peer's health.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # public as grpc_health.v1.health.aio
from grpc_reflection.v1alpha import reflection

from veil._internal.status import error_trailer, rich_status_trailer
from veil.config import DEFAULT_EVENT_LOOP, TLSConfig
from veil.errors import (
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    VeilError,
    from_rpc_error,
)
from veil.tls import (
    ChannelOptions,
    PeerIdentity,
    peer_identity,
    secure_channel,
    server_credentials,
    warn_insecure,
)

log = logging.getLogger(__name__)

HEALTH_SERVICE = health.SERVICE_NAME
REFLECTION_SERVICE = reflection.SERVICE_NAME
# Methods any CA-signed peer may call, whatever its role.
EXEMPT_PREFIXES = (f"/{HEALTH_SERVICE}/", f"/{REFLECTION_SERVICE}/")

DEFAULT_CALL_TIMEOUT_S = 5.0
INTERNAL_MESSAGE = "internal error"

# gRPC sets SO_REUSEPORT by default on Linux, which lets a second daemon silently
# share a port that is already in use.  A daemon must fail to start instead.
DEFAULT_SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.so_reuseport", 0),)

current_peer: ContextVar[PeerIdentity | None] = ContextVar("veil_current_peer", default=None)
"""Identity of the authenticated client of the RPC being handled (``None`` without TLS)."""

Context = grpc.aio.ServicerContext[Any, Any]
Guard = Callable[[str, Context], contextlib.AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class ServiceBinding:
    """One service a daemon serves.

    ``name`` is the full protobuf service name (``veil.v1.Provider``), used for health
    and reflection; ``register`` adds the servicer, e.g.
    ``lambda s: provider_pb2_grpc.add_ProviderServicer_to_server(servicer, s)``.
    """

    name: str
    register: Callable[[grpc.aio.Server], None]


def require_peer(
    context: Context | None = None, roles: Collection[str] | None = None
) -> PeerIdentity:
    """The caller's identity, or raise ``Unauthenticated`` / ``PermissionDenied``.

    Handlers use this for checks finer than the server-wide ``allowed_roles`` (e.g.
    an admin-only method on the gateway).  Reads :data:`current_peer`, falling back
    to the call's auth context.  Without TLS there is no identity, so this raises.
    """
    peer = current_peer.get()
    if peer is None and context is not None:
        peer = peer_identity(context)
    if peer is None:
        raise Unauthenticated("no authenticated peer identity (a veil:// client certificate)")
    if roles is not None and peer.role not in roles:
        raise PermissionDenied(f"{peer} (role {peer.role}) may not do this")
    return peer


# --------------------------------------------------------------------------- interceptors


def _wrap_behavior(behavior: Callable[..., Any], method: str, guard: Guard) -> Callable[..., Any]:
    """Run ``behavior`` inside ``guard(method, context)``, keeping its calling style.

    Async-generator handlers stay async generators (the guard spans the whole
    stream); coroutine handlers — including streaming ones that use
    ``context.write`` like the health ``Watch`` — stay coroutines.
    """
    if inspect.isasyncgenfunction(behavior) or inspect.isgeneratorfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with guard(method, context):
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):
                    async for item in result:
                        yield item
                else:
                    for item in result:
                        yield item

        return stream

    async def unary(request: Any, context: Context) -> Any:
        async with guard(method, context):
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result

    return unary


def wrap_handler(
    handler: grpc.RpcMethodHandler | None, method: str, guard: Guard
) -> grpc.RpcMethodHandler | None:
    """A copy of ``handler`` whose behavior runs inside ``guard`` (all four kinds)."""
    if handler is None:
        return None
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_behavior(handler.unary_unary, method, guard), **kw
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_behavior(handler.unary_stream, method, guard), **kw
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_behavior(handler.stream_unary, method, guard), **kw
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_behavior(handler.stream_stream, method, guard), **kw
        )
    return handler


REFUSALS = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
"""Status codes that mean "refused": logged at WARNING by :class:`ErrorMappingInterceptor`."""


class WrappedHandlers:
    """:func:`wrap_handler` once per (handler, method): a server's handlers are fixed
    objects, and wrapping one anew for every call cost each call a few closures."""

    def __init__(self) -> None:
        self._cache: dict[tuple[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler | None] = {}

    def get(
        self, handler: grpc.RpcMethodHandler | None, method: str, guard: Guard
    ) -> grpc.RpcMethodHandler | None:
        if handler is None:
            return None
        key = (handler, method)
        try:
            wrapped = self._cache.get(key)
        except TypeError:  # a handler with an unhashable part: wrap it each time
            return wrap_handler(handler, method, guard)
        if wrapped is None:
            wrapped = wrap_handler(handler, method, guard)
            if len(self._cache) < _MAX_WRAPPED:  # a server has finitely many methods
                self._cache[key] = wrapped
        return wrapped


_MAX_WRAPPED = 4096


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """VeilError → its status code + rich details; anything else → opaque INTERNAL."""

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
    async def _guard(method: str, context: Context) -> AsyncIterator[None]:
        try:
            yield
        except grpc.aio.AbortError:
            raise  # the handler (or an inner guard) already chose a status
        except VeilError as exc:
            if exc.code in REFUSALS:
                # Every refusal, whichever check made it, is logged once, here, with who
                # asked: the node's own record of what it turned away and why.
                who = peer_identity(context)
                log.warning(
                    "refused %s from %s at %s: %s: %s",
                    method,
                    who.uri if who else "a peer without veil:// identity",
                    context.peer(),
                    exc.code.name,
                    exc.message,
                )
            else:
                log.debug("%s -> %s: %s", method, exc.code.name, exc.message)
            await context.abort(exc.code, exc.message, error_trailer(exc))
        except Exception:
            # Internals (paths, SQL, key material in reprs …) stay in the server log.
            log.exception("unhandled error in %s from %s", method, context.peer())
            code = grpc.StatusCode.INTERNAL
            await context.abort(
                code, INTERNAL_MESSAGE, rich_status_trailer(code, INTERNAL_MESSAGE, "Internal")
            )


class PeerRoleInterceptor(grpc.aio.ServerInterceptor):
    """Admit only callers whose certificate identity has an allowed role.

    ``allowed_roles=None`` admits every ``veil://`` identity from the CA.  Methods
    under ``exempt_prefixes`` (health, reflection) admit any CA-signed peer.
    """

    def __init__(
        self,
        allowed_roles: Collection[str] | None,
        exempt_prefixes: Sequence[str] = EXEMPT_PREFIXES,
    ) -> None:
        self.allowed_roles = None if allowed_roles is None else frozenset(allowed_roles)
        self.exempt_prefixes = tuple(exempt_prefixes)
        self._wrapped = WrappedHandlers()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return self._wrapped.get(handler, handler_call_details.method, self._guard)  # type: ignore[return-value]

    @contextlib.asynccontextmanager
    async def _guard(self, method: str, context: Context) -> AsyncIterator[None]:
        peer = peer_identity(context)
        if not method.startswith(self.exempt_prefixes):
            # Refusals are logged by ErrorMappingInterceptor (outermost), with the peer.
            if peer is None:
                raise Unauthenticated("client certificate carries no veil:// identity")
            if self.allowed_roles is not None and peer.role not in self.allowed_roles:
                raise PermissionDenied(f"{peer} (role {peer.role}) may not call {method}")
        token = current_peer.set(peer)
        try:
            yield
        finally:
            # A stream closed by the event loop's async-generator finalizer runs
            # outside the call's task; the variable dies with that task anyway.
            with contextlib.suppress(ValueError):
                current_peer.reset(token)


# --------------------------------------------------------------------------- server


async def create_server(
    address: str,
    tls: TLSConfig,
    bindings: Sequence[ServiceBinding],
    *,
    allowed_roles: Collection[str] | None,
    extra_interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    options: ChannelOptions = (),
) -> tuple[grpc.aio.Server, int, HealthServicer]:
    """Build, bind and start a server; return it, the bound port and its health servicer.

    ``address`` may use port 0 (the kernel picks; the real port is returned).  After
    start, ``""`` and every bound service report SERVING.  ``extra_interceptors`` run
    inside the error mapping and the peer check, so they see :data:`current_peer`.
    Raises :class:`veil.errors.Unavailable` if the address cannot be bound.
    """
    interceptors: list[grpc.aio.ServerInterceptor] = [ErrorMappingInterceptor()]
    if tls.insecure:
        warn_insecure(f"server on {address}")
    else:
        interceptors.append(PeerRoleInterceptor(allowed_roles))
    interceptors.extend(extra_interceptors)

    given = {key for key, _ in options}
    opts = [*options, *(o for o in DEFAULT_SERVER_OPTIONS if o[0] not in given)]
    server = grpc.aio.server(interceptors=interceptors, options=opts)
    for binding in bindings:
        binding.register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(dict.fromkeys([b.name for b in bindings] + [HEALTH_SERVICE, REFLECTION_SERVICE]))
    reflection.enable_server_reflection(names, server)

    try:
        if tls.insecure:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, server_credentials(tls))
    except RuntimeError as exc:
        raise Unavailable(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise Unavailable(f"cannot listen on {address}")

    await server.start()
    for binding in bindings:
        await health_servicer.set(binding.name, health_pb2.HealthCheckResponse.SERVING)
    log.info("listening on %s (port %d): %s", address, port, ", ".join(names))
    return server, port, health_servicer


async def serve_until_signal(
    server: grpc.aio.Server,
    health_servicer: HealthServicer,
    *,
    grace_s: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> None:
    """Serve until SIGTERM/SIGINT (or the server stops), then shut down gracefully.

    Order matters: health goes NOT_SERVING first so watchers and load balancers
    stop sending work, then ``server.stop(grace_s)`` refuses new calls and lets
    in-flight ones finish for up to ``grace_s`` seconds, then ``on_stop`` releases
    the daemon's resources (database engines, peer channels).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    sigs = tuple(signals)

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s: draining for up to %.1fs", sig.name, grace_s)
        stop.set()

    for sig in sigs:
        loop.add_signal_handler(sig, on_signal, sig)
    # Shielded: grpc awaits its internal shutdown future directly when no timeout is
    # given, so cancelling a plain wait_for_termination() task would cancel that
    # future and make the server.stop() below raise CancelledError.
    waiters: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(stop.wait()),
        asyncio.ensure_future(asyncio.shield(server.wait_for_termination())),
    ]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)
        for waiter in waiters:
            waiter.cancel()
        await health_servicer.enter_graceful_shutdown()
        await server.stop(grace_s)
        log.info("server stopped")
        if on_stop is not None:
            await on_stop()


def run_daemon(main: Coroutine[Any, Any, None], *, event_loop: str = DEFAULT_EVENT_LOOP) -> None:
    """Run a daemon's ``main`` to completion on the event loop its node names
    (``node.event_loop``).

    ``"uvloop"``, the default: libuv's event loop, whose scheduling, timers and socket
    handling are compiled.  A request crosses several daemons' loops (the gateway's, the
    platform's, every provider's) and each pays its loop on every hop: on the 2-core
    machine it cut the federation's CPU per score by 3-7 % and a lone score's latency by
    about a millisecond (``docs/performance-history.md``).  ``"asyncio"``: the standard library's
    loop, for its debugging tools.  Where uvloop is not installed (it does not support
    Windows) the standard loop runs, with a warning.
    """
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on the standard asyncio event loop")
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


# --------------------------------------------------------------------------- client side


class _Deadline:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    def _with_deadline(self, d: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if d.timeout is not None:
            return d
        return grpc.aio.ClientCallDetails(
            d.method, self.timeout_s, d.metadata, d.credentials, d.wait_for_ready
        )


class _UnaryUnaryDeadline(_Deadline, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_deadline(client_call_details), request)


class _UnaryStreamDeadline(_Deadline, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(self._with_deadline(client_call_details), request)


class _StreamUnaryDeadline(_Deadline, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(self._with_deadline(client_call_details), request_iterator)


class _StreamStreamDeadline(_Deadline, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self,
        continuation: Any,
        client_call_details: grpc.aio.ClientCallDetails,
        request_iterator: Any,
    ) -> Any:
        return await continuation(self._with_deadline(client_call_details), request_iterator)


def deadline_interceptors(
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors giving every call without a timeout ``timeout_s`` seconds.

    One object per call kind: grpc.aio files each interceptor under the *first*
    kind it is an instance of, so a single class deriving from all four would only
    ever see unary-unary calls.
    """
    kinds = (_UnaryUnaryDeadline, _UnaryStreamDeadline, _StreamUnaryDeadline, _StreamStreamDeadline)
    return [cast(grpc.aio.ClientInterceptor, kind(timeout_s)) for kind in kinds]


def connect(
    address: str,
    tls: TLSConfig,
    expected: PeerIdentity,
    *,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    options: ChannelOptions = (),
) -> grpc.aio.Channel:
    """A mutually authenticated channel to ``expected`` whose calls always have a deadline."""
    return secure_channel(
        address, tls, expected, options, interceptors=deadline_interceptors(timeout_s)
    )


async def call_with_deadline(
    method: Callable[..., Awaitable[Any]],
    request: Any,
    *,
    peer: str,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    metadata: Sequence[tuple[str, str | bytes]] | None = None,
) -> Any:
    """Call a unary method with a deadline and turn failures into :class:`VeilError`.

    ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` become :class:`Unavailable` naming
    ``peer``; other statuses map through :func:`veil.errors.from_rpc_error`.
    """
    try:
        return await method(request, timeout=timeout_s, metadata=metadata)
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise Unavailable(
                f"{peer} unreachable within {timeout_s:g}s ({code.name})",
                details={"peer": peer},
            ) from None
        raise from_rpc_error(err) from None


async def wait_healthy(
    address: str,
    tls: TLSConfig,
    expected: PeerIdentity,
    timeout_s: float,
    *,
    service: str = "",
    interval_s: float = 0.1,
) -> None:
    """Poll ``expected``'s health Check at ``address`` until it reports SERVING.

    Raises :class:`Unavailable` if it does not within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    async with secure_channel(address, tls, expected) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(
                    f"{expected} at {address} not healthy within {timeout_s:g}s ({last})",
                    details={"peer": expected.uri, "address": address},
                )
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=min(remaining, max(1.0, interval_s)),
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as err:
                last = err.code().name if hasattr(err, "code") else str(err)
            await asyncio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
