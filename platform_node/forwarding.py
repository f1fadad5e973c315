"""``Forwarding`` at the platform: the calls the gateway coalesced (``veil/call_batcher.py``).

Each item carries the caller the gateway authenticated; only a gateway peer (its mTLS
certificate) may send them.  An item whose caller is malformed or not an institution is
refused as a lone call's :meth:`~platform_node.callers.CallerCheck.identify` would refuse
it (and, like that, not recorded); the others go to the service, which admits each under
its own caller and assertion and answers or refuses each in its place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc

from veil._internal.status import item_results
from veil.call_batcher import MAX_PER_CALL
from veil.caller import Caller, forwarded_caller
from veil.errors import FailedPrecondition, InvalidArgument, PermissionDenied, VeilError
from veil.server import require_peer
from veil.v1 import forwarding_pb2 as fpb
from veil.v1 import forwarding_pb2_grpc
from veil.v1 import scoring_pb2 as spb
from veil.v1 import verification_pb2 as vpb

R = TypeVar("R")


async def gather_outcomes(calls: Iterable[Awaitable[R]]) -> list[R | VeilError]:
    """Run ``calls`` together; each one's result or :class:`VeilError` in its place (any
    other exception is a bug and is raised)."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, VeilError):
            raise outcome
    return outcomes  # type: ignore[return-value]


async def answer_forwarded(
    items: Sequence[Any],
    handle: Callable[[list[tuple[Caller, Any]]], Awaitable[Sequence[R | VeilError]]],
) -> list[R | VeilError]:
    """Each item's caller checked, then ``handle`` for those that pass; every item's
    outcome in its place."""
    if not 1 <= len(items) <= MAX_PER_CALL:
        raise InvalidArgument(f"a batch carries 1 to {MAX_PER_CALL} items, not {len(items)}")
    outcomes: list[R | VeilError | None] = [None] * len(items)
    entries: list[tuple[Caller, Any]] = []
    where: list[int] = []
    for i, item in enumerate(items):
        try:
            sent = item.caller
            caller = forwarded_caller(sent.kind, sent.subject, sent.jti, sent.expires)
            if caller.kind != "institution":
                raise PermissionDenied("this call is for institution callers")
        except VeilError as exc:
            outcomes[i] = exc
            continue
        entries.append((caller, item.request))
        where.append(i)
    if entries:
        handled = await handle(entries)
        for i, outcome in zip(where, handled, strict=True):
            outcomes[i] = outcome
    return outcomes  # type: ignore[return-value]


def request_ids(requests: Sequence[Any], id_of: Callable[[Any], str]) -> list[str]:
    """The request ids of a call carrying many requests (``id_of`` assigns or checks
    one): INVALID_ARGUMENT for an empty or over-long batch, or naming the item whose id
    is malformed or repeats an earlier one."""
    if not 1 <= len(requests) <= MAX_PER_CALL:
        raise InvalidArgument(f"a batch carries 1 to {MAX_PER_CALL} requests, not {len(requests)}")
    ids: list[str] = []
    seen: set[str] = set()
    for i, request in enumerate(requests):
        try:
            rid = id_of(request)
        except InvalidArgument as exc:
            raise InvalidArgument(f"requests[{i}]: {exc.message}") from None
        if rid in seen:
            raise InvalidArgument(f"requests[{i}].request_id {rid!r} repeats an earlier one")
        seen.add(rid)
        ids.append(rid)
    return ids


class ForwardingServicer(forwarding_pb2_grpc.ForwardingServicer):
    """The platform's side of the gateway's coalesced calls (gateway peers only);
    ``verify`` / ``score`` are the services' handlers, None where the platform does not
    serve that service."""

    def __init__(
        self,
        *,
        verify: Callable[[list[tuple[Caller, Any]]], Awaitable[Sequence[Any]]] | None,
        score: Callable[[list[tuple[Caller, Any]]], Awaitable[Sequence[Any]]] | None,
    ) -> None:
        self._verify = verify
        self._score = score

    async def VerifyForwarded(
        self, request: fpb.ForwardedVerifyBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.VerifyManyResponse:
        require_peer(context, roles={"gateway"})
        if self._verify is None:
            raise FailedPrecondition("this platform does not serve verification")
        outcomes = await answer_forwarded(list(request.items), self._verify)
        return vpb.VerifyManyResponse(results=item_results(outcomes, vpb.VerifyResult))

    async def ScoreForwarded(
        self, request: fpb.ForwardedScoreBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> spb.ScoreManyResponse:
        require_peer(context, roles={"gateway"})
        if self._score is None:
            raise FailedPrecondition("this platform does not serve scoring")
        outcomes = await answer_forwarded(list(request.items), self._score)
        return spb.ScoreManyResponse(results=item_results(outcomes, spb.ScoreResult))
