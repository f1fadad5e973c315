"""Client side of caller authentication: a fresh client assertion on every call.

An institution's or enterprise's client attaches ``authorization: Bearer <jws>`` to each
call, each with its own ``jti`` (the platform refuses a replayed one).  Use
:func:`assertion_interceptors` when opening a channel to the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from veil.tokens import SigningKey, gateway_audience, make_client_assertion

ASSERTION_LIFETIME_S = 60


@dataclass(frozen=True)
class AssertionSigner:
    """Makes client assertions for one caller: an institution id or an enterprise USCC."""

    key: SigningKey
    issuer: str
    gateway_name: str
    eia_certificate: str | None = None  # enterprises: the EIA's certificate of ``key``

    def assertion(self, now: float | None = None) -> str:
        return make_client_assertion(
            self.key,
            issuer=self.issuer,
            audience=gateway_audience(self.gateway_name),
            lifetime_s=ASSERTION_LIFETIME_S,
            now=now,
            eia_certificate=self.eia_certificate,
        )


def _with_assertion(details: Any, signer: AssertionSigner) -> Any:
    metadata = list(details.metadata or ())
    metadata.append(("authorization", f"Bearer {signer.assertion()}"))
    return details._replace(metadata=metadata)


class _Base:
    def __init__(self, signer: AssertionSigner) -> None:
        self.signer = signer

    async def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return await continuation(_with_assertion(details, self.signer), request)


class _UnaryUnary(_Base, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._call(continuation, details, request)


class _UnaryStream(_Base, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._call(continuation, details, request)


class _StreamUnary(_Base, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._call(continuation, details, request)


class _StreamStream(_Base, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._call(continuation, details, request)


def assertion_interceptors(signer: AssertionSigner) -> list[grpc.aio.ClientInterceptor]:
    """One interceptor per call kind (aio files each interceptor under one kind only)."""
    kinds: list[Any] = [
        _UnaryUnary(signer),
        _UnaryStream(signer),
        _StreamUnary(signer),
        _StreamStream(signer),
    ]
    return kinds
