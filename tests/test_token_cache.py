"""The grant verification cache (``veil.tokens.GrantVerifier``) and the provider's Guard
using it: a cached grant is still refused when it is revoked, expired, outside its
window or replayed, and a token that differs in one byte is verified from scratch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider_node.guard import GrantRevoked, Guard, PlatformKeys, Replayed
from tests.conftest import fresh_database
from tests.test_tokens import (
    CERT,
    CLOCK_SKEW_S,
    DAY,
    EIA,
    EIA_KEYS,
    ENTERPRISE,
    NOW,
    PLATFORM,
    PLATFORM_KEYS,
    USCC,
    make_claims,
    make_grant,
)
from veil.errors import (
    BadSignature,
    ExpiredToken,
    GrantNotActive,
    InvalidToken,
    NotYetValid,
    UnknownKey,
    VeilError,
)
from veil.store import make_engine
from veil.tokens import (
    GrantVerifier,
    KeySet,
    SigningKey,
    issue_enterprise_certificate,
    issue_request_token,
    sign_grant,
    sign_revocation,
    verify_grant,
)
from veil.v1 import platform_pb2


def flip(token: str, part: int) -> str:
    """``token`` with one character of segment ``part`` changed (still base64url)."""
    parts = token.split(".")
    seg = parts[part]
    i = len(seg) // 2
    parts[part] = seg[:i] + ("A" if seg[i] != "A" else "B") + seg[i + 1 :]
    return ".".join(parts)


def outcome(fn: object, *args: object, **kw: object) -> object:
    try:
        return fn(*args, **kw)  # type: ignore[operator]
    except VeilError as exc:
        return type(exc)


def test_second_verification_is_a_hit_and_returns_the_same_grant() -> None:
    grant = make_grant()
    token = sign_grant(ENTERPRISE, CERT, grant)
    cache = GrantVerifier(EIA_KEYS)
    assert cache.verify(token, now=NOW) == grant
    assert cache.verify(token, now=NOW + 60) == grant
    assert (cache.hits, cache.misses) == (1, 1)


def test_cached_clock_checks_equal_the_uncached_ones_at_every_edge() -> None:
    """Certificate validity, grant iat and window are re-checked on every hit."""
    cert = issue_enterprise_certificate(
        EIA, uscc=USCC, name="x", enterprise_jwk=ENTERPRISE.public_jwk(), lifetime_s=20 * DAY,
        now=NOW - DAY,
    )  # fmt: skip
    grant = make_grant(not_before=NOW, expires=NOW + 10 * DAY, issued_at=NOW)
    token = sign_grant(ENTERPRISE, cert, grant)
    cache = GrantVerifier(EIA_KEYS)
    cache.verify(token, now=NOW + 1)  # warm
    times = [
        NOW - DAY - CLOCK_SKEW_S - 1,  # before the certificate
        NOW - CLOCK_SKEW_S - 1,  # grant issued in the future / not yet active
        NOW - CLOCK_SKEW_S,
        NOW + 10 * DAY + CLOCK_SKEW_S - 1,
        NOW + 10 * DAY + CLOCK_SKEW_S,  # grant expired
        NOW + 19 * DAY + CLOCK_SKEW_S,  # certificate expired
    ]
    got = [outcome(cache.verify, token, now=t) for t in times]
    want = [outcome(verify_grant, token, EIA_KEYS, now=t) for t in times]
    assert got == want
    assert got[1] in (NotYetValid, GrantNotActive) and got[4] is GrantNotActive
    assert got[5] is ExpiredToken and got[0] is NotYetValid
    assert cache.misses == 1  # every edge was decided from the cached entry


@pytest.mark.parametrize("part", [0, 1, 2])
def test_an_altered_byte_misses_the_cache_and_is_refused(part: int) -> None:
    token = sign_grant(ENTERPRISE, CERT, make_grant())
    cache = GrantVerifier(EIA_KEYS)
    cache.verify(token, now=NOW)
    with pytest.raises((BadSignature, InvalidToken)):
        cache.verify(flip(token, part), now=NOW)
    assert cache.misses == 2 and len(cache) == 1  # failures are never cached


def test_a_cache_belongs_to_its_key_set() -> None:
    token = sign_grant(ENTERPRISE, CERT, make_grant())
    GrantVerifier(EIA_KEYS).verify(token, now=NOW)
    other = GrantVerifier(KeySet.of(SigningKey.generate(), label="other EIA"))
    with pytest.raises(UnknownKey):
        other.verify(token, now=NOW)


def test_least_recently_used_entries_are_evicted() -> None:
    cache = GrantVerifier(EIA_KEYS, max_entries=2)
    tokens = [sign_grant(ENTERPRISE, CERT, make_grant(loan_ref=f"L-{i}")) for i in range(3)]
    for token in tokens:
        cache.verify(token, now=NOW)
    assert len(cache) == 2
    cache.verify(tokens[0], now=NOW)
    assert cache.misses == 4  # the first was evicted and verified again


# --- the provider's Guard ---------------------------------------------------------------


def make_guard(tmp_path: Path, engine: Any = None) -> Guard:
    keys = PlatformKeys(platform=None)  # type: ignore[arg-type]
    keys.keys = PLATFORM_KEYS  # as if fetched: no platform call needed
    return Guard(
        unit="tax",
        engine=engine if engine is not None else make_engine(f"sqlite:///{tmp_path / 'guard.db'}"),
        eia_keys=EIA_KEYS,
        platform_keys=keys,
    )


def authenticate(
    guard: Guard, rid: str, grant_jws: str, now: int = NOW, **claims: Any
) -> tuple[Any, Any]:
    """The stateless checks of a request ``rid`` (its token issued at ``now``) under
    ``grant_jws``."""
    token = issue_request_token(
        PLATFORM, make_claims(request_id=rid, issued_at=now, expires=now + 60, **claims)
    )
    return asyncio.run(
        guard.authenticate(
            request_id=rid,
            uscc=USCC,
            fields=["tax_credit_rating"],
            request_token=token,
            grant_jws=grant_jws,
            now=now,
        )
    )


def check(guard: Guard, rid: str, grant_jws: str, now: int = NOW) -> object:
    """A handler's two steps: the stateless checks, then the replay claim and the
    revocation look-up (here with nothing read inside)."""
    verified, grant = authenticate(guard, rid, grant_jws, now)
    with guard.claimed(verified, grant):
        pass
    return verified


def test_guard_refuses_a_revoked_grant_whose_verification_is_cached(tmp_path: Path) -> None:
    guard = make_guard(tmp_path)
    grant = make_grant()
    grant_jws = sign_grant(ENTERPRISE, CERT, grant)
    check(guard, "req-0000000000000001", grant_jws)
    check(guard, "req-0000000000000002", grant_jws)
    assert guard.grants.hits == 1
    revocation = sign_revocation(ENTERPRISE, CERT, uscc=USCC, grant_id=grant.grant_id, now=NOW)
    guard.store_revocation(
        platform_pb2.RevocationNotice(
            seq=1, uscc=USCC, grant_id=grant.grant_id, revocation_jws=revocation
        )
    )
    with pytest.raises(GrantRevoked):
        check(guard, "req-0000000000000003", grant_jws)
    assert guard.grants.hits == 2  # refused although the signatures came from the cache


def test_guard_refuses_replays_expired_and_altered_grants_despite_the_cache(
    tmp_path: Path,
) -> None:
    guard = make_guard(tmp_path)
    grant = make_grant(expires=NOW + 100)
    grant_jws = sign_grant(ENTERPRISE, CERT, grant)
    check(guard, "req-0000000000000001", grant_jws)
    with pytest.raises(Replayed):
        check(guard, "req-0000000000000001", grant_jws)
    with pytest.raises(GrantNotActive):
        check(guard, "req-0000000000000002", grant_jws, now=NOW + 100 + CLOCK_SKEW_S)
    with pytest.raises((BadSignature, InvalidToken)):
        check(guard, "req-0000000000000003", flip(grant_jws, 1))
    assert guard.grants.hits == 2 and guard.grants.misses == 2


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The provider's ledger database: a SQLite file, or a fresh PostgreSQL schema."""
    with fresh_database(request.param, tmp_path, "guard") as engine:
        yield engine


def test_claim_and_ledger_row_commit_once_and_roll_back_together(
    tmp_path: Path, ledger_engine: Any
) -> None:
    """``Guard.claimed``: replay claim + revocation check + ledger row = one commit; a
    replay is refused before the block runs; a failure inside rolls both back.  The same
    on PostgreSQL, where the claim is ``INSERT … ON CONFLICT DO NOTHING RETURNING``."""
    from sqlalchemy import event

    from provider_node.ledger import Ledger

    guard = make_guard(tmp_path, ledger_engine)
    ledger = Ledger(guard.engine)
    grant_jws = sign_grant(ENTERPRISE, CERT, make_grant())

    def authenticated(rid: str) -> tuple[Any, Any]:
        return authenticate(guard, rid, grant_jws)

    def row(rid: str, conn: Any) -> None:
        ledger.record(
            request_id=rid,
            method="VerifyClaim",
            caller="platform/platform",
            uscc=USCC,
            datasets=["tax_credit"],
            outcome="answered",
            conn=conn,
        )

    commits: list[int] = []
    event.listen(guard.engine, "commit", lambda conn: commits.append(1))
    claims, grant = authenticated("req-0000000000000001")
    with guard.claimed(claims, grant) as conn:
        row(claims.request_id, conn)
    assert len(commits) == 1
    reached = False
    with pytest.raises(Replayed), guard.claimed(claims, grant) as conn:
        reached = True
    assert not reached
    other, grant = authenticated("req-0000000000000002")
    with pytest.raises(RuntimeError), guard.claimed(other, grant) as conn:
        row(other.request_id, conn)
        raise RuntimeError("the computation failed")
    assert [e.request_id for e in ledger.entries()] == ["req-0000000000000001"]
    with guard.claimed(other, grant):  # its id was not consumed by the failed attempt
        pass


def test_a_batch_item_refused_in_the_shared_transaction_writes_nothing(
    tmp_path: Path, ledger_engine: Any
) -> None:
    """How the batched paths (``ContributeMany``, ``PartialScores``) answer several items
    in one transaction without a savepoint each: ``refuse_revoked`` first, the claim
    last.  A revoked item and a replayed one raise having written nothing, the
    transaction stays usable (also on PostgreSQL) and commits the others' claims."""
    from sqlalchemy import func, select

    from provider_node.guard import seen_requests
    from veil.store import write_transaction

    guard = make_guard(tmp_path, ledger_engine)
    kept, revoked = make_grant(), make_grant(grant_id="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
    jws = {g.grant_id: sign_grant(ENTERPRISE, CERT, g) for g in (kept, revoked)}
    guard.store_revocation(
        platform_pb2.RevocationNotice(
            seq=1,
            uscc=USCC,
            grant_id=revoked.grant_id,
            revocation_jws=sign_revocation(
                ENTERPRISE, CERT, uscc=USCC, grant_id=revoked.grant_id, now=NOW
            ),
        )
    )

    def authenticated(rid: str, grant_id: str) -> tuple[Any, Any]:
        return authenticate(guard, rid, jws[grant_id], grant_id=grant_id)

    first = authenticated("req-0000000000000001", kept.grant_id)
    gone = authenticated("req-0000000000000002", revoked.grant_id)
    outcomes = []
    with write_transaction(guard.engine) as conn:
        for claims, grant in (first, gone, first):  # the third is a replay of the first
            try:
                guard.refuse_revoked(conn, grant)
                guard.claim(conn, claims)
                outcomes.append("answered")
            except (GrantRevoked, Replayed) as exc:
                outcomes.append(type(exc).__name__)
    assert outcomes == ["answered", "GrantRevoked", "Replayed"]
    with guard.engine.connect() as conn:
        ids = conn.execute(select(seen_requests.c.request_id)).scalars().all()
        assert ids == ["req-0000000000000001"]  # the refused items claimed nothing
        assert conn.execute(select(func.count()).select_from(seen_requests)).scalar_one() == 1
