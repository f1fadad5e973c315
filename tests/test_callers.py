"""The platform's admission of many requests in one transaction (``CallerCheck``), on
SQLite and PostgreSQL: a batch under one assertion (``VerifyMany``, ``ScoreMany``) and
the gateway's coalesced calls, each under its own (``Forwarding``).  Each item is
refused on its own, in its place; what the others write commits; every assertion is
consumed, refused or not; a replayed batch assertion writes nothing at all."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

from platform_node.callers import CallerCheck
from platform_node.registry import InstitutionRegistry, ReplayGuard
from tests.conftest import fresh_database
from tests.test_registry import register
from veil.caller import Caller
from veil.errors import InvalidArgument, PermissionDenied, Replayed, ResourceExhausted, VeilError

PURPOSE = "loan_origination"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    with fresh_database(request.param, tmp_path, "callers") as engine:
        yield engine


@pytest.fixture
def callers(engine: Engine) -> CallerCheck:
    institutions = InstitutionRegistry(engine)
    register(institutions, "bank-a", state="active")
    register(institutions, "bank-s", state="suspended")
    return CallerCheck(institutions, ReplayGuard(engine))


def caller(jti: str, subject: str = "bank-a") -> Caller:
    return Caller("institution", subject, jti, int(time.time()) + 600)


def later() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)


def mark(callers: CallerCheck, name: str) -> Callable[[Connection, Any], None]:
    """A write that claims the marker ``name`` (visible afterwards iff it committed)."""
    return lambda conn, _: callers.replay.claim_on(conn, "test", name, later())


def refuse_after(callers: CallerCheck, name: str) -> Callable[[Connection, Any], None]:
    def write(conn: Connection, _: Any) -> None:
        mark(callers, name)(conn, None)
        raise ResourceExhausted("budget spent")

    return write


def fail(exc: VeilError) -> Callable[[], None]:
    def check() -> None:
        raise exc

    return check


def committed(callers: CallerCheck, namespace: str, token_id: str) -> bool:
    try:
        callers.replay.claim(namespace, token_id, later())
    except Replayed:
        return True
    return False


def test_coalesced_items_are_each_refused_alone_and_the_rest_commits(
    callers: CallerCheck,
) -> None:
    ok = lambda: None  # noqa: E731
    items = [
        (caller("j1"), PURPOSE, ok, mark(callers, "w0")),
        (caller("j1"), PURPOSE, ok, mark(callers, "w1")),  # the first one's assertion again
        (caller("j2"), "no_such_purpose", ok, mark(callers, "w2")),
        (caller("j3"), PURPOSE, fail(InvalidArgument("bad claim")), mark(callers, "w3")),
        (caller("j4"), PURPOSE, ok, refuse_after(callers, "w4")),
        (caller("j5", "bank-s"), PURPOSE, ok, mark(callers, "w5")),  # suspended
        (caller("j6"), PURPOSE, ok, mark(callers, "w6")),
    ]
    refusals = callers.admit_forwarded(items)
    kinds = [type(r).__name__ if r else None for r in refusals]
    assert kinds == [
        None,
        "Replayed",
        "PermissionDenied",
        "InvalidArgument",
        "ResourceExhausted",
        "PermissionDenied",
        None,
    ]
    # the admitted items' writes committed, and the refused write's row (kept, as
    # admit_with keeps it); nothing of the items refused before their write
    assert [committed(callers, "test", f"w{i}") for i in range(7)] == [
        True,
        False,
        False,
        False,
        True,
        False,
        True,
    ]
    # every assertion was consumed, refused or not
    assert committed(callers, "institution:bank-a", "j2")
    assert committed(callers, "institution:bank-a", "j3")
    assert committed(callers, "institution:bank-s", "j5")


def test_a_batch_under_one_assertion_refuses_items_alone_and_a_replay_writes_nothing(
    callers: CallerCheck,
) -> None:
    ok = lambda: None  # noqa: E731
    one = caller("batch-1")
    items = [
        (PURPOSE, ok, mark(callers, "b0")),
        (PURPOSE, fail(PermissionDenied("no grant")), mark(callers, "b1")),
        (PURPOSE, ok, refuse_after(callers, "b2")),
        (PURPOSE, ok, mark(callers, "b3")),
    ]
    refusals = callers.admit_each_with(one, items)
    assert [type(r).__name__ if r else None for r in refusals] == [
        None,
        "PermissionDenied",
        "ResourceExhausted",
        None,
    ]
    assert [committed(callers, "test", f"b{i}") for i in range(4)] == [True, False, True, True]
    # the same assertion again: refused as a whole, and none of its items wrote
    again = [(PURPOSE, ok, mark(callers, "c0")), (PURPOSE, ok, mark(callers, "c1"))]
    with pytest.raises(Replayed):
        callers.admit_each_with(one, again)
    assert not committed(callers, "test", "c0") and not committed(callers, "test", "c1")
    # a suspended institution is refused as a whole; its assertion is consumed
    with pytest.raises(PermissionDenied):
        callers.admit_each_with(caller("batch-2", "bank-s"), [(PURPOSE, ok, mark(callers, "d0"))])
    assert not committed(callers, "test", "d0")
    assert committed(callers, "institution:bank-s", "batch-2")
