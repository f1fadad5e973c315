"""A provider follows the platform's list of enterprise-signed revocations, and keeps
following it when the platform's database is restored from a backup (its numbers then
name other revocations).  The platform here is a fake peer serving a list."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provider_node.guard import Guard, revocations
from tests.conftest import fresh_database
from tests.test_token_cache import make_guard
from tests.test_tokens import CERT, ENTERPRISE, NOW, USCC
from veil.tokens import sign_revocation
from veil.v1 import platform_pb2


class FakePlatform:
    """``ListRevocations`` over a list the test edits, as the platform pages it."""

    def __init__(self) -> None:
        self.notices: list[platform_pb2.RevocationNotice] = []
        self.asked: list[int] = []

    def revoke(self, seq: int, grant_id: str | None = None) -> str:
        grant_id = grant_id or str(uuid.uuid4())
        jws = sign_revocation(ENTERPRISE, CERT, uscc=USCC, grant_id=grant_id, now=NOW)
        self.notices.append(
            platform_pb2.RevocationNotice(seq=seq, uscc=USCC, grant_id=grant_id, revocation_jws=jws)
        )
        return grant_id

    async def ListRevocations(
        self, request: platform_pb2.ListRevocationsRequest, timeout: float
    ) -> platform_pb2.ListRevocationsResponse:
        self.asked.append(request.after_seq)
        page = [n for n in self.notices if n.seq > request.after_seq][: request.limit or 1000]
        return platform_pb2.ListRevocationsResponse(revocations=page)


def follow(guard: Guard, platform: FakePlatform) -> int:
    return asyncio.run(guard.follow_revocations(platform))  # type: ignore[arg-type]


def kept(guard: Guard) -> dict[str, int]:
    """Grant id -> the platform's number for it, of every kept revocation."""
    with guard.engine.connect() as conn:
        rows = conn.execute(select(revocations.c.grant_id, revocations.c.seq)).all()
    return {row.grant_id: row.seq for row in rows}


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    with fresh_database(request.param, tmp_path, "revocations") as engine:
        yield engine


def test_a_provider_reads_each_revocation_once_checking_where_it_left_off(
    engine: Any, tmp_path: Path
) -> None:
    platform, guard = FakePlatform(), make_guard(tmp_path, engine)
    a, b = platform.revoke(1), platform.revoke(2)
    assert follow(guard, platform) == 2
    c = platform.revoke(5)  # numbers need not be dense
    assert follow(guard, platform) == 1
    assert follow(guard, platform) == 0
    assert platform.asked == [0, 1, 4]  # from the start, then from the last one read
    assert kept(guard) == {a: 1, b: 2, c: 5}


def test_after_a_restore_the_provider_reads_every_revocation_again_and_keeps_the_lost(
    engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform, guard = FakePlatform(), make_guard(tmp_path, engine)
    a, lost_b, lost_c = platform.revoke(1), platform.revoke(2), platform.revoke(3)
    follow(guard, platform)
    # restored from a backup taken after #1: #2 and #3 are gone, and the platform
    # numbers the next revocations 2, 3, 4
    platform.notices = platform.notices[:1]
    d, e, f = platform.revoke(2), platform.revoke(3), platform.revoke(4)
    assert follow(guard, platform) == 4
    assert "restored from a backup" in caplog.text
    # every revocation the enterprises signed stays: the lost ones off the list (0)
    assert kept(guard) == {a: 1, lost_b: 0, lost_c: 0, d: 2, e: 3, f: 4}
    g = platform.revoke(6)
    assert follow(guard, platform) == 1
    assert kept(guard)[g] == 6
    assert platform.asked[-1] == 3  # following normally again, from #4


def test_a_restarted_provider_notices_a_restore_made_while_it_was_down(
    engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform = FakePlatform()
    a, lost = platform.revoke(1), platform.revoke(2)
    follow(make_guard(tmp_path, engine), platform)
    # restored while the provider was down, then revocations past the old numbers
    platform.notices = platform.notices[:1]
    d, e, f = platform.revoke(2), platform.revoke(3), platform.revoke(4)
    restarted = make_guard(tmp_path, engine)
    assert follow(restarted, platform) == 4
    assert "restored from a backup" in caplog.text
    assert kept(restarted) == {a: 1, lost: 0, d: 2, e: 3, f: 4}
    caplog.clear()
    assert follow(make_guard(tmp_path, engine), platform) == 0  # no second alarm
    assert "restored" not in caplog.text


def test_a_refused_notice_is_passed_once_not_fetched_forever(
    engine: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform, guard = FakePlatform(), make_guard(tmp_path, engine)
    a = platform.revoke(1)
    forged = platform.revoke(2)
    platform.notices[-1].grant_id = "someone-else"  # the relay altered it
    b = platform.revoke(3)
    assert follow(guard, platform) == 3
    assert "ignored revocation 2" in caplog.text
    assert kept(guard) == {a: 1, b: 3}
    assert forged not in kept(guard)
    assert follow(guard, platform) == 0
