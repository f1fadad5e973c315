"""veil.call_batcher: alone at once, together in batches, errors item by item;
and the per-item rich status that carries a refusal inside a batched answer."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from veil._internal.status import error_status
from veil.call_batcher import CallBatcher
from veil.errors import (
    FailedPrecondition,
    InvalidArgument,
    Replayed,
    ResourceExhausted,
    Unavailable,
    VeilError,
    from_status_bytes,
)


class Provider:
    """Answers ``x`` with ``2x`` after ``delay``; refuses negative items; records batches."""

    def __init__(self, delay: float = 0.01, fail_whole: bool = False) -> None:
        self.delay = delay
        self.fail_whole = fail_whole
        self.batches: list[list[int]] = []

    async def send(self, items: list[int]) -> list[int | VeilError]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        if self.fail_whole:
            raise Unavailable("provider 'tax' is unreachable (5 s)")
        return [InvalidArgument(f"item {x} refused") if x < 0 else 2 * x for x in items]


def test_a_lone_call_is_sent_at_once_as_a_batch_of_one() -> None:
    async def go() -> tuple[int, list[list[int]]]:
        provider = Provider()
        batcher = CallBatcher(provider.send)
        return await batcher.call(21), provider.batches

    answer, batches = asyncio.run(go())
    assert answer == 42 and batches == [[21]]


def test_calls_queued_in_the_same_pass_leave_together_at_once() -> None:
    """A coalesced batch of checks reaches its fan-out in one pass of the event loop:
    with one call at a time (the default), all of them leave in the first call."""

    async def go() -> tuple[list[int], list[list[int]]]:
        provider = Provider()
        batcher = CallBatcher(provider.send)
        answers = await asyncio.gather(*(batcher.call(x) for x in range(1, 6)))
        return list(answers), provider.batches

    answers, batches = asyncio.run(go())
    assert answers == [2, 4, 6, 8, 10] and batches == [[1, 2, 3, 4, 5]]


def test_calls_in_flight_together_share_batches_and_get_their_own_answers() -> None:
    async def go() -> tuple[list[int | BaseException], Provider]:
        provider = Provider()
        batcher = CallBatcher(provider.send, name="test-share", max_batch=8, max_in_flight=2)
        items = [*range(1, 25), -5]
        answers = await asyncio.gather(*(batcher.call(x) for x in items), return_exceptions=True)
        return list(answers), provider

    from prometheus_client import REGISTRY

    def observed() -> float:
        labels = {"call": "test-share"}
        return REGISTRY.get_sample_value("veil_batched_call_items_sum", labels) or 0.0

    before = observed()
    answers, provider = asyncio.run(go())
    assert observed() - before == 25  # the histogram an operator reads batch sizes from
    assert answers[:24] == [2 * x for x in range(1, 25)]
    assert isinstance(answers[24], InvalidArgument) and "item -5" in str(answers[24])
    sizes = [len(b) for b in provider.batches]
    # queued in the same pass of the event loop: the first two calls leave at once, full
    assert sizes[:2] == [8, 8]
    assert max(sizes) == 8 and sum(sizes) == 25 and len(sizes) < 25
    assert sorted(x for b in provider.batches for x in b) == sorted([*range(1, 25), -5])


def test_a_request_queued_behind_a_slow_call_leaves_after_max_wait() -> None:
    async def go() -> tuple[list[list[int]], list[int]]:
        provider = Provider(delay=0.5)
        batcher = CallBatcher(provider.send, max_wait_s=0.05)
        first = asyncio.ensure_future(batcher.call(1))
        await asyncio.sleep(0)
        second = asyncio.ensure_future(batcher.call(2))
        await asyncio.sleep(0.02)
        queued = [len(b) for b in provider.batches]  # the second still waits
        await asyncio.sleep(0.1)  # past max_wait_s: it left in a call of its own
        sent = list(provider.batches)
        await asyncio.gather(first, second)
        return sent, queued

    sent, queued = asyncio.run(go())
    assert queued == [1] and sent == [[1], [2]]


def test_a_caller_that_gave_up_while_queued_is_not_sent() -> None:
    async def go() -> list[list[int]]:
        provider = Provider(delay=0.05)
        batcher = CallBatcher(provider.send)
        first = asyncio.ensure_future(batcher.call(1))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(batcher.call(2))
        kept = asyncio.ensure_future(batcher.call(3))
        await asyncio.sleep(0)
        gone.cancel()
        assert await first == 2 and await kept == 6
        return provider.batches

    assert asyncio.run(go()) == [[1], [3]]


def test_a_failed_call_fails_every_item_of_its_batch_only() -> None:
    async def go() -> list[BaseException | int]:
        provider = Provider(fail_whole=True)
        batcher = CallBatcher(provider.send)
        return list(
            await asyncio.gather(*(batcher.call(x) for x in range(5)), return_exceptions=True)
        )

    answers = asyncio.run(go())
    assert all(isinstance(a, Unavailable) and "unreachable" in str(a) for a in answers)


def test_a_short_answer_fails_the_batch_instead_of_mismatching_items() -> None:
    async def short(items: list[int]) -> list[int | VeilError]:
        return [1] * (len(items) - 1)

    async def go() -> BaseException:
        with pytest.raises(VeilError) as info:
            await CallBatcher(short).call(3)
        return info.value

    assert "0 items for 1 requests" in str(asyncio.run(go()))


def test_bad_settings_are_refused() -> None:
    bad: list[dict[str, Any]] = [
        {"max_batch": 0},
        {"max_in_flight": 2, "max_parallel": 1},
        {"max_wait_s": 0},
    ]
    for settings in bad:
        with pytest.raises(InvalidArgument):
            CallBatcher(Provider().send, **settings)


@pytest.mark.parametrize(
    "error",
    [
        Replayed("request r1 was already presented to tax"),
        FailedPrecondition("model m@1 is not installed", details={"reason": "not_installed"}),
        ResourceExhausted(
            "quota used up",
            details={"institution": "bank"},
            extra=[
                error_details_pb2.QuotaFailure(
                    violations=[
                        error_details_pb2.QuotaFailure.Violation(subject="a", description="b")
                    ]
                )
            ],
        ),
    ],
)
def test_an_item_refusal_round_trips_as_a_rich_status(error: VeilError) -> None:
    back = from_status_bytes(error_status(error))
    assert type(back) is type(error)
    assert (back.code, back.message, back.details) == (error.code, error.message, error.details)
    assert [type(m) for m in back.extra] == [type(m) for m in error.extra]


def test_an_unreadable_item_status_is_an_error_not_a_crash() -> None:
    back = from_status_bytes(b"\xff\xff not a status")
    assert isinstance(back, VeilError) and back.code == grpc.StatusCode.INTERNAL
