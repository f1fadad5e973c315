"""Forwarding to the platform: the caller rides along in metadata, errors come back mapped.

:class:`Coalesced` sends calls of one kind that are in flight together in one
``Forwarding`` call, each item with its own caller (``proto/veil/v1/forwarding.proto``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc

from veil.call_batcher import MAX_PER_CALL, CallBatcher
from veil.caller import Caller, current_caller
from veil.errors import (
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    VeilError,
    from_rpc_error,
    from_status_bytes,
)
from veil.v1 import forwarding_pb2 as fpb

PLATFORM_TIMEOUT_S = 10.0
MAX_REQUEST_ID_LEN = 64
T = TypeVar("T")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def request_id_of(given: str) -> str:
    """The caller's request id, or a fresh one; refused when over-long."""
    if len(given) > MAX_REQUEST_ID_LEN:
        raise InvalidArgument(f"request_id is longer than {MAX_REQUEST_ID_LEN} characters")
    return given or uuid.uuid4().hex


async def forward_many(
    method: Callable[..., Awaitable[T]], request: Any, caller: Caller, timeout_s: float
) -> T:
    """A call carrying many requests (``VerifyMany``, ``ScoreMany``): 1 to
    :data:`MAX_PER_CALL` of them, each given its request id, forwarded as one call
    (INVALID_ARGUMENT naming the item that is malformed)."""
    count = len(request.requests)
    if not 1 <= count <= MAX_PER_CALL:
        raise InvalidArgument(f"a batch carries 1 to {MAX_PER_CALL} requests, not {count}")
    forwarded = type(request)()
    forwarded.CopyFrom(request)
    for i, item in enumerate(forwarded.requests):
        try:
            item.request_id = request_id_of(item.request_id)
        except InvalidArgument as exc:
            raise InvalidArgument(f"requests[{i}]: {exc.message}") from None
    return await to_platform(method, forwarded, caller, timeout_s)


def require_caller(*kinds: str) -> Caller:
    """The caller the assertion interceptor authenticated, if of one of ``kinds``."""
    caller = current_caller.get()
    if caller is None:
        raise Unauthenticated("no authenticated caller (client assertion)")
    if caller.kind not in kinds:
        raise PermissionDenied(f"this call is for {' or '.join(kinds)} callers, not {caller.kind}")
    return caller


async def to_platform(
    method: Callable[..., Awaitable[T]],
    request: Any,
    caller: Caller | None,
    timeout_s: float = PLATFORM_TIMEOUT_S,
) -> T:
    metadata = caller.metadata() if caller is not None else ()
    try:
        return await method(request, timeout=timeout_s, metadata=metadata)
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise Unavailable(f"the platform did not answer within {timeout_s:g} s") from None
        raise from_rpc_error(err) from None


class Coalesced(Generic[Req, Resp]):
    """One kind of call (``Verify``, ``Score``) forwarded to the platform, coalesced.

    A call leaves at once, as a lone call of its own, while no call of this kind is
    outstanding (no added latency); calls arriving meanwhile wait for it and then leave
    together in one ``together`` call (:class:`~veil.call_batcher.CallBatcher`), each
    item with the caller the gateway authenticated.  Each call gets exactly its own
    answer or refusal; a failure of the whole forwarded call fails each of its calls.
    The platform pays its per-call price (a gRPC call, a worker-thread hop, a commit)
    once per batch.
    """

    def __init__(
        self,
        *,
        name: str,
        lone: Callable[..., Awaitable[Resp]],
        together: Callable[..., Awaitable[Any]],
        item: Callable[..., Any],
        batch: Callable[..., Any],
        timeout_s: float,
    ) -> None:
        self._lone = lone
        self._together = together
        self._item = item
        self._batch = batch
        self._timeout_s = timeout_s
        self._batcher: CallBatcher[tuple[Caller, Req], Resp] = CallBatcher(
            self._send, name=name, max_batch=MAX_PER_CALL
        )

    async def call(self, caller: Caller, request: Req) -> Resp:
        return await self._batcher.call((caller, request))

    async def _send(self, items: list[tuple[Caller, Req]]) -> list[Resp | VeilError]:
        if len(items) == 1:
            caller, request = items[0]
            try:
                return [await to_platform(self._lone, request, caller, self._timeout_s)]
            except VeilError as exc:
                return [exc]
        batch = self._batch(
            items=[
                self._item(
                    caller=fpb.ForwardedCaller(
                        kind=caller.kind,
                        subject=caller.subject,
                        jti=caller.jti,
                        expires=caller.expires,
                    ),
                    request=request,
                )
                for caller, request in items
            ]
        )
        answer = await to_platform(self._together, batch, None, self._timeout_s)
        if len(answer.results) != len(items):
            raise Unavailable("the platform answered a coalesced call with the wrong count")
        return [
            result.answer
            if result.WhichOneof("outcome") == "answer"
            else from_status_bytes(result.error)
            for result in answer.results
        ]
