"""The platform's authorization registries on SQLite and PostgreSQL (real servers, no mocks).

Institutions (lifecycle, every illegal transition, ids, keys), quotas (exact limit, UTC day
rollover, concurrency), the replay store, grants made with real EIA-certified enterprise
keys (create, letters, revocation by (uscc, grant_id), polling order, the platform-side
check for every mismatch, uses) and atomicity: a failing mutation leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import Engine, func, select

from platform_node.registry import (
    STATES,
    TRANSITIONS,
    GrantRegistry,
    InstitutionRegistry,
    ReplayGuard,
    list_events,
)
from platform_node.registry import grants as grants_module
from platform_node.registry import institutions as institutions_module
from platform_node.registry.schema import grants as grants_table
from platform_node.registry.schema import institutions as institutions_table
from tests.conftest import fresh_database
from veil.errors import (
    AlreadyExists,
    FailedPrecondition,
    GrantMismatch,
    GrantNotActive,
    InvalidArgument,
    InvalidJWK,
    NotFound,
    PermissionDenied,
    PurposeMismatch,
    Replayed,
    ResourceExhausted,
    ScopeExceeded,
    Unauthenticated,
    UnknownKey,
    UseNotGranted,
)
from veil.tokens import (
    CLOCK_SKEW_S,
    Grant,
    KeySet,
    SigningKey,
    issue_enterprise_certificate,
    sign_grant,
    sign_revocation,
    verify_revocation,
)

NOW = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
T = int(NOW.timestamp())
DAY = 86_400

USCC_A = "91110000MA01AB2C32"
USCC_B = "91310000MA1FL8X091"
DIGIT_USCC = "911100001000000248"  # a valid USCC of digits only: also a well-formed DNS label

FIELD_1 = "samr_business_scope"  # authorized_detail
FIELD_2 = "samr_company_type"  # authorized_detail
SECRET_FIELD = "samr_total_assets"  # verification_only


def _ed(seed: int) -> SigningKey:
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32))


def _p256(seed: int) -> SigningKey:
    return SigningKey(ec.derive_private_key(10**20 + seed, ec.SECP256R1()))


EIA = _ed(1)
EIA_KEYS = KeySet.of(EIA, label="EIA keys")
ROGUE_EIA = _ed(2)
ENT_A = _p256(3)
ENT_B = _ed(4)
CERT_A = issue_enterprise_certificate(
    EIA, uscc=USCC_A, name="A Co", enterprise_jwk=ENT_A.public_jwk(), now=T - DAY
)
CERT_B = issue_enterprise_certificate(
    EIA, uscc=USCC_B, name="B Co", enterprise_jwk=ENT_B.public_jwk(), now=T - DAY
)
ENTERPRISES = {USCC_A: (ENT_A, CERT_A), USCC_B: (ENT_B, CERT_B)}
BANK_KEY = _ed(5)
BANK_KEY_2 = _p256(6)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Engine]:
    """A fresh database: a SQLite file (WAL), or a new PostgreSQL schema dropped afterwards.

    PostgreSQL must be reachable: a connection error fails the test, never skips it.
    """
    with fresh_database(request.param, tmp_path, "registry") as engine:
        yield engine


@pytest.fixture
def inst(engine: Engine) -> InstitutionRegistry:
    return InstitutionRegistry(engine)


@pytest.fixture
def reg(engine: Engine, inst: InstitutionRegistry) -> GrantRegistry:
    return GrantRegistry(engine, EIA_KEYS, inst)


def register(
    inst: InstitutionRegistry,
    id: str = "bank-a",
    *,
    state: str = "applied",
    quota: int = 100,
    purposes: tuple[str, ...] = ("loan_origination", "post_loan_monitoring"),
) -> None:
    """Register an institution and walk it, legally, to ``state``."""
    inst.register(id, f"Bank {id}", "bank", purposes, quota, "admin:alice", now=NOW)
    path = {
        "applied": [],
        "assessed": ["assessed"],
        "active": ["assessed", "active"],
        "suspended": ["assessed", "active", "suspended"],
        "revoked": ["revoked"],
    }[state]
    for step in path:
        inst.set_state(id, step, "admin:bob", f"to {step}", now=NOW)


def make_grant(
    uscc: str = USCC_A,
    *,
    institution: str = "bank-a",
    fields: tuple[str, ...] = (FIELD_1, FIELD_2),
    uses: tuple[str, ...] = ("fetch",),
    purpose: str = "loan_origination",
    loan_ref: str = "LOAN-2024-001",
    nbf: int = T - 60,
    exp: int = T + 30 * DAY,
    letter: str | None = None,
    grant_id: str | None = None,
    signer: tuple[SigningKey, str] | None = None,
) -> tuple[str, str]:
    """A grant signed by the enterprise's certified key; returns (grant_id, jws)."""
    gid = grant_id or str(uuid.uuid4())
    key, cert = signer or ENTERPRISES[uscc]
    grant = Grant(
        grant_id=gid,
        uscc=uscc,
        institution=institution,
        fields=fields,
        uses=uses,
        purpose=purpose,
        loan_ref=loan_ref,
        not_before=nbf,
        expires=exp,
        issued_at=T - 60,
        letter_sha256=letter,
    )
    return gid, sign_grant(key, cert, grant)


def revocation(uscc: str, grant_id: str, at: int = T) -> str:
    key, cert = ENTERPRISES[uscc]
    return sign_revocation(key, cert, uscc=uscc, grant_id=grant_id, now=at)


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --- institutions -------------------------------------------------------------------------------


def test_institution_lifecycle_and_history(inst: InstitutionRegistry, engine: Engine) -> None:
    created = inst.register(
        "bank-a", "Bank A", "bank", ["loan_origination"], 10, "admin:alice", now=NOW
    )
    assert (created.state, created.purposes, created.daily_quota) == (
        "applied",
        ("loan_origination",),
        10,
    )
    assert created.created_at == NOW and created.keys == ()
    steps = [
        ("assessed", "security assessment passed"),
        ("active", "contract signed"),
        ("suspended", "incident"),
        ("active", "incident closed"),
        ("revoked", "contract ended"),
    ]
    for i, (state, reason) in enumerate(steps, start=1):
        got = inst.set_state("bank-a", state, f"admin:{i}", reason, now=NOW + dt.timedelta(i))
        assert got.state == state
    history = inst.history("bank-a")
    assert [(h.from_state, h.to_state) for h in history] == [
        (None, "applied"),
        ("applied", "assessed"),
        ("assessed", "active"),
        ("active", "suspended"),
        ("suspended", "active"),
        ("active", "revoked"),
    ]
    assert history[3].decided_by == "admin:3" and history[3].reason == "incident"
    assert history[3].at == NOW + dt.timedelta(3)
    events = list_events(engine, object_type="institution", object_id="bank-a")
    assert [e.action for e in events] == ["institution.register"] + ["institution.state"] * 5
    assert events[1].actor == "admin:1"
    assert events[1].detail == {
        "from": "applied",
        "to": "assessed",
        "reason": "security assessment passed",
    }
    assert [i.id for i in inst.list()] == ["bank-a"]


def test_update_purposes_and_quota_is_recorded_with_who_and_why(
    inst: InstitutionRegistry, engine: Engine
) -> None:
    inst.register(
        "bank-u", "Bank U", "bank", ["loan_origination"], 10, "admin:alice", now=NOW,
        reason="application 2026-041",
    )  # fmt: skip
    assert inst.history("bank-u")[0].reason == "application 2026-041"
    later = NOW + dt.timedelta(hours=1)
    got = inst.update(
        "bank-u",
        decided_by="admin:bob",
        purposes=["loan_origination", "credit_guarantee"],
        daily_quota=50,
        now=later,
        reason="guarantee business approved",
    )
    assert got.purposes == ("loan_origination", "credit_guarantee") and got.daily_quota == 50
    event = list_events(engine, object_type="institution", object_id="bank-u")[-1]
    assert (event.action, event.actor, event.at) == ("institution.update", "admin:bob", later)
    assert event.detail == {
        "purposes": {"from": ["loan_origination"], "to": ["loan_origination", "credit_guarantee"]},
        "daily_quota": {"from": 10, "to": 50},
        "reason": "guarantee business approved",
    }
    with pytest.raises(InvalidArgument):
        inst.update("bank-u", decided_by="admin:bob", daily_quota=1, reason="")
    assert inst.get("bank-u").daily_quota == 50


def test_every_illegal_transition_is_refused(inst: InstitutionRegistry) -> None:
    illegal = [(a, b) for a in STATES for b in STATES if (a, b) not in TRANSITIONS]
    assert len(illegal) == 25 - 8
    for state in STATES:
        register(inst, f"inst-{state}", state=state)
    for from_state, to_state in illegal:
        before = len(inst.history(f"inst-{from_state}"))
        with pytest.raises(FailedPrecondition) as exc:
            inst.set_state(f"inst-{from_state}", to_state, "admin:eve", "try", now=NOW)
        assert f"from {from_state} to {to_state}" in exc.value.message
        assert exc.value.details == {
            "institution": f"inst-{from_state}",
            "from": from_state,
            "to": to_state,
        }
        assert inst.get(f"inst-{from_state}").state == from_state
        assert len(inst.history(f"inst-{from_state}")) == before
    with pytest.raises(InvalidArgument):
        inst.set_state("inst-active", "deleted", "admin", "x", now=NOW)
    with pytest.raises(NotFound, match="no-such-bank"):
        inst.set_state("no-such-bank", "active", "admin", "x", now=NOW)
    with pytest.raises(NotFound, match="no-such-bank"):
        inst.get("no-such-bank")


@pytest.mark.parametrize(
    "bad_id",
    ["a", "-bank", "bank-", "Bank", "bank_a", "银行", "b" * 64, "bank.a", ""],
)
def test_malformed_institution_ids_refused(inst: InstitutionRegistry, bad_id: str) -> None:
    with pytest.raises(InvalidArgument, match="DNS label"):
        inst.register(bad_id, "X", "bank", ["loan_origination"], 1, "admin", now=NOW)


@pytest.mark.parametrize("uscc", [DIGIT_USCC, USCC_A.lower()])
def test_institution_id_that_is_a_uscc_refused(inst: InstitutionRegistry, uscc: str) -> None:
    with pytest.raises(InvalidArgument, match="USCC"):
        inst.register(uscc, "X", "bank", ["loan_origination"], 1, "admin", now=NOW)
    assert inst.list() == []


def test_register_validation(inst: InstitutionRegistry, engine: Engine) -> None:
    ok: dict[str, Any] = {
        "id": "ins-1",
        "name": "Insurer",
        "type": "insurer",
        "purposes": ["credit_insurance"],
        "daily_quota": 5,
        "decided_by": "admin",
        "now": NOW,
    }
    bad: list[dict[str, Any]] = [
        {"type": "casino"},
        {"purposes": ["marketing"]},
        {"purposes": []},
        {"purposes": "loan_origination"},
        {"daily_quota": -1},
        {"daily_quota": True},
        {"name": ""},
        {"now": dt.datetime(2024, 1, 1)},  # naive
    ]
    for change in bad:
        with pytest.raises(InvalidArgument):
            inst.register(**{**ok, **change})
    inst.register(**ok)
    with pytest.raises(AlreadyExists):
        inst.register(**ok)
    assert count(engine, institutions_table) == 1
    updated = inst.update(
        "ins-1", decided_by="admin", daily_quota=9, purposes=["credit_guarantee"], now=NOW
    )
    assert (updated.daily_quota, updated.purposes) == (9, ("credit_guarantee",))
    assert list_events(engine, object_id="ins-1")[-1].detail["daily_quota"] == {
        "from": 5,
        "to": 9,
    }


def test_keys_add_remove_and_refusals(inst: InstitutionRegistry, engine: Engine) -> None:
    register(inst, "bank-a", state="active")
    register(inst, "bank-b", state="active")
    got = inst.add_key("bank-a", BANK_KEY.public_jwk(), "admin", now=NOW)
    got = inst.add_key("bank-a", BANK_KEY_2.public_jwk(), "admin", now=NOW)
    assert [k["kid"] for k in got.keys] == [BANK_KEY.kid, BANK_KEY_2.kid]
    assert inst.jwks("bank-a") == {"keys": [BANK_KEY.public_jwk(), BANK_KEY_2.public_jwk()]}
    assert inst.keyset("bank-a").get(BANK_KEY_2.kid).alg == "ES256"

    with pytest.raises(AlreadyExists, match="kid"):  # same kid, other key
        inst.add_key("bank-a", {**_ed(7).public_jwk(), "kid": BANK_KEY.kid}, "admin", now=NOW)
    with pytest.raises(AlreadyExists):  # same key, other kid
        inst.add_key("bank-a", {**BANK_KEY.public_jwk(), "kid": "again"}, "admin", now=NOW)
    with pytest.raises(AlreadyExists, match="another institution"):
        inst.add_key("bank-b", BANK_KEY.public_jwk(), "admin", now=NOW)

    private = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate(), as_dict=True)
    with pytest.raises(InvalidJWK, match="private"):
        inst.add_key("bank-b", {**private, "kid": "k1"}, "admin", now=NOW)
    no_kid = {k: v for k, v in _ed(8).public_jwk().items() if k != "kid"}
    with pytest.raises(InvalidJWK, match="kid"):
        inst.add_key("bank-b", no_kid, "admin", now=NOW)
    with pytest.raises(InvalidJWK):
        inst.add_key("bank-b", {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"}, "a", now=NOW)
    with pytest.raises(NotFound):
        inst.add_key("nobody", _ed(9).public_jwk(), "admin", now=NOW)
    assert inst.get("bank-b").keys == ()

    after = inst.remove_key("bank-a", BANK_KEY.kid, "admin", now=NOW)
    assert [k["kid"] for k in after.keys] == [BANK_KEY_2.kid]
    with pytest.raises(NotFound):
        inst.remove_key("bank-a", BANK_KEY.kid, "admin", now=NOW)
    # The removed key may now be registered again (rotation back, or to another institution).
    inst.add_key("bank-b", BANK_KEY.public_jwk(), "admin", now=NOW)

    inst.set_state("bank-b", "revoked", "admin", "gone", now=NOW)
    with pytest.raises(FailedPrecondition, match="revoked"):
        inst.add_key("bank-b", _ed(10).public_jwk(), "admin", now=NOW)

    actions = [e.action for e in list_events(engine, object_id="bank-a")]
    assert actions.count("institution.key.add") == 2
    assert actions.count("institution.key.remove") == 1
    for e in list_events(engine):
        assert "d" not in e.detail and "jwk" not in e.detail


def test_require_active_for_each_state(inst: InstitutionRegistry) -> None:
    for state in STATES:
        register(inst, f"inst-{state}", state=state)
    for state in STATES:
        if state == "active":
            inst.require_active("inst-active")  # active: no refusal
            continue
        with pytest.raises(PermissionDenied, match=f"is {state}, not active"):
            inst.require_active(f"inst-{state}", "loan_origination")
    inst.require_active("inst-active", "post_loan_monitoring")
    with pytest.raises(PermissionDenied, match="credit_insurance"):
        inst.require_active("inst-active", "credit_insurance")
    with pytest.raises(PermissionDenied, match="marketing"):
        inst.require_active("inst-active", "marketing")
    with pytest.raises(NotFound):
        inst.require_active("inst-unknown")


# --- quotas -------------------------------------------------------------------------------------


def test_quota_exact_limit_and_utc_day_rollover(inst: InstitutionRegistry) -> None:
    register(inst, "bank-a", state="active", quota=3)
    late = dt.datetime(2024, 3, 1, 23, 59, 59, tzinfo=dt.UTC)
    assert [inst.consume_quota("bank-a", now=late) for _ in range(3)] == [2, 1, 0]
    with pytest.raises(ResourceExhausted) as exc:
        inst.consume_quota("bank-a", now=late)
    assert exc.value.details == {"institution": "bank-a", "limit": "3", "day": "2024-03-01"}
    assert exc.value.extra  # a google.rpc.QuotaFailure travels with the status
    # 07:30 in Beijing on 2 March is still 1 March in UTC: the same (exhausted) day.
    beijing = dt.timezone(dt.timedelta(hours=8))
    with pytest.raises(ResourceExhausted):
        inst.consume_quota("bank-a", now=dt.datetime(2024, 3, 2, 7, 30, tzinfo=beijing))
    midnight = dt.datetime(2024, 3, 2, 0, 0, tzinfo=dt.UTC)
    assert inst.quota_remaining("bank-a", now=midnight) == 3
    assert inst.consume_quota("bank-a", now=midnight, cost=2) == 1
    with pytest.raises(ResourceExhausted):  # 2 more would exceed: nothing is consumed
        inst.consume_quota("bank-a", now=midnight, cost=2)
    assert inst.quota_remaining("bank-a", now=midnight) == 1
    assert inst.consume_quota("bank-a", now=midnight) == 0
    assert inst.quota_remaining("bank-a", now=late) == 0
    with pytest.raises(NotFound):
        inst.consume_quota("nobody", now=NOW)
    with pytest.raises(InvalidArgument):
        inst.consume_quota("bank-a", now=NOW, cost=0)


def test_quota_concurrency_never_exceeds_limit(inst: InstitutionRegistry) -> None:
    limit, threads, attempts = 40, 6, 10
    register(inst, "bank-a", state="active", quota=limit)
    granted: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def hammer() -> None:
        barrier.wait()
        for _ in range(attempts):
            try:
                remaining = inst.consume_quota("bank-a", now=NOW)
            except ResourceExhausted:
                with lock:
                    refused.append(1)
            else:
                with lock:
                    granted.append(remaining)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(granted) == limit
    assert len(refused) == threads * attempts - limit
    assert sorted(granted) == list(range(limit))  # every remaining count seen exactly once
    assert inst.quota_remaining("bank-a", now=NOW) == 0


# --- replay -------------------------------------------------------------------------------------


def test_replay_claim_twice_refused_and_purge(engine: Engine) -> None:
    guard = ReplayGuard(engine)
    jti = "Zm9vYmFyYmF6cXV4cXV1eA"
    exp = NOW + dt.timedelta(seconds=330)
    guard.claim("institution:bank-a", jti, exp, now=NOW)
    with pytest.raises(Replayed) as exc:
        guard.claim("institution:bank-a", jti, exp, now=NOW)
    assert isinstance(exc.value, Unauthenticated)
    assert "institution:bank-a" in exc.value.message and jti not in exc.value.message
    guard.claim(f"enterprise:{USCC_A}", jti, exp, now=NOW)  # another issuer, same jti: fine

    assert guard.purge(NOW + dt.timedelta(seconds=100)) == 0
    with pytest.raises(Replayed):
        guard.claim("institution:bank-a", jti, exp, now=NOW + dt.timedelta(seconds=100))
    # Verifiers accept a token until exp + CLOCK_SKEW_S: its claim is kept that long.
    assert guard.purge(exp + dt.timedelta(seconds=CLOCK_SKEW_S - 1)) == 0
    with pytest.raises(Replayed):
        guard.claim("institution:bank-a", jti, exp, now=exp)
    assert guard.purge(exp + dt.timedelta(seconds=CLOCK_SKEW_S + 1)) == 2
    guard.claim("institution:bank-a", jti, exp + dt.timedelta(seconds=400), now=exp)
    with pytest.raises(InvalidArgument):
        guard.claim("institution:bank-a", "x" * 300, exp, now=NOW)
    with pytest.raises(InvalidArgument):
        guard.claim("institution:bank-a", jti, dt.datetime(2024, 3, 1), now=NOW)


def test_replay_claims_are_group_committed_and_each_gets_its_own_answer(
    engine: Engine,
) -> None:
    """Claims arriving during a commit share the next one; a duplicate id in the same
    batch is refused exactly once; nothing returns before its batch commits."""
    import threading

    guard = ReplayGuard(engine)
    exp = NOW + dt.timedelta(seconds=330)
    inside, release = threading.Event(), threading.Event()
    real_commit = guard._commit

    def slow_first_commit(batch: Any) -> None:
        if guard.commits == 0:
            inside.set()
            release.wait(10)
        real_commit(batch)

    guard._commit = slow_first_commit  # type: ignore[method-assign]
    outcomes: dict[str, list[str]] = {}

    def claim(name: str, jti: str) -> None:
        try:
            guard.claim("institution:bank-a", jti, exp, now=NOW)
            outcomes.setdefault(name, []).append("ok")
        except Replayed:
            outcomes.setdefault(name, []).append("replayed")

    first = threading.Thread(target=claim, args=("lead", "a" * 22))
    first.start()
    assert inside.wait(10)  # the first claim's commit is in progress
    others = [
        threading.Thread(target=claim, args=(f"t{i}", jti))
        for i, jti in enumerate(["b" * 22, "c" * 22, "d" * 22, "d" * 22, "a" * 22])
    ]
    for t in others:
        t.start()
    while len(guard._queue) < len(others):  # all queued behind the first commit
        threading.Event().wait(0.01)
    assert not outcomes  # nobody has an answer before the commit holding it
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert guard.commits == 2  # five claims in the second commit
    assert outcomes["lead"] == ["ok"] and outcomes["t4"] == ["replayed"]
    assert sorted(outcomes["t2"] + outcomes["t3"]) == ["ok", "replayed"]
    assert outcomes["t0"] == outcomes["t1"] == ["ok"]
    with pytest.raises(Replayed):
        guard.claim("institution:bank-a", "b" * 22, exp, now=NOW)


# --- grants -------------------------------------------------------------------------------------


def test_grant_create_with_real_keys(reg: GrantRegistry, inst: InstitutionRegistry) -> None:
    register(inst, "bank-a", state="active")
    gid, jws = make_grant()
    record = reg.create(jws, by_enterprise=USCC_A, now=NOW)
    assert record.grant_id == gid and record.jws == jws
    assert (record.uscc, record.institution, record.state) == (USCC_A, "bank-a", "active")
    assert record.fields == (FIELD_1, FIELD_2) and record.uses == ("fetch",)
    assert (record.purpose, record.loan_ref) == ("loan_origination", "LOAN-2024-001")
    assert (record.not_before, record.expires) == (T - 60, T + 30 * DAY)
    assert record.created_at == NOW and record.revoked_at is None
    assert reg.get(gid, now=NOW) == record
    assert reg.get(gid, now=NOW + dt.timedelta(days=31)).state == "expired"
    assert [g.grant_id for g in reg.for_enterprise(USCC_A, now=NOW)] == [gid]
    assert [g.grant_id for g in reg.for_institution("bank-a", now=NOW)] == [gid]
    assert reg.for_enterprise(USCC_B, now=NOW) == []
    event = list_events(reg.engine, object_type="grant", object_id=gid)[0]
    assert (event.action, event.actor) == ("grant.create", f"enterprise:{USCC_A}")
    assert jws not in str(event.detail)

    # A grant whose window starts later is accepted and pending until then.
    later, jws2 = make_grant(nbf=T + DAY, exp=T + 2 * DAY)
    assert reg.create(jws2, by_enterprise=USCC_A, now=NOW).state == "pending"
    assert reg.get(later, now=NOW + dt.timedelta(days=1, hours=1)).state == "active"


def test_grant_create_refusals(reg: GrantRegistry, inst: InstitutionRegistry) -> None:
    register(inst, "bank-a", state="active")
    _, jws = make_grant()
    with pytest.raises(GrantMismatch):  # enterprise B presents A's grant as its own
        reg.create(jws, by_enterprise=USCC_B, now=NOW)
    with pytest.raises(NotFound, match="bank-z"):
        reg.create(make_grant(institution="bank-z")[1], by_enterprise=USCC_A, now=NOW)
    with pytest.raises(InvalidArgument, match=SECRET_FIELD):
        reg.create(make_grant(fields=(FIELD_1, SECRET_FIELD))[1], by_enterprise=USCC_A, now=NOW)
    with pytest.raises(InvalidArgument, match=SECRET_FIELD):
        reg.create(
            make_grant(fields=(SECRET_FIELD,), uses=("verify", "fetch"))[1],
            by_enterprise=USCC_A,
            now=NOW,
        )
    with pytest.raises(InvalidArgument, match="no_such_field"):
        reg.create(make_grant(fields=("no_such_field",))[1], by_enterprise=USCC_A, now=NOW)
    with pytest.raises(GrantNotActive, match="expired"):
        reg.create(make_grant(nbf=T - 2 * DAY, exp=T - DAY)[1], by_enterprise=USCC_A, now=NOW)
    # Signed by a key certified by an EIA the platform does not trust.
    rogue_cert = issue_enterprise_certificate(
        ROGUE_EIA, uscc=USCC_A, name="A Co", enterprise_jwk=ENT_A.public_jwk(), now=T - DAY
    )
    with pytest.raises(UnknownKey):
        reg.create(make_grant(signer=(ENT_A, rogue_cert))[1], by_enterprise=USCC_A, now=NOW)
    # Tampered payload: bad signature.
    head, body, sig = jws.split(".")
    with pytest.raises(Unauthenticated):
        reg.create(f"{head}.{body[:-4]}AAAA.{sig}", by_enterprise=USCC_A, now=NOW)
    assert count(reg.engine, grants_table) == 0

    # A verification-only field may be granted for verify/score.
    _, ok = make_grant(fields=(SECRET_FIELD,), uses=("verify", "score"))
    assert reg.create(ok, by_enterprise=USCC_A, now=NOW).uses == ("verify", "score")
    with pytest.raises(AlreadyExists):
        reg.create(ok, by_enterprise=USCC_A, now=NOW)

    register(inst, "bank-r", state="revoked")
    with pytest.raises(FailedPrecondition, match="revoked"):
        reg.create(make_grant(institution="bank-r")[1], by_enterprise=USCC_A, now=NOW)
    assert count(reg.engine, grants_table) == 1


def test_letter_confirm_flow(reg: GrantRegistry, inst: InstitutionRegistry) -> None:
    register(inst, "bank-a", state="active")
    register(inst, "bank-b", state="active")
    digest = hashlib.sha256(b"scanned letter 2024-001").hexdigest()
    letter_args: dict[str, Any] = {
        "uscc": USCC_A,
        "sha256_hex": digest.upper(),
        "title": "授权书 LOAN-2024-001",
        "signed_on": dt.date(2024, 2, 28),
        "purpose": "loan_origination",
        "loan_ref": "LOAN-2024-001",
        "fields": [FIELD_1, FIELD_2],
        "now": NOW,
    }
    letter = reg.upload_letter(institution="bank-a", **letter_args)
    assert (letter.sha256, letter.state, letter.grant_id) == (digest, "pending", None)
    with pytest.raises(AlreadyExists):
        reg.upload_letter(institution="bank-a", **letter_args)
    for bad in ({"sha256_hex": "ab" * 31}, {"purpose": "marketing"}, {"fields": ["nope"]}):
        with pytest.raises(InvalidArgument):
            reg.upload_letter(institution="bank-a", **{**letter_args, **bad})
    with pytest.raises(NotFound):
        reg.upload_letter(institution="bank-z", **letter_args)

    # No such letter from bank-b; a grant that says more than the letter; another loan.
    mismatches: list[dict[str, Any]] = [
        {"institution": "bank-b"},
        {"fields": (FIELD_1, "samr_registered_capital")},
        {"loan_ref": "LOAN-2024-002"},
        {"purpose": "post_loan_monitoring"},
    ]
    for kwargs in mismatches:
        gid, jws = make_grant(letter=digest, **kwargs)
        with pytest.raises(FailedPrecondition):
            reg.create(jws, by_enterprise=USCC_A, now=NOW)
        with pytest.raises(NotFound):
            reg.get(gid)
    assert reg.letters_for_enterprise(USCC_A)[0].state == "pending"

    gid, jws = make_grant(letter=digest, fields=(FIELD_1,))
    record = reg.create(jws, by_enterprise=USCC_A, now=NOW + dt.timedelta(hours=1))
    assert record.letter_sha256 == digest
    (confirmed,) = reg.letters_for_institution("bank-a")
    assert confirmed.state == "confirmed" and confirmed.grant_id == gid
    assert confirmed.confirmed_at == NOW + dt.timedelta(hours=1)
    assert reg.letters_for_enterprise(USCC_A) == [confirmed]
    assert reg.letters_for_institution("bank-b") == []
    with pytest.raises(FailedPrecondition, match="already confirmed"):
        reg.create(make_grant(letter=digest)[1], by_enterprise=USCC_A, now=NOW)
    actions = [e.action for e in list_events(reg.engine, object_type="letter")]
    assert actions == ["letter.upload", "letter.confirm"]


def test_revoke_idempotent_and_matched_on_uscc_and_grant_id(
    reg: GrantRegistry, inst: InstitutionRegistry
) -> None:
    register(inst, "bank-a", state="active")
    gid, jws = make_grant()
    reg.create(jws, by_enterprise=USCC_A, now=NOW)

    # Enterprise B signs a revocation naming A's grant id: it matches nothing.
    with pytest.raises(NotFound):
        reg.revoke(revocation(USCC_B, gid), by_enterprise=USCC_B, now=NOW)
    # A's genuine revocation presented by B's session is refused too.
    with pytest.raises(GrantMismatch):
        reg.revoke(revocation(USCC_A, gid), by_enterprise=USCC_B, now=NOW)
    assert reg.get(gid, now=NOW).state == "active"
    assert reg.revocations_after(0) == []

    later = NOW + dt.timedelta(minutes=5)
    revoked = reg.revoke(revocation(USCC_A, gid, T + 300), by_enterprise=USCC_A, now=later)
    assert (revoked.state, revoked.revoked_at, revoked.revocation_seq) == ("revoked", later, 1)
    again = reg.revoke(
        revocation(USCC_A, gid, T + 400), by_enterprise=USCC_A, now=later + dt.timedelta(seconds=99)
    )
    assert again == revoked
    assert [e.action for e in list_events(reg.engine, object_id=gid)] == [
        "grant.create",
        "grant.revoke",
    ]
    # A stale revocation (past its short lifetime) is refused.
    with pytest.raises(Unauthenticated):
        reg.revoke(revocation(USCC_A, gid, T), by_enterprise=USCC_A, now=NOW + dt.timedelta(1))
    with pytest.raises(NotFound):
        reg.revoke(revocation(USCC_A, str(uuid.uuid4())), by_enterprise=USCC_A, now=NOW)


def test_revocations_after_ordering(reg: GrantRegistry, inst: InstitutionRegistry) -> None:
    register(inst, "bank-a", state="active")
    made = [make_grant(uscc) for uscc in (USCC_A, USCC_B, USCC_A, USCC_B)]
    for (_, jws), uscc in zip(made, (USCC_A, USCC_B, USCC_A, USCC_B), strict=True):
        reg.create(jws, by_enterprise=uscc, now=NOW)
    order = [(made[2][0], USCC_A), (made[1][0], USCC_B), (made[0][0], USCC_A)]
    for i, (gid, uscc) in enumerate(order):
        reg.revoke(revocation(uscc, gid), by_enterprise=uscc, now=NOW + dt.timedelta(seconds=i))
    entries = reg.revocations_after(0)
    assert [(e.seq, e.grant_id, e.uscc) for e in entries] == [
        (i + 1, gid, uscc) for i, (gid, uscc) in enumerate(order)
    ]
    for e in entries:  # providers can verify each one themselves
        rev = verify_revocation(e.revocation_jws, EIA_KEYS, now=T + DAY, at_any_time=True)
        assert (rev.uscc, rev.grant_id) == (e.uscc, e.grant_id)
    assert [e.seq for e in reg.revocations_after(1)] == [2, 3]
    assert [e.seq for e in reg.revocations_after(0, limit=2)] == [1, 2]
    assert reg.revocations_after(3) == []
    assert reg.get(made[3][0], now=NOW).state == "active"


def test_concurrent_revocations_get_contiguous_numbers(
    reg: GrantRegistry, inst: InstitutionRegistry
) -> None:
    register(inst, "bank-a", state="active")
    gids = []
    for _ in range(8):
        gid, jws = make_grant()
        reg.create(jws, by_enterprise=USCC_A, now=NOW)
        gids.append(gid)
    tokens = [revocation(USCC_A, gid) for gid in gids]
    errors: list[BaseException] = []

    def revoke(token: str) -> None:
        try:
            reg.revoke(token, by_enterprise=USCC_A, now=NOW)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=revoke, args=(t,)) for t in tokens + tokens]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    entries = reg.revocations_after(0)
    assert [e.seq for e in entries] == list(range(1, 9))
    assert sorted(e.grant_id for e in entries) == sorted(gids)


def test_authorize_every_mismatch(reg: GrantRegistry, inst: InstitutionRegistry) -> None:
    register(inst, "bank-a", state="active")
    register(inst, "bank-b", state="active")
    gid, jws = make_grant(uses=("fetch", "verify"))
    reg.create(jws, by_enterprise=USCC_A, now=NOW)
    ok: dict[str, Any] = {
        "grant_id": gid,
        "uscc": USCC_A,
        "institution": "bank-a",
        "fields": [FIELD_1],
        "use": "fetch",
        "purpose": "loan_origination",
        "loan_ref": "LOAN-2024-001",
        "now": NOW,
    }
    assert reg.authorize(**ok).grant_id == gid
    assert reg.authorize(**{**ok, "fields": [FIELD_2, FIELD_1], "use": "verify"}).state == "active"

    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"grant_id": str(uuid.uuid4())}, NotFound, "no grant"),
        ({"uscc": USCC_B}, GrantMismatch, "enterprise"),
        ({"institution": "bank-b"}, GrantMismatch, "institution"),
        ({"now": NOW - dt.timedelta(hours=1)}, GrantNotActive, "not active"),
        ({"now": NOW + dt.timedelta(days=31)}, GrantNotActive, "expired"),
        (
            {"fields": [FIELD_1, "samr_registered_capital", "samr_term_start"]},
            ScopeExceeded,
            "samr_registered_capital, samr_term_start",
        ),
        ({"use": "score"}, UseNotGranted, "score"),
        ({"purpose": "credit_guarantee"}, PurposeMismatch, "purpose"),
        ({"loan_ref": "LOAN-2024-999"}, PurposeMismatch, "loan_ref"),
        ({"fields": ["no_such_field"]}, InvalidArgument, "no_such_field"),
        ({"use": "delete"}, InvalidArgument, "delete"),
    ]
    for change, error, needle in cases:
        with pytest.raises(error, match=needle):
            reg.authorize(**{**ok, **change})
    assert issubclass(GrantMismatch, PermissionDenied)

    # A verification-only field granted for verify: fetch of it is refused.
    sid, sjws = make_grant(fields=(SECRET_FIELD,), uses=("verify",))
    reg.create(sjws, by_enterprise=USCC_A, now=NOW)
    secret = {**ok, "grant_id": sid, "fields": [SECRET_FIELD]}
    assert reg.authorize(**{**secret, "use": "verify"}).grant_id == sid
    with pytest.raises(UseNotGranted):
        reg.authorize(**secret)

    reg.revoke(revocation(USCC_A, gid), by_enterprise=USCC_A, now=NOW)
    with pytest.raises(GrantNotActive, match="revoked"):
        reg.authorize(**ok)


def test_record_use_and_uses(reg: GrantRegistry, inst: InstitutionRegistry) -> None:
    register(inst, "bank-a", state="active")
    gid, jws = make_grant()
    reg.create(jws, by_enterprise=USCC_A, now=NOW)
    first = reg.record_use(
        gid,
        request_id="req-0000000000000001",
        institution="bank-a",
        fields=[FIELD_1],
        use="fetch",
        outcome="ok",
        providers=["samr"],
        now=NOW,
    )
    reg.record_use(
        gid,
        request_id="req-0000000000000002",
        institution="bank-a",
        fields=[FIELD_1, FIELD_2],
        use="fetch",
        outcome="refused",
        providers=[],
        now=NOW + dt.timedelta(minutes=1),
    )
    uses = reg.uses(gid)
    assert uses[0] == first
    assert [(u.request_id, u.outcome, u.providers) for u in uses] == [
        ("req-0000000000000001", "ok", ("samr",)),
        ("req-0000000000000002", "refused", ()),
    ]
    assert uses[1].at == NOW + dt.timedelta(minutes=1) and uses[1].fields == (FIELD_1, FIELD_2)
    use_args: dict[str, Any] = {
        "request_id": "req-0000000000000001",
        "institution": "bank-a",
        "fields": [FIELD_1],
        "use": "fetch",
        "outcome": "ok",
        "providers": ["samr"],
        "now": NOW,
    }
    with pytest.raises(AlreadyExists):
        reg.record_use(gid, **use_args)
    with pytest.raises(GrantMismatch):
        reg.record_use(gid, **{**use_args, "request_id": "req-3", "institution": "bank-b"})
    with pytest.raises(NotFound):
        reg.record_use(str(uuid.uuid4()), **use_args)
    with pytest.raises(NotFound):
        reg.uses(str(uuid.uuid4()))
    assert len(reg.uses(gid)) == 2
    events = [e for e in list_events(reg.engine, object_id=gid) if e.action == "grant.use"]
    assert [e.actor for e in events] == ["institution:bank-a"] * 2


def test_use_along_refusals_leave_the_log_transaction_usable(
    reg: GrantRegistry, inst: InstitutionRegistry
) -> None:
    """``use_along`` writes run inside the transparency log's transaction: a request id
    already recorded, another institution or an unknown grant leaves the grant's record
    alone without a failed statement, so the transaction's other writes still commit
    (on PostgreSQL a failed statement would abort them all)."""
    from platform_node.registry.schema import write_tx

    register(inst, "bank-a", state="active")
    gid, jws = make_grant()
    reg.create(jws, by_enterprise=USCC_A, now=NOW)

    def along(
        request_id: str,
        grant_id: str = gid,
        institution: str = "bank-a",
        registry: GrantRegistry = reg,
    ) -> Any:
        write = registry.use_along(
            grant_id,
            request_id=request_id,
            institution=institution,
            fields=[FIELD_1],
            use="verify",
            outcome="OK",
            providers=["samr"],
        )
        assert write is not None
        return write

    # once as the platform does it (authorized at admission), once from the database
    reg.authorize(
        grant_id=gid,
        uscc=USCC_A,
        institution="bank-a",
        fields=[FIELD_1],
        use="fetch",
        purpose="loan_origination",
        loan_ref="LOAN-2024-001",
        now=NOW,
    )
    other = GrantRegistry(reg.engine, reg.eia_keys, inst)  # has read no grant
    with write_tx(reg.engine) as conn:
        along("req-along-0")(conn)
        along("req-along-0", institution="bank-b")(conn)  # not the grantee
    with write_tx(reg.engine) as conn:
        along("req-along-01", institution="bank-b", registry=other)(conn)  # not the grantee
        along("req-along-02", registry=other)(conn)
    with write_tx(reg.engine) as conn:
        along("req-along-1")(conn)
        along("req-along-1")(conn)  # already recorded
        along("req-along-2", institution="bank-b")(conn)  # not the grantee
        along("req-along-3", grant_id=str(uuid.uuid4()))(conn)  # no such grant
        along("req-along-4")(conn)
    assert [u.request_id for u in reg.uses(gid)] == [
        "req-along-0",
        "req-along-02",
        "req-along-1",
        "req-along-4",
    ]
    events = [e for e in list_events(reg.engine, object_id=gid) if e.action == "grant.use"]
    assert len(events) == 4


# --- atomicity ----------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_failed_mutations_leave_nothing_half_written(
    reg: GrantRegistry, inst: InstitutionRegistry, engine: Engine, monkeypatch: Any
) -> None:
    register(inst, "bank-a", state="active")
    digest = hashlib.sha256(b"letter").hexdigest()
    reg.upload_letter(
        institution="bank-a",
        uscc=USCC_A,
        sha256_hex=digest,
        title="授权书",
        signed_on=dt.date(2024, 2, 1),
        purpose="loan_origination",
        loan_ref="LOAN-2024-001",
        fields=[FIELD_1, FIELD_2],
        now=NOW,
    )
    gid, jws = make_grant()
    reg.create(jws, by_enterprise=USCC_A, now=NOW)
    events_before = len(list_events(engine))

    def boom(*_: Any, **__: Any) -> None:
        raise Boom("disk full")

    monkeypatch.setattr(institutions_module, "record_event", boom)
    monkeypatch.setattr(grants_module, "record_event", boom)
    with pytest.raises(Boom):
        inst.register("bank-x", "X", "bank", ["loan_origination"], 1, "admin", now=NOW)
    with pytest.raises(Boom):
        inst.set_state("bank-a", "suspended", "admin", "x", now=NOW)
    with pytest.raises(Boom):
        inst.add_key("bank-a", BANK_KEY.public_jwk(), "admin", now=NOW)
    # The letter's confirmation (an UPDATE) precedes the failure: it must be undone.
    lid, ljws = make_grant(letter=digest)
    with pytest.raises(Boom):
        reg.create(ljws, by_enterprise=USCC_A, now=NOW)
    with pytest.raises(Boom):
        reg.revoke(revocation(USCC_A, gid), by_enterprise=USCC_A, now=NOW)
    monkeypatch.undo()

    with pytest.raises(NotFound):
        inst.get("bank-x")
    assert inst.get("bank-a").state == "active" and inst.get("bank-a").keys == ()
    assert len(inst.history("bank-a")) == 3
    with pytest.raises(NotFound):
        reg.get(lid)
    assert reg.letters_for_enterprise(USCC_A)[0].state == "pending"
    assert reg.get(gid, now=NOW).state == "active"
    assert len(list_events(engine)) == events_before
    # The revocation counter was rolled back with the failed revocation.
    assert reg.revoke(revocation(USCC_A, gid), by_enterprise=USCC_A, now=NOW).revocation_seq == 1
    assert reg.create(ljws, by_enterprise=USCC_A, now=NOW).letter_sha256 == digest
