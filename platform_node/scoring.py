"""Online joint-model scoring at the platform: encrypted partial scores, secure sum, signed score.

For one ``ScoreRequest`` of an institution (through the gateway):

1. the caller, its purpose and quota, and the enterprise's grant for ``score`` over every
   field of the model (:meth:`GrantRegistry.authorize`);
2. each provider of the model gets a request token (``use: score``, exactly its fields),
   the enterprise's grant, and the participants' signed mask keys; it answers
   ``Enc(s_i + m_i)`` re-randomized (``provider_node.scoring``), where ``Σ m_i ≡ 0 mod n``;
3. the platform multiplies the answers — ``Enc(Σ s_i)`` — and decrypts **only that
   product**, mod ``p`` alone since the total is small (half a decryption); it never
   decrypts an individual answer (and would see a uniformly random residue if it did);
4. logit = base (intercept + linear offsets) + Σ s_i / 2^100 (+ the missing
   contributions of imputed providers); PD, score and grade on the model's published
   scale (:mod:`veil.scoring.scale`);
5. the use goes into the transparency log *before* the answer leaves, and the answer
   carries a signed attestation (``sign_result``, kind ``score``) with the log index.

Drop-out.  A provider that does not answer leaves the others' masks uncancelled, so the
sum is useless; the platform then re-runs the request with the remaining providers (new
request id, new masks) when the model card allows imputing the missing one, adding its
*missing* contributions in the clear and listing it under ``providers_missing``; else
UNAVAILABLE naming it.  A provider that answers with a malformed or out-of-range
ciphertext is never imputed: the request fails naming it; a product that decrypts outside
the possible range (masks that did not cancel) is refused (:func:`combine_logit`).  Never a
silently wrong score.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import Connection, Engine

from platform_node.audit import AuditLog
from platform_node.batch import BatchAdminServicer, BatchRunner, BatchStore, Deliveries
from platform_node.callers import CallerCheck
from platform_node.forwarding import gather_outcomes, request_ids
from platform_node.mask_directory import MaskDirectory
from platform_node.models.admin import ModelAdminServicer, model_info
from platform_node.models.registry import ModelRecord, ModelRegistry
from platform_node.providers import (
    ProviderMisbehaved,
    ProviderRegistry,
    provider_error,
    unpack_batch,
)
from platform_node.registry import GrantRecord, GrantRegistry, InstitutionRegistry
from platform_node.signing import PlatformKeys
from veil._internal.status import item_results
from veil.audit.entry import AuditEvent, EventType
from veil.call_batcher import CallBatcher
from veil.caller import Caller
from veil.config import NodeConfig
from veil.crypto.paillier import (
    Ciphertext,
    PaillierKeys,
    PublicKey,
    add_many,
    ciphertext_bytes,
    ciphertext_from_bytes,
    encrypt,
    public_key_bytes,
)
from veil.crypto.pool import RandomnessPool
from veil.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    MalformedCiphertext,
    Unavailable,
    VeilError,
)
from veil.request_ids import MAX_REQUEST_ID_LEN, rerun_id
from veil.scoring.part import SUM, encrypted_numbers, model_part
from veil.scoring.spec import ModelSpec, canonical_json
from veil.server import ServiceBinding
from veil.tokens import RequestClaims, sign_result
from veil.uscc import is_valid_uscc, validate_uscc
from veil.v1 import provider_scoring_pb2 as ppb
from veil.v1 import provider_scoring_pb2_grpc, scoring_pb2_grpc
from veil.v1 import scoring_pb2 as pb

log = logging.getLogger("veil.platform.scoring")

USE = "score"
REQUEST_TOKEN_LIFETIME_S = 60
INSTALL_TIMEOUT_S = 60.0
DEFAULT_PAILLIER_BITS = 2048


def load_scoring_key(config: NodeConfig) -> PaillierKeys:
    """``[scoring] paillier_key`` (default ``scoring-paillier.key`` next to the config),
    generated on first start with ``paillier_bits`` (default 2048) and kept 0600."""
    section = config.section("scoring")
    raw = section.get("paillier_key", "scoring-paillier.key")
    bits = section.get("paillier_bits", DEFAULT_PAILLIER_BITS)
    if not isinstance(raw, str) or not raw:
        raise ConfigError(str(config.path), "scoring.paillier_key", "must be a file path")
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 2048:
        raise ConfigError(str(config.path), "scoring.paillier_bits", "must be an integer ≥ 2048")
    path = Path(raw) if Path(raw).is_absolute() else config.path.parent / raw
    if path.exists():
        return PaillierKeys.load(path)
    keys = PaillierKeys.generate(bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys.save(path)
    log.warning("generated the platform's %d-bit scoring key %s at %s", bits, keys.key_id, path)
    return keys


def install_request(
    spec: ModelSpec, unit: str, pk: PublicKey, pool: RandomnessPool | None
) -> ppb.InstallModelRequest:
    """A provider's part: its features' definitions in the clear, weights encrypted
    (fresh randomness per weight; the pool may use DJN exponents: providers do not hold
    the key)."""
    assert spec.version is not None
    request = ppb.InstallModelRequest(
        model_id=spec.model_id,
        version=spec.version,
        key_id=pk.key_id,
        paillier_n=public_key_bytes(pk),
        part_json=model_part(spec, unit).to_json(),
        model_sha256=spec.sha256,
    )
    for name, ints in encrypted_numbers(spec, unit):
        request.features.add(
            name=name, ciphertexts=[ciphertext_bytes(encrypt(pk, m, pool)) for m in ints]
        )
    return request


@dataclass
class _Admitted:
    """What admission found: the model (kept for the record even when the grant then
    refuses) and the grant."""

    record: ModelRecord | None = None
    grant: GrantRecord | None = None


def _request_id(request: pb.ScoreRequest) -> str:
    request_id = request.request_id or uuid.uuid4().hex
    if len(request_id) > MAX_REQUEST_ID_LEN or len(request_id) < 16:
        raise InvalidArgument("request_id must be 16..64 characters")
    return request_id


def result_digest(claims: dict[str, Any]) -> str:
    """``result_sha256`` of a score: SHA-256 of the attestation's claims in canonical JSON
    without ``iss``, ``iat`` and ``log_index`` (which the log entry cannot contain)."""
    body = {k: v for k, v in claims.items() if k not in ("iss", "iat", "log_index")}
    return hashlib.sha256(canonical_json(body)).hexdigest()


TOTAL_BOUND_BITS = 512
"""A genuine masked sum decrypts to ``Σ s_i`` with ``|Σ s_i| < 2^512`` by a wide margin
(each contribution is a weight ≤ 10^6 times a feature value — a catalog number below
10^18 — at 2^100 fixed point, at most 512 features: below 2^200), so the platform reads
it mod ``p`` only (:meth:`~veil.crypto.PaillierKeys.decrypt_small`, half a decryption);
masks that do not cancel leave a residue uniform mod n, which reads in bound with
probability below 2^-510 at 2048 bits."""


class MasksDidNotCancel(Unavailable):
    """The product of the providers' answers does not decrypt to a possible total."""


def combine_logit(
    keys: PaillierKeys,
    spec: ModelSpec,
    answers: Mapping[str, Ciphertext],
    imputed: Sequence[str] = (),
) -> float:
    """The logit from the providers' answers: decrypt only their product, add the
    platform's own terms (intercept, linear offsets, imputed providers' missing values).

    A total outside ±2^:data:`TOTAL_BOUND_BITS` means the masks did not cancel (an answer
    computed for another roster or request, or a provider sending garbage that is still
    a valid ciphertext): UNAVAILABLE naming the providers summed, never a number.
    """
    total = keys.decrypt_small(add_many(list(answers.values())), bound_bits=TOTAL_BOUND_BITS)
    if total is None:
        units = ", ".join(sorted(answers))
        raise MasksDidNotCancel(
            f"the partial scores of {units} do not combine to a valid total (their masks "
            "did not cancel: one of them answered for another roster or request); no score",
            details={"providers": ",".join(sorted(answers)), "reason": "masks_did_not_cancel"},
        )
    logit = Fraction(total, SUM.scale) + Fraction(spec.base_logit)
    for unit in imputed:
        logit += Fraction(spec.missing_contribution(unit))
    return float(logit)


STALE_MASK_KEY = "is not its current key"


class _StaleRoster(Exception):
    """A provider refused the roster's key for itself (rotated): refresh and re-run."""


@dataclass
class Round:
    answers: dict[str, Ciphertext]
    unavailable: dict[str, VeilError]


class OnlineScoring:
    """Model deployment to providers and the online scoring protocol."""

    def __init__(
        self,
        *,
        providers: ProviderRegistry,
        models: ModelRegistry,
        keys: PaillierKeys,
        masks: MaskDirectory,
        grants: GrantRegistry,
        institutions: InstitutionRegistry,
        callers: CallerCheck,
        signing: PlatformKeys,
        audit: AuditLog,
    ) -> None:
        self.providers = providers
        self.models = models
        self.keys = keys
        self.masks = masks
        self.grants = grants
        self.institutions = institutions
        self.callers = callers
        self.signing = signing
        self.audit = audit
        # Weights go to providers, who do not hold the key: DJN short exponents are fine.
        self.pool = RandomnessPool(keys.public, 64, short_exponent=True)
        self._install_locks: dict[tuple[str, int, str], asyncio.Lock] = {}
        self._installed: set[tuple[str, int, str]] = set()
        self._stubs: dict[str, provider_scoring_pb2_grpc.ProviderScoringAsyncStub] = {}
        self._batchers: dict[
            str, CallBatcher[ppb.PartialScoreRequest, ppb.PartialScoreResponse]
        ] = {}

    def close(self) -> None:
        self.pool.close()

    def stub(self, unit: str) -> provider_scoring_pb2_grpc.ProviderScoringAsyncStub:
        link = self.providers.link(unit)
        stub = self._stubs.get(unit)
        if stub is None or getattr(stub, "_veil_channel", None) is not link.channel:
            stub = provider_scoring_pb2_grpc.ProviderScoringStub(link.channel)
            stub._veil_channel = link.channel  # type: ignore[attr-defined]
            self._stubs[unit] = stub
        return stub

    def batcher(self, unit: str) -> CallBatcher[ppb.PartialScoreRequest, ppb.PartialScoreResponse]:
        """Requests in flight together reach ``unit`` in one PartialScores call."""
        batcher = self._batchers.get(unit)
        if batcher is None:

            async def send(
                requests: list[ppb.PartialScoreRequest],
            ) -> list[ppb.PartialScoreResponse | VeilError]:
                return await self._partial_scores(unit, requests)

            batcher = self._batchers[unit] = CallBatcher(send, name="PartialScores")
        return batcher

    async def _partial_scores(
        self, unit: str, requests: list[ppb.PartialScoreRequest]
    ) -> list[ppb.PartialScoreResponse | VeilError]:
        name = self.providers.link(unit).name
        timeout = self.providers.timeout_s
        try:
            answer = await self.stub(unit).PartialScores(
                ppb.PartialScoresRequest(requests=requests), timeout=timeout
            )
        except grpc.aio.AioRpcError as err:
            raise provider_error(name, err, timeout) from None
        return unpack_batch(name, requests, answer.results)

    # -- deployment ---------------------------------------------------------------------

    def install_request(self, spec: ModelSpec, unit: str) -> ppb.InstallModelRequest:
        return install_request(spec, unit, self.keys.public, self.pool)

    async def install(self, spec: ModelSpec, unit: str) -> None:
        assert spec.version is not None
        lock = self._install_locks.setdefault((spec.model_id, spec.version, unit), asyncio.Lock())
        async with lock:
            request = await asyncio.to_thread(self.install_request, spec, unit)
            try:
                await self.stub(unit).InstallModel(request, timeout=INSTALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as err:
                raise provider_error(
                    self.providers.link(unit).name, err, INSTALL_TIMEOUT_S
                ) from None
            await asyncio.to_thread(
                self.models.record_install, spec.model_id, spec.version, unit, self.keys.key_id
            )

    def _check_registered(self, spec: ModelSpec) -> None:
        missing = sorted(set(spec.providers) - set(self.providers.links))
        if missing:
            raise FailedPrecondition(
                f"model {spec.model_id}@{spec.version} needs provider(s) "
                f"{', '.join(missing)}, not registered at this platform"
            )

    async def deploy(self, record: ModelRecord) -> list[str]:
        """Install every provider's part now (all or an error naming who failed)."""
        spec = record.spec
        self._check_registered(spec)
        results = await asyncio.gather(
            *(self.install(spec, u) for u in spec.providers), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(spec.providers)

    async def _ensure_installed(self, spec: ModelSpec) -> None:
        assert spec.version is not None
        done = (spec.model_id, spec.version, self.keys.key_id)
        if done in self._installed:
            return  # a provider that lost its part answers "not installed": see _partial
        have = await asyncio.to_thread(
            self.models.installed, spec.model_id, spec.version, self.keys.key_id
        )
        todo = [u for u in spec.providers if u not in have]
        results = await asyncio.gather(
            *(self.install(spec, u) for u in todo), return_exceptions=True
        )
        if not any(isinstance(r, BaseException) for r in results):
            self._installed.add(done)
        for unit, result in zip(todo, results, strict=True):
            if isinstance(result, BaseException):  # the request round names it again
                log.warning(
                    "installing %s@%s at %s failed: %s", spec.model_id, spec.version, unit, result
                )

    # -- one round of partial scores -------------------------------------------------------

    async def _partial(
        self,
        spec: ModelSpec,
        unit: str,
        request: ppb.PartialScoreRequest,
    ) -> Ciphertext:
        name = self.providers.link(unit).name
        for attempt in (1, 2):
            try:
                answer = await self.batcher(unit).call(request)
                break
            except VeilError as mapped:
                if attempt == 1 and mapped.details.get("reason") == "not_installed":
                    await self.install(spec, unit)
                    continue
                raise
        try:
            return ciphertext_from_bytes(self.keys.public, answer.ciphertext)
        except MalformedCiphertext as exc:
            raise ProviderMisbehaved(
                f"provider {name!r} returned a malformed ciphertext ({exc.message}); rejected",
                details={"provider": unit, "reason": exc.details.get("reason", "malformed")},
            ) from None

    async def _round(
        self,
        spec: ModelSpec,
        units: Sequence[str],
        *,
        request_id: str,
        uscc: str,
        institution: str,
        purpose: str,
        loan_ref: str,
        grant_id: str,
        grant_jws: str,
    ) -> Round:
        assert spec.version is not None
        keys = await asyncio.gather(*(self.masks.get(u) for u in units), return_exceptions=True)
        lost = {u: k for u, k in zip(units, keys, strict=True) if isinstance(k, BaseException)}
        for error in lost.values():
            if not isinstance(error, Unavailable):
                raise error
        if lost:  # a provider whose mask key cannot be fetched is a drop-out like any other
            return Round({}, {u: e for u, e in lost.items() if isinstance(e, Unavailable)})
        signed = [k for k in keys if not isinstance(k, BaseException)]
        now = int(time.time())
        calls = []
        for unit in units:
            fields = spec.fields_of(unit)
            token = self.signing.request_token(
                RequestClaims(
                    provider=unit,
                    uscc=uscc,
                    institution=institution,
                    fields=fields,
                    use=USE,
                    purpose=purpose,
                    loan_ref=loan_ref,
                    grant_id=grant_id,
                    request_id=request_id,
                    issued_at=now,
                    expires=now + REQUEST_TOKEN_LIFETIME_S,
                )
            )
            request = ppb.PartialScoreRequest(
                request_id=request_id,
                uscc=uscc,
                model_id=spec.model_id,
                version=spec.version,
                key_id=self.keys.key_id,
                fields=list(fields),
                request_token=token,
                grant_jws=grant_jws,
                participants=signed,
            )
            calls.append(self._partial(spec, unit, request))
        results = await asyncio.gather(*calls, return_exceptions=True)
        stale = [
            u
            for u, r in zip(units, results, strict=True)
            if isinstance(r, FailedPrecondition) and STALE_MASK_KEY in r.message
        ]
        if stale:  # a rotated mask key: refresh the roster and run the round again
            for unit in stale:
                self.masks.forget(unit)
            raise _StaleRoster(stale)
        out = Round({}, {})
        for unit, result in zip(units, results, strict=True):
            if isinstance(result, Ciphertext):
                out.answers[unit] = result
            elif isinstance(result, Unavailable) and not isinstance(result, ProviderMisbehaved):
                out.unavailable[unit] = result
            elif isinstance(result, BaseException):
                raise result
        return out

    def combine(
        self, spec: ModelSpec, answers: Mapping[str, Ciphertext], imputed: Sequence[str]
    ) -> float:
        return combine_logit(self.keys, spec, answers, imputed)

    # -- the request -----------------------------------------------------------------------

    async def score(self, request: pb.ScoreRequest, context: Any) -> pb.ScoreResponse:
        caller = self.callers.identify(context, {"institution"})
        request_id = _request_id(request)
        admitted = _Admitted()
        refusal: VeilError | None = None
        try:
            await asyncio.to_thread(self._admit, caller, request, admitted)
        except VeilError as exc:
            refusal = exc
        return await self._conclude(caller, request, request_id, admitted, refusal)

    async def score_many(
        self, requests: Sequence[pb.ScoreRequest], context: Any
    ) -> list[pb.ScoreResponse | VeilError]:
        """Each request scored as :meth:`score` would score it alone, or its refusal in
        its place.  The caller is checked and its assertion consumed once; every item is
        admitted (model, grant, daily quota) in one worker-thread hop and one write
        transaction (:meth:`CallerCheck.admit_each_with`); the items then run their
        rounds together, so their partial-score requests travel to each provider in
        shared calls.  A refusal of the caller itself fails the call, after each item's
        refusal is recorded as a lone ``Score``'s would be."""
        caller = self.callers.identify(context, {"institution"})
        ids = request_ids(requests, _request_id)
        states = [_Admitted() for _ in requests]
        whole: VeilError | None = None
        try:
            refusals = await asyncio.to_thread(self._admit_many, caller, requests, states)
        except VeilError as exc:  # the caller itself (a replayed assertion, not active)
            whole = exc
            refusals = [exc] * len(requests)
        outcomes = await gather_outcomes(
            self._conclude(caller, request, rid, state, refusal)
            for request, rid, state, refusal in zip(requests, ids, states, refusals, strict=True)
        )
        if whole is not None:
            raise whole
        return outcomes

    async def score_coalesced(
        self, entries: Sequence[tuple[Caller, pb.ScoreRequest]]
    ) -> list[pb.ScoreResponse | VeilError]:
        """``Score`` calls the gateway coalesced (``Forwarding.ScoreForwarded``), each
        under the caller it authenticated: each scored as :meth:`score` would score it
        alone, or its refusal in its place (a replayed assertion refuses its own item
        only).  Admitted in one worker-thread hop and one write transaction."""
        outcomes: list[pb.ScoreResponse | VeilError | None] = [None] * len(entries)
        admitted: list[tuple[int, Caller, pb.ScoreRequest, str, _Admitted]] = []
        for i, (caller, request) in enumerate(entries):
            try:
                admitted.append((i, caller, request, _request_id(request), _Admitted()))
            except InvalidArgument as exc:  # as a lone call refuses it: unrecorded
                outcomes[i] = exc
        refusals = await asyncio.to_thread(
            self.callers.admit_forwarded,
            [
                (c, r.purpose, self._checker(c, r, st), self._quota(c))
                for _, c, r, _, st in admitted
            ],
        )
        concluded = await gather_outcomes(
            self._conclude(caller, request, rid, state, refusal)
            for (_, caller, request, rid, state), refusal in zip(admitted, refusals, strict=True)
        )
        for (i, *_), outcome in zip(admitted, concluded, strict=True):
            outcomes[i] = outcome
        return outcomes  # type: ignore[return-value]

    def _check(self, caller: Caller, request: pb.ScoreRequest, admitted: _Admitted) -> None:
        """The model and the grant (reads only); ``admitted`` keeps the model even if
        the grant then refuses, for the record of the refusal."""
        validate_uscc(request.uscc)
        admitted.record = found = self.models.scorable(request.model_id, request.version)
        self._check_registered(found.spec)
        admitted.grant = self.grants.authorize(
            grant_id=request.grant_id,
            uscc=request.uscc,
            institution=caller.subject,
            fields=list(found.spec.fields),
            use=USE,
            purpose=request.purpose,
            loan_ref=request.loan_ref,
        )

    def _admit(self, caller: Caller, request: pb.ScoreRequest, admitted: _Admitted) -> None:
        """The checks, then one transaction: the assertion consumed (also when a check
        refused: a refusal is no way to replay it) and the daily quota (one worker-thread
        hop for all of it)."""
        self.callers.admit_with(
            caller,
            purpose=request.purpose,
            check=self._checker(caller, request, admitted),
            write=self._quota(caller),
        )

    def _admit_many(
        self, caller: Caller, requests: Sequence[pb.ScoreRequest], states: Sequence[_Admitted]
    ) -> list[VeilError | None]:
        """:meth:`_admit` for a batch under one assertion: each item's refusal (or None)
        in its place."""
        return self.callers.admit_each_with(
            caller,
            [
                (r.purpose, self._checker(caller, r, st), self._quota(caller))
                for r, st in zip(requests, states, strict=True)
            ],
        )

    def _checker(
        self, caller: Caller, request: pb.ScoreRequest, admitted: _Admitted
    ) -> Callable[[], None]:
        return lambda: self._check(caller, request, admitted)

    def _quota(self, caller: Caller) -> Callable[[Connection, None], None]:
        """An item's write: one unit of its caller's daily quota."""

        def take(conn: Connection, _: None) -> None:
            self.institutions.consume_quota(caller.subject, conn=conn)

        return take

    async def _conclude(
        self,
        caller: Caller,
        request: pb.ScoreRequest,
        request_id: str,
        admitted: _Admitted,
        refusal: VeilError | None,
    ) -> pb.ScoreResponse:
        """After admission: the rounds with the providers, the decryption, the log entry
        and the signed score; or the refusal, recorded, raised."""
        asked: list[str] = []
        answered: list[str] = []
        imputed: list[str] = []
        attempt = 0  # rounds run so far, minus one (a drop-out or a stale mask key re-runs)
        try:
            # A replayed assertion, a suspended institution or a purpose it was not
            # admitted for is refused *and recorded*, like every other refusal.
            if refusal is not None:
                raise refusal
            assert admitted.record is not None and admitted.grant is not None
            scored, grant = admitted.record, admitted.grant
            spec = scored.spec
            await self._ensure_installed(spec)
            units = list(spec.providers)
            refreshed = False
            while True:
                rid = rerun_id(request_id, attempt)
                asked = sorted(set(asked) | set(units))
                try:
                    rnd = await self._round(
                        spec,
                        units,
                        request_id=rid,
                        uscc=request.uscc,
                        institution=caller.subject,
                        purpose=request.purpose,
                        loan_ref=request.loan_ref,
                        grant_id=request.grant_id,
                        grant_jws=grant.jws,
                    )
                except _StaleRoster as stale:
                    if refreshed:
                        raise FailedPrecondition(
                            f"provider(s) {', '.join(stale.args[0])} refused a fresh mask key"
                        ) from None
                    refreshed = True
                    attempt += 1
                    continue
                if not rnd.unavailable:
                    answered = sorted(rnd.answers)
                    break
                gone = sorted(rnd.unavailable)
                remaining = [u for u in units if u not in gone]
                blocked = [u for u in gone if not spec.may_impute(u)]
                if blocked or len(remaining) < 2:
                    first = rnd.unavailable[(blocked or gone)[0]]
                    why = (
                        f"model {spec.model_id}@{spec.version} does not allow scoring without "
                        f"{', '.join(blocked)}"
                        if blocked
                        else "fewer than two providers would remain"
                    )
                    raise Unavailable(
                        f"{first.message}; {why}",
                        details={"providers": ",".join(gone)},
                    )
                log.warning(
                    "request %s: %s unavailable, re-running without (model card allows)",
                    request_id,
                    ", ".join(gone),
                )
                imputed = sorted(set(imputed) | set(gone))
                units = remaining
                attempt += 1
            logit = await asyncio.to_thread(
                self.combine, spec, {u: rnd.answers[u] for u in answered}, imputed
            )
            result = spec.scale.apply(logit)
        except VeilError as exc:
            await self._log_failure(
                request,
                caller.subject,
                request_id,
                admitted.record,
                asked,
                answered,
                exc,
                attempt + 1,
            )
            raise
        claims: dict[str, Any] = {
            "kind": "score",
            "sub": request.uscc,
            "institution": caller.subject,
            "grant_id": request.grant_id,
            "purpose": request.purpose,
            "loan_ref": request.loan_ref,
            "request_id": request_id,
            "model_id": spec.model_id,
            "model_version": spec.version,
            "model_sha256": spec.sha256,
            "result": result.claims(),
            "scale": {
                "pd_decimals": spec.scale.pd_decimals,
                "score_decimals": spec.scale.score_decimals,
            },
            "providers": answered,
            "providers_missing": imputed,
        }
        digest = result_digest(claims)
        log_index = await self._log(
            request,
            caller.subject,
            request_id,
            admitted.record,
            answered,
            [u for u in asked if u not in answered],
            "OK",
            digest,
            imputed,
            attempt + 1,
        )
        claims["log_index"] = log_index
        attestation = sign_result(self.signing.current, claims)
        return pb.ScoreResponse(
            request_id=request_id,
            uscc=request.uscc,
            model_id=spec.model_id,
            version=spec.version or 0,
            pd=result.pd,
            score=result.score,
            grade=result.grade,
            providers=answered,
            providers_missing=imputed,
            attestation=attestation,
            log_index=log_index,
        )

    async def _log_failure(
        self,
        request: pb.ScoreRequest,
        institution: str,
        request_id: str,
        record: ModelRecord | None,
        asked: list[str],
        answered: list[str],
        exc: VeilError,
        rounds: int,
    ) -> None:
        await self._log(
            request,
            institution,
            request_id,
            record,
            [],
            asked,
            exc.code.name,
            "",
            [],
            rounds,
        )

    async def _log(
        self,
        request: pb.ScoreRequest,
        institution: str,
        request_id: str,
        record: ModelRecord | None,
        answered: list[str],
        failed: list[str],
        outcome: str,
        digest: str,
        imputed: list[str],
        rounds: int,
    ) -> int:
        """Append the request's one log entry; ``rounds`` > 1 tells providers that the
        ids of :func:`veil.request_ids.round_ids` in their ledgers are this request."""
        fields = list(record.spec.fields) if record is not None else []

        use = self.grants.use_along(
            request.grant_id,
            request_id=request_id,
            institution=institution,
            fields=fields,
            use=USE,
            outcome=outcome,
            providers=answered,
        )

        detail: dict[str, str | int] = {"loan_ref": request.loan_ref} if request.loan_ref else {}
        if record is not None:
            detail.update(model=record.model_id, version=record.version)
        elif request.model_id:
            detail["model"] = request.model_id  # dropped below unless identifier-shaped
        if imputed:
            detail["imputed"] = ",".join(imputed)
        if rounds > 1:
            detail["rounds"] = rounds
        event = AuditEvent(
            type=EventType.SCORE,
            actor=f"institution/{institution}",
            request_id=request_id,
            enterprise=request.uscc if _valid_uscc(request.uscc) else "",
            grant=request.grant_id if _ident(request.grant_id) else "",
            purpose=request.purpose if _ident(request.purpose) else "",
            providers=answered,
            providers_failed=[f for f in failed if f not in answered],
            result_sha256=digest,
            outcome=outcome,
            detail={k: v for k, v in detail.items() if _detail_ok(v)},
        )
        return await self.audit.record(event, along=use)


_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")
_DETAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/,-]{0,1023}")


def _valid_uscc(text: str) -> bool:
    return is_valid_uscc(text)


def _ident(text: str) -> bool:
    """Identifier-shaped (what a log entry accepts); anything else is left out of it."""
    return _IDENT.fullmatch(text) is not None


def _detail_ok(value: str | int) -> bool:
    return isinstance(value, int) or _DETAIL.fullmatch(value) is not None


# --- the services and their wiring into the platform daemon ------------------------------


class ScoringServicer(scoring_pb2_grpc.ScoringServiceServicer):
    """ScoringService at the platform (the gateway forwards the institution)."""

    def __init__(self, online: OnlineScoring, deliveries: Deliveries) -> None:
        self.online = online
        self.deliveries = deliveries

    async def Score(self, request: pb.ScoreRequest, context: Any) -> pb.ScoreResponse:
        return await self.online.score(request, context)

    async def ScoreMany(self, request: pb.ScoreManyRequest, context: Any) -> pb.ScoreManyResponse:
        outcomes = await self.online.score_many(list(request.requests), context)
        return pb.ScoreManyResponse(results=item_results(outcomes, pb.ScoreResult))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        await self.online.callers.require(context, {"institution"})
        records = await asyncio.to_thread(self.online.models.list, request.model_id or None)
        return pb.ListModelsResponse(
            models=[model_info(r, with_document=False) for r in records if r.state == "approved"]
        )

    async def Subscribe(self, request: pb.SubscribeRequest, context: Any) -> pb.Subscription:
        return await self.deliveries.subscribe(request, context)

    async def ListDeliveries(
        self, request: pb.ListDeliveriesRequest, context: Any
    ) -> pb.ListDeliveriesResponse:
        return await self.deliveries.list(context)

    async def GetDelivery(
        self, request: pb.GetDeliveryRequest, context: Any
    ) -> pb.GetDeliveryResponse:
        return await self.deliveries.get(request, context)


@dataclass
class ScoringParts:
    online: OnlineScoring
    runner: BatchRunner
    bindings: list[ServiceBinding]

    def start(self) -> None:
        """Resume batch jobs a crash left running (call once the server is up)."""
        self.runner.resume_running()

    async def close(self) -> None:
        await self.runner.close()
        self.online.close()


def build_scoring(
    config: NodeConfig,
    providers: ProviderRegistry,
    engine: Engine,
    audit: AuditLog,
    authz: Any,
    masks: MaskDirectory | None = None,
) -> ScoringParts:
    """The model registry, online scoring and batch evaluation on the platform's store.

    ``authz`` is the daemon's :class:`platform_node.service.AuthorizationParts`.
    """
    if masks is None:
        ca = config.tls.ca.read_bytes() if config.tls.ca is not None else None
        masks = MaskDirectory(providers, ca, config.call_timeout_s)
    models = ModelRegistry(engine)
    online = OnlineScoring(
        providers=providers,
        models=models,
        keys=load_scoring_key(config),
        masks=masks,
        grants=authz.grants,
        institutions=authz.institutions,
        callers=authz.callers,
        signing=authz.keys,
        audit=audit,
    )
    runner = BatchRunner(
        store=BatchStore(engine),
        providers=providers,
        models=models,
        masks=masks,
        audit=audit,
        engine=engine,
        config=config,
    )
    scoring = ScoringServicer(online, Deliveries(runner, authz.callers))
    admin = ModelAdminServicer(models, audit, online.deploy)
    batch = BatchAdminServicer(runner)
    services = pb.DESCRIPTOR.services_by_name
    bindings = [
        ServiceBinding(
            name=services["ScoringService"].full_name,
            register=lambda server: scoring_pb2_grpc.add_ScoringServiceServicer_to_server(
                scoring, server
            ),
        ),
        ServiceBinding(
            name=services["ModelAdmin"].full_name,
            register=lambda server: scoring_pb2_grpc.add_ModelAdminServicer_to_server(
                admin, server
            ),
        ),
        ServiceBinding(
            name=services["BatchAdmin"].full_name,
            register=lambda server: scoring_pb2_grpc.add_BatchAdminServicer_to_server(
                batch, server
            ),
        ),
    ]
    return ScoringParts(online, runner, bindings)
