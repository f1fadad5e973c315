"""VerificationService at the platform: one institution's verification question, end to end.

For ``Verify`` the platform, in order:

1. authenticates the institution forwarded by the gateway (:class:`CallerCheck`);
2. parses and validates the claim against the catalog (INVALID_ARGUMENT naming the
   problem) and snaps it to the published grid (:mod:`veil.claims_grid`): what is asked,
   hashed, budgeted, cached and signed from here on is the snapped claim;
3. plans it (:mod:`platform_node.verification_plan`): one provider, or a combination
   across providers under encryption;
4. checks the grant — use ``verify`` of every field the claim reads, the grant's
   institution, purpose, loan reference and window — and the daily quota;
5. answers an identical question from the cache without spending budget, or spends one
   unit of each field's budget (RESOURCE_EXHAUSTED with ``QuotaFailure`` when used up) —
   steps 1–5 in one worker thread and one write transaction, which also consumes the
   caller's assertion, refusal or not (:meth:`Verification._admit`);
6. asks the providers (:mod:`platform_node.verification_fanout`), refunding the budget if
   any does not answer (UNAVAILABLE naming it: nothing was learned);
7. records the use in the transparency log and against the grant (answered or refused;
   one transaction: ``AuditLog.record(…, along=…)``), then signs the result
   (:func:`veil.tokens.sign_result`, kind ``verification``).

The signed result's claims: ``kind``, ``sub`` (USCC), ``institution``, ``grant_id``,
``request_id``, ``claims_sha256``, ``result``, ``protocol``, ``providers``, ``cached``,
``time`` (RFC 3339), ``nonce``, ``log_index`` (+ ``iss``, ``iat``).  The log entry's
``result_sha256`` is SHA-256 of the canonical JSON of those claims without ``log_index``,
``iss`` and ``iat`` (:func:`result_digest`), so the bank can match its result to the
log; the random ``nonce`` keeps a reader of the log from guessing the answer from it.

Configuration (platform node TOML)::

    [verification]
    paillier_key = "../keys/platform-paillier.key"   # 0600; generated on first start
    paillier_bits = 2048
    budget = 20                   # questions per (grant, institution, enterprise, field)
    cache_ttl_s = 86400
    plaintext_baseline = false    # benchmark only: allow the unencrypted fan-out
    [verification.field_budgets]  # per-field overrides
    [verification.grid]           # per-unit grid steps (veil/claims_grid.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import Connection

from platform_node.audit import AuditLog
from platform_node.budgets import BudgetPolicy, CachedAnswer, Question, VerificationBudgets
from platform_node.forwarding import gather_outcomes, request_ids
from platform_node.mask_directory import MaskDirectory
from platform_node.providers import ProviderRegistry
from platform_node.registry import GrantRegistry, InstitutionRegistry
from platform_node.registry.grants import GrantRecord
from platform_node.service import AuthorizationParts
from platform_node.verification_fanout import (
    AnswerKeys,
    Asked,
    Fanout,
    Outcome,
    ProviderCallFailed,
)
from platform_node.verification_plan import Plan, plan
from veil._internal.status import item_results
from veil.audit.entry import AuditEvent, EventType
from veil.caller import Caller
from veil.catalog import Catalog
from veil.claims import (
    ClaimCache,
    Truth,
    canonical_json,
    claim_fields,
    claim_from_json,
    claim_sha256,
)
from veil.claims_grid import Grid, snap
from veil.composite import Protocol
from veil.config import NodeConfig
from veil.crypto import PaillierKeys
from veil.errors import ConfigError, FailedPrecondition, InvalidArgument, VeilError
from veil.server import ServiceBinding, require_peer
from veil.tokens import sign_result
from veil.uscc import validate_uscc
from veil.v1 import verification_pb2 as vpb
from veil.v1 import verification_pb2_grpc

log = logging.getLogger("veil.platform.verification")

MAX_REQUEST_ID = 64
MIN_REQUEST_ID = 16
REQUEST_ID_RE = re.compile(
    rf"[A-Za-z0-9][A-Za-z0-9._:@-]{{{MIN_REQUEST_ID - 1},{MAX_REQUEST_ID - 1}}}"
)
RESULTS = {
    Truth.TRUE: vpb.VERIFICATION_RESULT_TRUE,
    Truth.FALSE: vpb.VERIFICATION_RESULT_FALSE,
    Truth.NO_RECORD: vpb.VERIFICATION_RESULT_NO_RECORD,
}
PROTOCOLS = {
    Protocol.SINGLE: vpb.VERIFICATION_PROTOCOL_SINGLE,
    Protocol.ALL: vpb.VERIFICATION_PROTOCOL_ALL,
    Protocol.ANY: vpb.VERIFICATION_PROTOCOL_ANY,
    Protocol.COUNT: vpb.VERIFICATION_PROTOCOL_COUNT,
    Protocol.SUM: vpb.VERIFICATION_PROTOCOL_SUM,
    Protocol.PLAINTEXT: vpb.VERIFICATION_PROTOCOL_PLAINTEXT,
}


@dataclass(frozen=True)
class VerificationSettings:
    grid: Grid
    policy: BudgetPolicy
    paillier_key: Path
    paillier_bits: int = 2048
    plaintext_baseline: bool = False

    @classmethod
    def from_config(cls, config: NodeConfig) -> VerificationSettings:
        section = config.section("verification")
        path = str(config.path)
        grid_raw = section.get("grid", {})
        if not isinstance(grid_raw, dict):
            raise ConfigError(path, "verification.grid", "must be a table")
        try:
            grid = Grid.from_config(grid_raw)
        except InvalidArgument as exc:
            raise ConfigError(path, "verification.grid", exc.message) from None
        raw_key = section.get("paillier_key", "paillier.key")
        if not isinstance(raw_key, str) or not raw_key:
            raise ConfigError(path, "verification.paillier_key", "must be a key file path")
        key = Path(raw_key) if Path(raw_key).is_absolute() else config.path.parent / raw_key
        bits = section.get("paillier_bits", 2048)
        if bits not in (2048, 3072, 4096):
            raise ConfigError(path, "verification.paillier_bits", "must be 2048, 3072 or 4096")
        baseline = section.get("plaintext_baseline", False)
        if not isinstance(baseline, bool):
            raise ConfigError(path, "verification.plaintext_baseline", "must be true or false")
        if baseline:
            log.warning(
                "verification.plaintext_baseline is ON: benchmark use only; requests that "
                "ask for it reveal each condition's answer to the platform"
            )
        return cls(grid, BudgetPolicy.from_config(section, path), key, bits, baseline)


def load_paillier(settings: VerificationSettings) -> PaillierKeys:
    if settings.paillier_key.exists():
        return PaillierKeys.load(settings.paillier_key)
    keys = PaillierKeys.generate(settings.paillier_bits)
    keys.save(settings.paillier_key)
    log.warning("generated a %d-bit Paillier key %s", settings.paillier_bits, keys.key_id)
    return keys


def result_digest(claims: dict[str, Any]) -> str:
    """SHA-256 of a signed result's claims without ``log_index``, ``iss``, ``iat``."""
    body = {k: v for k, v in claims.items() if k not in ("log_index", "iss", "iat")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Admission:
    """What :meth:`Verification._admit` learned, also when it refused part-way."""

    claim: Any = None
    digest: str = ""
    fields: list[str] = field(default_factory=list)
    plan: Plan | None = None
    question: Question | None = None
    record: GrantRecord | None = None
    cached: CachedAnswer | None = None
    spent: bool = False
    asked_units: list[str] = field(default_factory=list)


class Verification:
    def __init__(
        self,
        *,
        catalog: Catalog,
        registry: ProviderRegistry,
        authz: AuthorizationParts,
        audit: AuditLog,
        budgets: VerificationBudgets,
        settings: VerificationSettings,
        fanout: Fanout,
    ) -> None:
        self.catalog = catalog
        self.claims = ClaimCache(catalog)
        self.registry = registry
        self.callers = authz.callers
        self.grants: GrantRegistry = authz.grants
        self.institutions: InstitutionRegistry = authz.institutions
        self.keys = authz.keys
        self.audit = audit
        self.budgets = budgets
        self.settings = settings
        self.fanout = fanout

    async def verify(self, request: vpb.VerifyRequest, context: Any) -> vpb.VerifyResponse:
        caller = self.callers.identify(context, {"institution"})
        request_id = request.request_id or uuid.uuid4().hex
        state = _Admission()
        refusal: VeilError | None = None
        try:
            await asyncio.to_thread(self._admit, caller, request, request_id, state)
        except VeilError as exc:
            refusal = exc
        return await self._conclude(caller, request, request_id, state, refusal)

    async def verify_many(
        self, requests: Sequence[vpb.VerifyRequest], context: Any
    ) -> list[vpb.VerifyResponse | VeilError]:
        """Each request answered as :meth:`verify` would answer it alone, or its refusal
        in its place.  The caller is checked and its assertion consumed once, and every
        item is admitted in one worker-thread hop and one write transaction
        (:meth:`CallerCheck.admit_each_with`); the items then ask the providers together,
        so their contributions travel to each provider in shared calls.  A refusal of the
        caller itself fails the call, after each item's refusal is recorded as a lone
        ``Verify``'s would be."""
        caller = self.callers.identify(context, {"institution"})
        ids = request_ids(requests, lambda r: r.request_id or uuid.uuid4().hex)
        states = [_Admission() for _ in requests]
        whole: VeilError | None = None
        try:
            refusals = await asyncio.to_thread(self._admit_many, caller, requests, ids, states)
        except VeilError as exc:  # the caller itself (a replayed assertion, not active)
            whole = exc
            refusals = [exc] * len(requests)
        outcomes = await gather_outcomes(
            self._conclude(caller, request, rid, state, refusal)
            for request, rid, state, refusal in zip(requests, ids, states, refusals, strict=True)
        )
        if whole is not None:  # each item's refusal is recorded; the call fails with it
            raise whole
        return outcomes

    async def verify_coalesced(
        self, entries: Sequence[tuple[Caller, vpb.VerifyRequest]]
    ) -> list[vpb.VerifyResponse | VeilError]:
        """``Verify`` calls the gateway coalesced (``Forwarding.VerifyForwarded``), each
        under the caller it authenticated: each answered as :meth:`verify` would answer
        it alone, or its refusal in its place (a replayed assertion refuses its own item
        only).  Admitted in one worker-thread hop and one write transaction."""
        admitted = [
            (caller, request, request.request_id or uuid.uuid4().hex, _Admission())
            for caller, request in entries
        ]
        refusals = await asyncio.to_thread(self._admit_forwarded, admitted)
        return await gather_outcomes(
            self._conclude(caller, request, rid, state, refusal)
            for (caller, request, rid, state), refusal in zip(admitted, refusals, strict=True)
        )

    async def _conclude(
        self,
        caller: Caller,
        request: vpb.VerifyRequest,
        request_id: str,
        state: _Admission,
        refusal: VeilError | None,
    ) -> vpb.VerifyResponse:
        """After admission: ask the providers (or answer from the cache), record the use
        and sign the answer; or record the refusal and raise it."""
        try:
            if refusal is not None:
                raise refusal
            if state.cached is not None:
                outcome = Outcome(
                    Truth(state.cached.result), state.cached.providers, state.cached.attestations
                )
                protocol = Protocol(state.cached.protocol)
            else:
                assert state.plan is not None and state.record is not None
                asked = Asked(
                    request_id=request_id,
                    uscc=request.uscc,
                    institution=caller.subject,
                    grant_id=request.grant_id,
                    grant_jws=state.record.jws,
                    purpose=request.purpose,
                    loan_ref=request.loan_ref,
                    claims_sha256=state.digest,
                )
                state.asked_units = list(state.plan.providers)
                outcome, protocol = await self._ask(state.plan, asked, request.plaintext_baseline)
        except VeilError as exc:
            failed: tuple[str, ...] = ()
            if isinstance(exc, ProviderCallFailed):
                failed = tuple(sorted({u.split("#")[0] for u in exc.failed}))
            if state.spent and state.question is not None:
                with contextlib.suppress(VeilError):
                    await asyncio.to_thread(self.budgets.refund, state.question)
            fields = state.fields
            if not fields:  # refused before the claim was read: its fields, if it has any
                with contextlib.suppress(VeilError):
                    parsed = claim_from_json(request.claim_json, self.catalog)
                    fields = claim_fields(parsed, self.catalog)
            await self._record(
                request,
                caller.subject,
                request_id,
                fields,
                outcome=exc.code.name,
                answered=[u for u in state.asked_units if u not in failed],
                failed=list(failed),
                protocol=state.plan.protocol if state.plan else None,
            )
            raise (exc.cause if isinstance(exc, ProviderCallFailed) else exc) from None
        remember = None
        if state.cached is None:
            assert state.question is not None
            answer = CachedAnswer(
                outcome.result.value, protocol.value, outcome.providers, outcome.attestations
            )
            remember = (state.question, answer)
        return await self._answer(
            request,
            caller.subject,
            request_id,
            state.digest,
            state.claim,
            state.fields,
            outcome,
            protocol,
            cached=state.cached is not None,
            remember=remember,
        )

    def _admit(
        self, caller: Caller, request: vpb.VerifyRequest, request_id: str, state: _Admission
    ) -> None:
        """Everything before the providers are asked, in one worker thread and one write
        transaction (:meth:`CallerCheck.admit_with`, which consumes the assertion even
        when a later check refuses).  Refusals come in this order: a replayed assertion,
        an institution not active or not admitted for the purpose, the request, the
        claim (snapped to the grid and planned), the grant, then the daily quota or the
        budget (:meth:`VerificationBudgets.admit`), or the answer comes from the cache.
        ``state`` keeps what was learned before a refusal, for the record of it."""
        purpose, check, spend = self._admission(caller, request, request_id, state)
        self.callers.admit_with(caller, purpose=purpose, check=check, write=spend)

    def _admit_many(
        self,
        caller: Caller,
        requests: Sequence[vpb.VerifyRequest],
        ids: Sequence[str],
        states: Sequence[_Admission],
    ) -> list[VeilError | None]:
        """:meth:`_admit` for a batch under one assertion: each item's refusal (or None)
        in its place."""
        return self.callers.admit_each_with(
            caller,
            [
                self._admission(caller, r, rid, st)
                for r, rid, st in zip(requests, ids, states, strict=True)
            ],
        )

    def _admit_forwarded(
        self, entries: Sequence[tuple[Caller, vpb.VerifyRequest, str, _Admission]]
    ) -> list[VeilError | None]:
        """:meth:`_admit` for requests the gateway coalesced, each under its own caller."""
        return self.callers.admit_forwarded(
            [(c, *self._admission(c, r, rid, st)) for c, r, rid, st in entries]
        )

    def _admission(
        self, caller: Caller, request: vpb.VerifyRequest, rid: str, state: _Admission
    ) -> tuple[str, Callable[[], None], Callable[[Connection, None], None]]:
        """One item's purpose, checks (reads) and budget spending (the write)."""

        def spend(conn: Connection, _: None) -> None:
            assert state.question is not None
            state.cached = self.budgets.admit(state.question, conn=conn)
            state.spent = state.cached is None

        return (
            request.purpose,
            lambda: self._read_request(caller, request, rid, state),
            spend,
        )

    def _read_request(
        self, caller: Caller, request: vpb.VerifyRequest, request_id: str, state: _Admission
    ) -> None:
        if not REQUEST_ID_RE.fullmatch(request_id):
            raise InvalidArgument(
                f"request_id must be {MIN_REQUEST_ID} to {MAX_REQUEST_ID} characters "
                "from A-Z a-z 0-9 . _ : @ -"
            )
        validate_uscc(request.uscc)
        state.claim = snap(self.claims.parse(request.claim_json), self.settings.grid, self.catalog)
        state.digest = claim_sha256(state.claim)
        state.fields = claim_fields(state.claim, self.catalog)
        state.plan = plan(state.claim, self.catalog)
        missing = sorted(set(state.plan.providers) - set(self.registry.links))
        if missing:
            raise FailedPrecondition(
                f"no registered provider holds {', '.join(missing)} data at this platform"
            )
        if request.plaintext_baseline and not self.settings.plaintext_baseline:
            raise FailedPrecondition(
                "the plaintext baseline is a benchmark setting this platform does not allow"
            )
        q = Question(
            request.grant_id, caller.subject, request.uscc, state.digest, tuple(state.fields)
        )
        state.question = q
        state.record = self.grants.authorize(
            grant_id=request.grant_id,
            uscc=request.uscc,
            institution=q.institution,
            fields=q.fields,
            use="verify",
            purpose=request.purpose,
            loan_ref=request.loan_ref,
        )

    async def _ask(self, the_plan: Plan, asked: Asked, baseline: bool) -> tuple[Outcome, Protocol]:
        if the_plan.protocol is Protocol.SINGLE:
            return await self.fanout.single(the_plan, asked), Protocol.SINGLE
        if baseline:
            return await self.fanout.plaintext(the_plan, asked), Protocol.PLAINTEXT
        return await self.fanout.masked(the_plan, asked), the_plan.protocol

    async def _answer(
        self,
        request: vpb.VerifyRequest,
        institution: str,
        request_id: str,
        digest: str,
        claim: Any,
        fields: list[str],
        outcome: Outcome,
        protocol: Protocol,
        *,
        cached: bool,
        remember: tuple[Question, CachedAnswer] | None,
    ) -> vpb.VerifyResponse:
        now = dt.datetime.now(dt.UTC)
        body: dict[str, Any] = {
            "kind": "verification",
            "sub": request.uscc,
            "institution": institution,
            "grant_id": request.grant_id,
            "request_id": request_id,
            "claims_sha256": digest,
            "result": outcome.result.value,
            "protocol": protocol.value,
            "providers": list(outcome.providers),
            "cached": cached,
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "nonce": secrets.token_hex(16),
        }
        log_index = await self._record(
            request,
            institution,
            request_id,
            fields,
            outcome="OK",
            answered=[] if cached else list(outcome.providers),
            failed=[],
            protocol=protocol,
            result_sha256=result_digest(body),
            cached=cached,
            remember=remember,
        )

        signed = sign_result(self.keys.current, {**body, "log_index": log_index})
        return vpb.VerifyResponse(
            request_id=request_id,
            uscc=request.uscc,
            grant_id=request.grant_id,
            result=RESULTS[outcome.result],
            claim_json=canonical_json(claim),
            claims_sha256=digest,
            signed_result=signed,
            providers=list(outcome.providers),
            protocol=PROTOCOLS[protocol],
            cached=cached,
            provider_attestations=list(outcome.attestations),
            log_index=log_index,
        )

    async def _record(
        self,
        request: vpb.VerifyRequest,
        institution: str,
        request_id: str,
        fields: list[str],
        *,
        outcome: str,
        answered: list[str],
        failed: list[str],
        protocol: Protocol | None,
        result_sha256: str = "",
        cached: bool = False,
        remember: tuple[Question, CachedAnswer] | None = None,
    ) -> int:
        record_use = (
            self.grants.use_along(
                request.grant_id,
                request_id=request_id,
                institution=institution,
                fields=fields,
                use="verify",
                outcome=outcome,
                providers=answered,
            )
            if fields
            else None
        )

        def bookkeeping(conn: Connection) -> None:  # the cache and the grant's uses
            if remember is not None:
                self.budgets.remember(*remember, conn=conn)
            if record_use is not None:
                record_use(conn)

        detail: dict[str, str | int] = {"loan_ref": request.loan_ref} if request.loan_ref else {}
        if fields:
            detail["fields"] = ",".join(fields)
        if protocol is not None:
            detail["protocol"] = protocol.value
        if cached:
            detail["cached"] = 1
        event = AuditEvent(
            type=EventType.VERIFICATION,
            actor=f"institution/{institution}",
            request_id=request_id if _identifier(request_id) else "",
            enterprise=request.uscc if _valid_uscc(request.uscc) else "",
            grant=request.grant_id if _identifier(request.grant_id) else "",
            purpose=request.purpose if _identifier(request.purpose) else "",
            providers=answered,
            providers_failed=failed,
            result_sha256=result_sha256,
            outcome=outcome,
            detail={
                k: v for k, v in detail.items() if not isinstance(v, str) or _identifier(v, 1024)
            },
        )
        # One commit: the log entry, the grant's record of the use and the cached answer.
        return await self.audit.record(event, along=bookkeeping)

    async def policy(self) -> vpb.VerificationPolicy:
        units = sorted(self.registry.links)
        jwks = await self.fanout.answer_keys.all_jwks(units)
        policy = self.settings.policy
        return vpb.VerificationPolicy(
            grid=self.settings.grid.to_json(),
            default_budget=policy.budget,
            field_budgets=dict(policy.field_budgets),
            cache_ttl_s=policy.cache_ttl_s,
            provider_keys_json=json.dumps(jwks, sort_keys=True),
            paillier_bits=self.fanout.paillier.public.n.bit_length(),
        )


def _valid_uscc(value: str) -> bool:
    from veil.uscc import is_valid_uscc

    return bool(value) and is_valid_uscc(value)


def _identifier(value: str, max_len: int = 128) -> bool:
    return (
        bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@/,-]*", value or "")) and len(value) <= max_len
    )


class VerificationServicer(verification_pb2_grpc.VerificationServiceServicer):
    def __init__(self, verification: Verification) -> None:
        self.verification = verification

    async def Verify(
        self, request: vpb.VerifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.VerifyResponse:
        return await self.verification.verify(request, context)

    async def VerifyMany(
        self, request: vpb.VerifyManyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.VerifyManyResponse:
        outcomes = await self.verification.verify_many(list(request.requests), context)
        return vpb.VerifyManyResponse(results=item_results(outcomes, vpb.VerifyResult))

    async def GetVerificationPolicy(
        self, request: vpb.GetVerificationPolicyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.VerificationPolicy:
        require_peer(context, roles={"gateway", "admin"})
        return await self.verification.policy()


def build_verification(
    config: NodeConfig,
    catalog: Catalog,
    registry: ProviderRegistry,
    engine: Any,
    audit: AuditLog,
    authz: AuthorizationParts,
) -> tuple[ServiceBinding, str, Verification]:
    """The platform's VerificationService (``[verification]`` in its configuration), the
    id of the Paillier key providers encrypt their contributions to, and the
    :class:`Verification` (whose :meth:`~Verification.verify_coalesced` serves the
    gateway's coalesced calls, ``platform_node/forwarding.py``)."""
    settings = VerificationSettings.from_config(config)
    paillier = load_paillier(settings)
    ca_pem = config.tls.ca.read_bytes() if config.tls.ca is not None else None
    fanout = Fanout(
        catalog=catalog,
        registry=registry,
        keys=authz.keys,
        paillier=paillier,
        masks=MaskDirectory(registry, ca_pem, registry.timeout_s),
        answer_keys=AnswerKeys(registry),
    )
    verification = Verification(
        catalog=catalog,
        registry=registry,
        authz=authz,
        audit=audit,
        budgets=VerificationBudgets(engine, settings.policy),
        settings=settings,
        fanout=fanout,
    )
    servicer = VerificationServicer(verification)
    binding = ServiceBinding(
        name=vpb.DESCRIPTOR.services_by_name["VerificationService"].full_name,
        register=lambda server: verification_pb2_grpc.add_VerificationServiceServicer_to_server(
            servicer, server
        ),
    )
    return binding, paillier.key_id, verification
