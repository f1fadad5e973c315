"""Adaptive batching of calls to one peer: many requests, one RPC (the platform's calls
to each provider, the gateway's coalesced calls to the platform).

Each online request (a score, a composite check) asks every provider one small question.
Per call a provider pays a fixed price — a gRPC round trip through two Python event
loops, a worker-thread hop, a durable commit of its ledger — that is several times the
cryptography of the answer.  :class:`CallBatcher` shares that price between requests in
flight at the same moment, without ever making a lone request wait:

* a request is sent at once while no call to the provider is outstanding
  (``max_in_flight = 1``; under light load: a batch of one, no added latency) — with
  the requests queued in the same pass of the event loop, since a call takes its batch
  when it starts;
* otherwise it queues, and the next call to leave takes everything queued (up to
  ``max_batch``).  Batch size therefore follows load, like a group commit;
* a queued request never waits on a slow call longer than ``max_wait_s`` (50 ms): then
  it leaves in a call of its own, up to ``max_parallel`` (4) calls at once.

Measured on the 2-core machine (``docs/performance-history.md``): one call at a time gives about
12 % more six-provider checks per second than four, because the calls it saves are what
a provider pays most for.

A batch is one RPC; the provider answers item by item, each with its answer or its own
refusal (:func:`veil.errors.from_status_bytes`), so one refused request never fails
another.  A failure of the RPC itself (the provider unreachable, a timeout) fails every
item of it with the same error.

Privacy: a batch carries the same per-request messages as separate calls would — each
with its own request token, grant and masks — so the provider learns nothing it would
not have learned from them one by one, except that they arrived together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import Histogram

from veil.errors import InvalidArgument, VeilError

log = logging.getLogger("veil.platform.call_batcher")

BATCH_ITEMS = Histogram(
    "veil_batched_call_items",
    "Requests carried by one batched call to a provider, by call",
    ["call"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)

Req = TypeVar("Req")
Resp = TypeVar("Resp")

DEFAULT_MAX_BATCH = 64
MAX_PER_CALL = 256
"""Requests one VerifyMany / ScoreMany / coalesced forwarded call may carry (the gateway
and the platform both hold callers to it; the proto says 1 to 256)."""
DEFAULT_MAX_IN_FLIGHT = 1
DEFAULT_MAX_WAIT_S = 0.05
DEFAULT_MAX_PARALLEL = 4

Send = Callable[[list[Req]], Awaitable[Sequence["Resp | VeilError"]]]


@dataclass
class _Waiting(Generic[Req, Resp]):
    request: Req
    done: asyncio.Future[Resp] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CallBatcher(Generic[Req, Resp]):
    """Coalesce concurrent calls of one kind to one provider into batched RPCs.

    ``send(requests)`` makes the RPC and returns, in order, each item's answer or its
    :class:`VeilError`; if it raises, every item of the batch fails with that error.
    """

    def __init__(
        self,
        send: Send[Req, Resp],
        *,
        name: str = "batched",
        max_batch: int = DEFAULT_MAX_BATCH,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or max_parallel < max_in_flight:
            raise InvalidArgument(
                "max_batch and max_in_flight must be at least 1, max_parallel ≥ max_in_flight"
            )
        if not 0 < max_wait_s <= 10:
            raise InvalidArgument("max_wait_s must be in (0, 10] seconds")
        self._send = send
        self._items = BATCH_ITEMS.labels(name)
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.max_wait_s = max_wait_s
        self.max_parallel = max_parallel
        self._overdue_timer: asyncio.TimerHandle | None = None
        self._queue: list[_Waiting[Req, Resp]] = []
        self._in_flight = 0
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # RPCs made (for tests and metrics)
        self.items = 0  # requests they carried

    async def call(self, request: Req) -> Resp:
        """This request's answer, or raise its (or its batch's) :class:`VeilError`."""
        waiting: _Waiting[Req, Resp] = _Waiting(request)
        self._queue.append(waiting)
        self._dispatch()
        return await waiting.done

    def _dispatch(self, limit: int | None = None) -> None:
        # A caller that gave up while queued (its deadline, a cancelled request) is not
        # sent: the provider would answer, and record a use of its data, for nobody.
        self._queue = [w for w in self._queue if not w.done.done()]
        unclaimed = len(self._queue) - self._starting * self.max_batch
        while unclaimed > 0 and self._in_flight < (limit or self.max_in_flight):
            self._in_flight += 1
            self._starting += 1
            unclaimed -= self.max_batch
            task = asyncio.create_task(self._flush_queued())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if unclaimed > 0 and self._overdue_timer is None:
            loop = asyncio.get_running_loop()
            self._overdue_timer = loop.call_later(self.max_wait_s, self._overdue)

    def _overdue(self) -> None:
        """The queue waited ``max_wait_s`` on slow calls: send it alongside them."""
        self._overdue_timer = None
        self._dispatch(self.max_parallel)

    async def _flush_queued(self) -> None:
        """Take the batch when the call starts, not when it was decided: the requests
        queued in the same pass of the event loop (a coalesced batch of checks reaching
        their fan-out together) leave in this one call."""
        self._starting -= 1
        self._queue = [w for w in self._queue if not w.done.done()]
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        if not batch:
            self._in_flight -= 1
            return
        self._dispatch()  # more than max_batch queued: another free slot may take them
        await self._flush(batch)

    async def _flush(self, batch: list[_Waiting[Req, Resp]]) -> None:
        try:
            self.batches += 1
            self.items += len(batch)
            self._items.observe(len(batch))
            try:
                answers = await self._send([w.request for w in batch])
                if len(answers) != len(batch):
                    raise VeilError(
                        f"a batched answer has {len(answers)} items for {len(batch)} requests"
                    )
            except VeilError as exc:
                answers = [exc] * len(batch)
            except Exception as exc:  # a bug must not leave callers waiting forever
                log.exception("a batched call failed")
                answers = [VeilError(f"batched call failed: {type(exc).__name__}")] * len(batch)
            for waiting, answer in zip(batch, answers, strict=True):
                if waiting.done.done():  # the caller was cancelled meanwhile
                    continue
                if isinstance(answer, VeilError):
                    waiting.done.set_exception(answer)
                else:
                    waiting.done.set_result(answer)
        finally:
            self._in_flight -= 1
            self._dispatch()
