"""ProviderVerification: a data-providing unit answers verification questions (数据核验).

Only the answer leaves.  For every request the unit itself:

1. parses and validates the claim against the catalog (every field verifiable, held
   here, and exactly the request token's fields);
2. checks the platform's request token — which must be for use ``verify`` — and the
   enterprise-signed grant with the same :class:`~provider_node.guard.Guard` as
   authorized detail (grant uses must include ``verify``; not revoked; not replayed);
3. records the request in its own ledger (answered or refused), before answering;
4. evaluates the claim on its own records (:func:`veil.claims.evaluate`, three-valued:
   no row is ``no_record``, never ``false``) and
5. answers either the result signed with its answer key (single-provider checks) or,
   for checks spanning providers, masked and freshly encrypted contributions
   (:mod:`veil.composite`), after verifying every other participant's signed mask key.

``ContributeMany`` and ``VerifyClaimMany`` carry the ``Contribute`` or ``VerifyClaim``
requests of several checks at once (the platform coalesces checks in flight together,
``veil/call_batcher.py``; a lone call is a batch of one): each item goes through the same
steps and gets its own answer or refusal in its place; the batch shares one worker-thread
hop and one transaction (one commit; an item claims its request id only after every step
that can refuse it, so a refused item wrote nothing and needs no savepoint), which is
what a lone call pays most for.

Configuration (provider node TOML)::

    [verification]
    answer_key = "../keys/tax-answer.key"   # Ed25519, 0600; created on first start
    randomizers = "djn"                     # or "full" (see docs/verification.md)
    pool_size = 64

    [masks]
    key = "../keys/tax-mask.key"            # provider_node/mask_keys.py
"""

from __future__ import annotations

import asyncio
import json
import logging
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import grpc
from sqlalchemy import Connection

from provider_node.guard import Guard
from provider_node.mask_keys import ProviderMaskKeys
from provider_node.service import ProviderServicer
from provider_node.warm_pools import KnownKeys
from veil._internal.status import item_results
from veil.attestation import Contribution, sign_answer, sign_contributions
from veil.claims import (
    Claim,
    ClaimCache,
    Truth,
    claim_fields,
    claim_sha256,
    evaluate,
    numeric_value,
)
from veil.composite import (
    CIPHERTEXTS,
    Protocol,
    ciphertexts_digest,
    masked_ciphertexts,
    plain_contribution,
)
from veil.config import NodeConfig
from veil.crypto import PublicKey, RandomnessPool, public_key_bytes, public_key_from_bytes
from veil.errors import ConfigError, InvalidArgument, PermissionDenied, VeilError
from veil.server import ServiceBinding, current_peer
from veil.store import write_transaction
from veil.tokens import Grant, KeySet, RequestClaims, SigningKey
from veil.uscc import validate_uscc
from veil.v1 import verification_pb2 as vpb
from veil.v1 import verification_pb2_grpc

log = logging.getLogger("veil.provider.verify")

USE = "verify"
MAX_CONDITIONS = 64
MAX_BATCH = 256  # items of one ContributeMany or VerifyClaimMany
RESULTS = {
    Truth.TRUE: vpb.VERIFICATION_RESULT_TRUE,
    Truth.FALSE: vpb.VERIFICATION_RESULT_FALSE,
    Truth.NO_RECORD: vpb.VERIFICATION_RESULT_NO_RECORD,
}
PROTOCOLS = {
    vpb.VERIFICATION_PROTOCOL_ALL: Protocol.ALL,
    vpb.VERIFICATION_PROTOCOL_ANY: Protocol.ANY,
    vpb.VERIFICATION_PROTOCOL_COUNT: Protocol.COUNT,
    vpb.VERIFICATION_PROTOCOL_SUM: Protocol.SUM,
}


def load_answer_key(config: NodeConfig) -> SigningKey:
    raw = config.section("verification").get("answer_key", f"{config.name}-answer.key")
    if not isinstance(raw, str) or not raw:
        raise ConfigError(str(config.path), "verification.answer_key", "must be a key file path")
    path = Path(raw) if Path(raw).is_absolute() else config.path.parent / raw
    if path.exists():
        return SigningKey.load(path)
    key = SigningKey.generate("EdDSA")
    key.save(path)
    log.warning("generated a new answer-signing key %s (kid %s)", path, key.kid)
    return key


def pool_settings(config: NodeConfig) -> tuple[bool, int]:
    """(short exponents?, pool size) from ``[verification] randomizers, pool_size``."""
    section = config.section("verification")
    mode = section.get("randomizers", "djn")
    if mode not in ("djn", "full"):
        raise ConfigError(str(config.path), "verification.randomizers", "must be djn or full")
    size = section.get("pool_size", 64)
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 4096:
        raise ConfigError(str(config.path), "verification.pool_size", "must be 0..4096")
    return mode == "djn", size


@dataclass(frozen=True)
class _Admitted:
    """What the stateless checks of one contribution request established."""

    protocol: Protocol
    conditions: list[Claim]
    sum_fields: list[str]
    public_key: PublicKey
    claims: RequestClaims
    grant: Grant
    peers: dict[str, bytes]
    pool: RandomnessPool | None


class _Batched(typing.Protocol):
    """What a batch's one transaction reads of each item (:class:`_Claim`, :class:`_Item`)."""

    @property
    def request(self) -> Any: ...
    @property
    def fields(self) -> list[str]: ...
    @property
    def outcome(self) -> object: ...


_B = TypeVar("_B", bound=_Batched)


@dataclass
class _Claim:
    """One claim of a ``VerifyClaim`` batch and how far it got."""

    request: vpb.ProviderVerifyRequest
    fields: list[str] = dataclass_field(default_factory=list)
    digest: str = ""
    admitted: tuple[Claim, RequestClaims, Grant] | None = None
    outcome: Truth | VeilError | None = None  # its answer, or its refusal


@dataclass
class _Item:
    """One contribution request of a batch and how far it got."""

    request: vpb.ContributeRequest
    fields: list[str] = dataclass_field(default_factory=list)
    admitted: _Admitted | None = None
    outcome: list[bytes] | VeilError | None = None  # its ciphertexts, or its refusal


class ProviderVerificationServicer(verification_pb2_grpc.ProviderVerificationServicer):
    def __init__(
        self,
        base: ProviderServicer,
        guard: Guard,
        answer_key: SigningKey,
        masks: ProviderMaskKeys | None,
        *,
        short_exponent: bool = True,
        pool_size: int = 64,
        known_keys: KnownKeys | None = None,
    ) -> None:
        self.base = base
        self.unit = base.unit
        self.catalog = base.catalog
        self.guard = guard
        self.answer_key = answer_key
        self.masks = masks
        self.short_exponent = short_exponent
        self.pool_size = pool_size
        self._pools: dict[int, RandomnessPool] = {}
        self._claims = ClaimCache(self.catalog)
        self._public_keys: dict[bytes, PublicKey] = {}
        self._known_keys = known_keys
        self.retired_inline = 0  # randomizers computed inline by pools since dropped
        if known_keys is not None and pool_size:
            key = known_keys.newest()
            if key is not None:  # filled before the first request (provider_node/warm_pools.py)
                log.info("filling the randomizer pool for platform key %s", key.key_id)
                self._pool(key)

    def pools(self) -> list[RandomnessPool]:
        return list(self._pools.values())

    # --- helpers ---

    def _ledger(
        self,
        method: str,
        request_id: str,
        uscc: str,
        fields: Sequence[str],
        outcome: str,
        detail: str,
        conn: Connection | None = None,
    ) -> None:
        peer = current_peer.get()
        datasets = sorted({self.catalog.field(f).dataset_id for f in fields if _known(self, f)})
        self.base.ledger.record(
            request_id=request_id,
            method=method,
            caller=f"{peer.role}/{peer.name}" if peer else "unauthenticated",
            uscc=uscc or None,
            datasets=datasets,
            outcome=outcome,
            detail=detail,
            conn=conn,
        )

    def _held(self, fields: Sequence[str]) -> None:
        for field_id in fields:
            field = self.catalog.field(field_id)
            if field.dataset_id not in self.base.datasets:
                raise InvalidArgument(f"field {field_id!r} is not held by provider {self.unit!r}")

    async def _authorize(
        self, request_id: str, uscc: str, fields: list[str], token: str, grant_jws: str
    ) -> tuple[RequestClaims, Grant]:
        """The stateless checks; replay and revocation are checked by ``guard.claimed``,
        inside which the answer is computed and recorded (one commit)."""
        if not request_id:
            raise InvalidArgument("request_id is required")
        validate_uscc(uscc)
        self._held(fields)
        claims, grant = await self.guard.authenticate(
            request_id=request_id,
            uscc=uscc,
            fields=fields,
            request_token=token,
            grant_jws=grant_jws,
        )
        if claims.use != USE:
            raise PermissionDenied(f"request token is for use {claims.use!r}, not {USE!r}")
        return claims, grant

    def _public_key(self, n: bytes) -> PublicKey:
        """The platform's Paillier key from its bytes, checked once per key."""
        key = self._public_keys.get(n)
        if key is None:
            key = public_key_from_bytes(n)
            if len(self._public_keys) >= 4:  # rotated keys: keep the newest only
                self._public_keys.clear()
            self._public_keys[n] = key
        return key

    def _pool(self, key: PublicKey) -> RandomnessPool | None:
        if self.pool_size == 0:
            return None
        pool = self._pools.get(key.n)
        if pool is None:
            if len(self._pools) >= 4:  # the platform rotated its key: drop the old pools
                self._drop_pools()
            pool = RandomnessPool(key, size=self.pool_size, short_exponent=self.short_exponent)
            self._pools[key.n] = pool
            if self._known_keys is not None:
                self._known_keys.remember(public_key_bytes(key))
        return pool

    def _drop_pools(self) -> None:
        for pool in self._pools.values():
            self.retired_inline += pool.inline_count
            pool.close()
        self._pools.clear()

    def close(self) -> None:
        self._drop_pools()

    # --- RPCs ---

    async def VerifyClaim(
        self, request: vpb.ProviderVerifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.ProviderVerifyResponse:
        (outcome,) = await self._verify_all([request])
        if isinstance(outcome, VeilError):
            raise outcome
        return outcome

    async def VerifyClaimMany(
        self, request: vpb.ProviderVerifyManyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.ProviderVerifyManyResponse:
        """``VerifyClaim`` for several claims at once: each item is checked, answered,
        recorded and signed exactly as a lone call would be, its refusal returned in its
        place (a refused item never fails another); one worker-thread hop and one commit
        in all."""
        _check_batch(len(request.requests))
        outcomes = await self._verify_all(list(request.requests))
        return vpb.ProviderVerifyManyResponse(
            results=item_results(outcomes, vpb.ProviderVerifyResult)
        )

    async def _verify_all(
        self, requests: Sequence[vpb.ProviderVerifyRequest]
    ) -> list[vpb.ProviderVerifyResponse | VeilError]:
        """Admit each request (stateless checks, on the event loop), then evaluate every
        admitted one in a single worker thread and transaction (:meth:`_evaluate_all`)."""
        items = [await self._admit_claim(request) for request in requests]
        return await asyncio.to_thread(self._evaluate_all, items)

    async def _admit_claim(self, request: vpb.ProviderVerifyRequest) -> _Claim:
        """Every check of one claim that needs no state; a refusal is kept, not raised."""
        item = _Claim(request)
        try:
            claim = self._claims.parse(request.claim_json)
            item.digest = claim_sha256(claim)
            item.fields = claim_fields(claim, self.catalog)
            claims, grant = await self._authorize(
                request.request_id,
                request.uscc,
                item.fields,
                request.request_token,
                request.grant_jws,
            )
        except VeilError as exc:
            item.outcome = exc
            return item
        item.admitted = (claim, claims, grant)
        return item

    def _evaluate_all(
        self, items: Sequence[_Claim]
    ) -> list[vpb.ProviderVerifyResponse | VeilError]:
        """One worker thread, one transaction: each admitted claim is checked against
        revocations, evaluated on this unit's records, then claims its request id and
        writes its ledger row; a refusal writes nothing of the item's and is recorded as
        refused.  All of it commits at once, before any answer leaves; each answer is
        then signed on its own (the bank receives it as the provider's attestation)."""
        self._in_one_transaction("VerifyClaim", items, self._evaluate_one)
        out: list[vpb.ProviderVerifyResponse | VeilError] = []
        for item in items:
            if isinstance(item.outcome, Truth):
                out.append(self._signed_answer(item.request, item.digest, item.outcome))
            else:
                assert item.outcome is not None
                out.append(item.outcome)
        return out

    def _evaluate_one(self, conn: Connection, item: _Claim) -> None:
        """An admitted claim's answer, or its refusal having written nothing (the request
        id is claimed last, after every step that can refuse: ``Guard.claim``)."""
        if item.admitted is None:
            return
        claim, claims, grant = item.admitted
        request = item.request
        try:
            self.guard.refuse_revoked(conn, grant)
            rows = self.base.store.fetch(request.uscc, item.fields)
            truth = evaluate(claim, rows, self.catalog)
            self.guard.claim(conn, claims)
        except VeilError as exc:
            item.outcome = exc
            return
        detail = _detail(claims, item.digest, f"result={truth.value}")
        self._ledger(
            "VerifyClaim", request.request_id, request.uscc, item.fields, "answered", detail, conn
        )
        item.outcome = truth

    def _signed_answer(
        self, request: vpb.ProviderVerifyRequest, digest: str, truth: Truth
    ) -> vpb.ProviderVerifyResponse:
        attestation = sign_answer(
            self.answer_key,
            unit=self.unit,
            uscc=request.uscc,
            request_id=request.request_id,
            claims_sha256=digest,
            result=truth.value,
        )
        return vpb.ProviderVerifyResponse(
            request_id=request.request_id, result=RESULTS[truth], attestation=attestation
        )

    async def Contribute(
        self, request: vpb.ContributeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.ContributeResponse:
        (outcome,) = await self._contribute_all([request])
        if isinstance(outcome, VeilError):
            raise outcome
        return outcome

    async def ContributeMany(
        self, request: vpb.ContributeManyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.ContributeManyResponse:
        """``Contribute`` for several checks at once: each item is checked, answered and
        recorded exactly as a lone call would be, its refusal returned in its place (a
        refused item never fails another); one worker-thread hop and one commit in all."""
        _check_batch(len(request.requests))
        outcomes = await self._contribute_all(list(request.requests))
        return vpb.ContributeManyResponse(results=item_results(outcomes, vpb.ContributeResult))

    async def _contribute_all(
        self, requests: Sequence[vpb.ContributeRequest]
    ) -> list[vpb.ContributeResponse | VeilError]:
        """Admit each request (stateless checks, on the event loop), then answer every
        admitted one in a single worker thread and transaction (:meth:`_answer_all`)."""
        items = [await self._admit(request) for request in requests]
        return await asyncio.to_thread(self._answer_all, items)

    async def _admit(self, request: vpb.ContributeRequest) -> _Item:
        """Every check of one request that needs no state; a refusal is kept, not raised."""
        item = _Item(request)
        try:
            if self.masks is None:
                raise InvalidArgument(f"provider {self.unit!r} has no mask key configured")
            protocol = PROTOCOLS.get(request.protocol)
            if protocol is None:
                raise InvalidArgument("protocol must be ALL, ANY, COUNT or SUM")
            conditions, sum_fields = self._parse_parts(request, protocol)
            item.fields = sorted(
                {f for c in conditions for f in claim_fields(c, self.catalog)} | set(sum_fields)
            )
            public_key = self._public_key(bytes(request.paillier_n))
            claims, grant = await self._authorize(
                request.request_id,
                request.uscc,
                item.fields,
                request.request_token,
                request.grant_jws,
            )
            peers = self.masks.peers(request.participants)
        except VeilError as exc:
            item.outcome = exc
            return item
        item.admitted = _Admitted(
            protocol,
            conditions,
            sum_fields,
            public_key,
            claims,
            grant,
            peers,
            self._pool(public_key),
        )
        return item

    def _answer_all(self, items: Sequence[_Item]) -> list[vpb.ContributeResponse | VeilError]:
        """One worker thread, one transaction: each admitted item is checked against
        revocations, read, masked and encrypted, then claims its request id and writes
        its ledger row (:meth:`_answer_one`) — a refusal (a revoked grant, a replayed
        request id) writes nothing of the item's and is recorded as refused, like every
        refusal of :meth:`_admit`.  All of it commits at once; the answers are signed
        after."""
        self._in_one_transaction("Contribute", items, self._answer_one)
        return self._signed(items)

    def _in_one_transaction(
        self, method: str, items: Sequence[_B], answer: Callable[[Connection, _B], None]
    ) -> None:
        """A batch's one transaction (as ``Guard.claimed``): ``answer`` sets each admitted
        item's outcome, or its refusal having written nothing; every refusal, of the
        stateless checks or here, is then recorded in the ledger.  It all commits at
        once, before any answer leaves."""
        with write_transaction(self.guard.engine) as conn:
            for item in items:
                answer(conn, item)
                if isinstance(item.outcome, VeilError):
                    request = item.request
                    self._ledger(
                        method,
                        request.request_id,
                        request.uscc,
                        item.fields,
                        "refused",
                        item.outcome.message,
                        conn,
                    )

    def _answer_one(self, conn: Connection, item: _Item) -> None:
        """An admitted item's ciphertexts, or its refusal having written nothing: the
        request id is claimed last, after every step that can refuse (``Guard.claim``),
        so a batch needs no savepoint per item."""
        admitted = item.admitted
        if admitted is None:
            return
        request = item.request
        try:
            self.guard.refuse_revoked(conn, admitted.grant)
            ciphertexts = self._contribution(
                request,
                admitted.protocol,
                admitted.conditions,
                admitted.sum_fields,
                item.fields,
                admitted.public_key,
                admitted.peers,
                admitted.pool,
            )
            self.guard.claim(conn, admitted.claims)
        except VeilError as exc:
            item.outcome = exc
            return
        detail = _detail(
            admitted.claims, request.claims_sha256, f"protocol={admitted.protocol.value}"
        )
        self._ledger(
            "Contribute", request.request_id, request.uscc, item.fields, "answered", detail, conn
        )
        item.outcome = ciphertexts

    def _signed(self, items: Sequence[_Item]) -> list[vpb.ContributeResponse | VeilError]:
        """Each item's response or refusal; the answered ones under one attestation,
        signed after the commit (``veil.attestation.sign_contributions``)."""
        answered = [
            Contribution(
                request_id=item.request.request_id,
                uscc=item.request.uscc,
                claims_sha256=item.request.claims_sha256,
                ciphertexts_sha256=ciphertexts_digest(item.outcome),
            )
            for item in items
            if isinstance(item.outcome, list)
        ]
        attestation = (
            sign_contributions(self.answer_key, unit=self.unit, answers=answered)
            if answered
            else ""
        )
        out: list[vpb.ContributeResponse | VeilError] = []
        for item in items:
            if isinstance(item.outcome, list):
                out.append(
                    vpb.ContributeResponse(
                        request_id=item.request.request_id,
                        ciphertexts=item.outcome,
                        attestation=attestation,
                    )
                )
            else:
                assert item.outcome is not None
                out.append(item.outcome)
        return out

    def _contribution(
        self,
        request: vpb.ContributeRequest,
        protocol: Protocol,
        conditions: Sequence[Claim],
        sum_fields: Sequence[str],
        fields: Sequence[str],
        public_key: PublicKey,
        peers: dict[str, bytes],
        pool: RandomnessPool | None,
    ) -> list[bytes]:
        """This provider's masked, freshly encrypted contribution (veil/composite.py)."""
        rows = self.base.store.fetch(request.uscc, list(fields))
        n = public_key.n
        if protocol is Protocol.SUM:
            terms = [numeric_value(f, rows, self.catalog) for f in sum_fields]
            partial = sum((t for t in terms if t is not None), Decimal(0))
            missing = sum(1 for t in terms if t is None)
            values = plain_contribution(protocol, n, partial_sum=partial, missing=missing)
        else:
            truths = [evaluate(c, rows, self.catalog) for c in conditions]
            values = plain_contribution(protocol, n, truths=truths, total=request.total_conditions)
        masks = self.masks
        assert masks is not None

        def mask_for(ctx: str) -> int:
            return masks.mask(peers, request_id=request.request_id, context=ctx, modulus=n)

        ciphertexts = masked_ciphertexts(
            protocol, values, public_key=public_key, mask_for=mask_for, pool=pool
        )
        assert len(ciphertexts) == CIPHERTEXTS[protocol]
        return ciphertexts

    def _parse_parts(
        self, request: vpb.ContributeRequest, protocol: Protocol
    ) -> tuple[list[Claim], list[str]]:
        if protocol is Protocol.SUM:
            if request.conditions_json or not request.sum_fields:
                raise InvalidArgument("a sum contribution names sum_fields and no conditions")
            fields = list(request.sum_fields)
            if len(set(fields)) != len(fields) or len(fields) > MAX_CONDITIONS:
                raise InvalidArgument("sum_fields must be distinct (at most 64)")
            for field_id in fields:
                field = self.catalog.field(field_id)
                if not field.verifiable or field.type.value not in ("integer", "decimal"):
                    raise InvalidArgument(f"field {field_id!r} cannot be summed in a verification")
            return [], fields
        if request.sum_fields or not request.conditions_json:
            raise InvalidArgument(f"a {protocol.value} contribution names conditions only")
        if len(request.conditions_json) > MAX_CONDITIONS:
            raise InvalidArgument(f"at most {MAX_CONDITIONS} conditions per provider")
        if protocol is Protocol.COUNT and not (
            len(request.conditions_json) <= request.total_conditions <= 10 * MAX_CONDITIONS
        ):
            raise InvalidArgument("total_conditions must cover this provider's conditions")
        return [self._claims.parse(c) for c in request.conditions_json], []

    async def GetAnswerKeys(
        self, request: vpb.GetAnswerKeysRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> vpb.AnswerKeys:
        jwks = KeySet.of(self.answer_key).to_jwks()
        return vpb.AnswerKeys(unit=self.unit, jwks_json=json.dumps(jwks, sort_keys=True))


def _check_batch(size: int) -> None:
    if not size:
        raise InvalidArgument("a batch carries at least one request")
    if size > MAX_BATCH:
        raise InvalidArgument(f"a batch carries at most {MAX_BATCH} requests")


def _known(servicer: ProviderVerificationServicer, field_id: str) -> bool:
    try:
        servicer.catalog.field(field_id)
    except InvalidArgument:
        return False
    return True


def _detail(claims: RequestClaims, digest: str, extra: str) -> str:
    return (
        f"institution={claims.institution};purpose={claims.purpose};loan_ref={claims.loan_ref};"
        f"grant={claims.grant_id};claim={digest};{extra}"
    )


def verification_binding(
    config: NodeConfig, base: ProviderServicer, guard: Guard, masks: ProviderMaskKeys | None
) -> tuple[ServiceBinding, ProviderVerificationServicer]:
    """The ``ProviderVerification`` service a provider adds when ``[verification]`` is
    configured (``masks``: its mask key, needed for checks across providers)."""
    short, size = pool_settings(config)
    servicer = ProviderVerificationServicer(
        base,
        guard,
        load_answer_key(config),
        masks,
        short_exponent=short,
        pool_size=size,
        known_keys=KnownKeys(base.ledger.engine, "verification"),
    )
    binding = ServiceBinding(
        name=vpb.DESCRIPTOR.services_by_name["ProviderVerification"].full_name,
        register=lambda server: verification_pb2_grpc.add_ProviderVerificationServicer_to_server(
            servicer, server
        ),
    )
    return binding, servicer
