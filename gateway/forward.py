"""Forwarding to the platform: the caller rides along in metadata, errors come back mapped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from veil.caller import Caller, current_caller
from veil.errors import PermissionDenied, Unauthenticated, Unavailable, from_rpc_error

PLATFORM_TIMEOUT_S = 10.0
T = TypeVar("T")


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
