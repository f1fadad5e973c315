"""Rich gRPC status (``google.rpc.Status``) for :class:`veil.errors.VeilError`.

The status travels in the ``grpc-status-details-bin`` trailer, which is what
``grpc_status.rpc_status.from_call`` reads on the client.  Its first detail is
always an ``ErrorInfo`` whose ``reason`` is the error class name (so clients can
tell ``InvalidUSCC`` from other ``INVALID_ARGUMENT`` errors) and whose ``metadata``
is the error's ``details`` dict; the error's ``extra`` messages follow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from veil.errors import VeilError

ERROR_DOMAIN = "veil.v1"
DETAILS_TRAILER = "grpc-status-details-bin"


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    extra: Sequence[Message] = (),
) -> status_pb2.Status:
    """A ``google.rpc.Status`` whose first detail is the ``ErrorInfo``."""
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=ERROR_DOMAIN, metadata=dict(metadata or {})
    )
    details = []
    for msg in (info, *extra):
        packed = any_pb2.Any()
        packed.Pack(msg)
        details.append(packed)
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def rich_status_trailer(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: Mapping[str, str] | None = None,
    extra: Sequence[Message] = (),
) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying a serialized ``google.rpc.Status``."""
    status = rich_status(code, message, reason, metadata, extra)
    return ((DETAILS_TRAILER, status.SerializeToString()),)


def error_status(exc: VeilError) -> bytes:
    """``exc`` as a serialized ``google.rpc.Status``: one item's refusal in a batched
    answer (read back with :func:`veil.errors.from_status_bytes`)."""
    status = rich_status(exc.code, exc.message, type(exc).__name__, exc.details, exc.extra)
    return status.SerializeToString()


def error_trailer(exc: VeilError) -> tuple[tuple[str, bytes], ...]:
    return rich_status_trailer(exc.code, exc.message, type(exc).__name__, exc.details, exc.extra)


M = TypeVar("M")


def item_results(outcomes: Sequence[Any | VeilError], result: Callable[..., M]) -> list[M]:
    """Each item of a batched answer: its answer, or its refusal as a serialized
    ``google.rpc.Status`` (:func:`error_status`), as the ``result`` message (a oneof of
    ``answer`` / ``error``: ``VerifyResult``, ``ScoreResult``, ``ContributeResult``…)."""
    return [
        result(error=error_status(o)) if isinstance(o, VeilError) else result(answer=o)
        for o in outcomes
    ]
