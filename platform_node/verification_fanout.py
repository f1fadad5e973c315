"""The platform's calls to providers for one verification: single, masked, or baseline.

Every call carries a request token made out to that provider alone (use ``verify``,
exactly the fields it is asked about) and the enterprise-signed grant; every answer
carries the provider's signature, which is checked here against the provider's
published answer key before the answer is used.  If any provider does not answer, the
whole check fails with UNAVAILABLE naming it: a combination missing a participant is
never decoded (its masks would not cancel) and never reported as a partial yes.

Calls to checks in flight together travel to each provider in one ``ContributeMany``
or ``VerifyClaimMany`` (:class:`~veil.call_batcher.CallBatcher`, one per provider and
method; a lone call is a batch of one, sent at once); each item keeps its own request
token, answer or refusal, so a check sees exactly what a lone ``Contribute`` or
``VerifyClaim`` would have given it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import grpc

from platform_node.mask_directory import MaskDirectory
from platform_node.providers import ProviderRegistry, provider_error, unpack_batch
from platform_node.signing import PlatformKeys
from platform_node.verification_plan import Plan
from veil.attestation import verify_answer, verify_contributions
from veil.call_batcher import CallBatcher
from veil.catalog import Catalog
from veil.claims import (
    All,
    AnyOf,
    Claim,
    Truth,
    canonical_json,
    claim_fields,
    t_all,
    t_any,
    t_at_least,
)
from veil.composite import (
    CIPHERTEXTS,
    Combined,
    MalformedContribution,
    Protocol,
    ciphertexts_digest,
    decide,
)
from veil.crypto import PaillierKeys, public_key_bytes
from veil.errors import FailedPrecondition, PermissionDenied, Unavailable, VeilError
from veil.tokens import KeySet, RequestClaims, unverified_kid
from veil.v1 import verification_pb2 as vpb
from veil.v1 import verification_pb2_grpc

REQUEST_TOKEN_LIFETIME_S = 60
ANSWER_KEYS_REFRESH_S = 5.0
CONTRIBUTIONS_KEPT = 256  # checked attestations kept for the other items of their call
USE = "verify"
TRUTHS = {
    vpb.VERIFICATION_RESULT_TRUE: Truth.TRUE,
    vpb.VERIFICATION_RESULT_FALSE: Truth.FALSE,
    vpb.VERIFICATION_RESULT_NO_RECORD: Truth.NO_RECORD,
}
WIRE_PROTOCOLS = {
    Protocol.ALL: vpb.VERIFICATION_PROTOCOL_ALL,
    Protocol.ANY: vpb.VERIFICATION_PROTOCOL_ANY,
    Protocol.COUNT: vpb.VERIFICATION_PROTOCOL_COUNT,
    Protocol.SUM: vpb.VERIFICATION_PROTOCOL_SUM,
}
# a batched call's request message, by the method it batches
MANY_REQUESTS: dict[str, Any] = {
    "VerifyClaim": vpb.ProviderVerifyManyRequest,
    "Contribute": vpb.ContributeManyRequest,
}
T = TypeVar("T")


def check_ciphertext_count(unit: str, protocol: Protocol, count: int) -> None:
    """A provider's contribution has as many ciphertexts as ``protocol`` takes, or
    :class:`MalformedContribution` (UNAVAILABLE) naming the provider and both counts."""
    expected = CIPHERTEXTS[protocol]
    if count != expected:
        raise MalformedContribution(
            f"provider {unit!r} sent a malformed contribution: {count} ciphertexts where "
            f"the {protocol.value} protocol takes {expected} (a provider on another Veil "
            "release?); the check is not answered",
            details={"provider": unit, "reason": "ciphertext_count"},
        )


@dataclass(frozen=True)
class Asked:
    """Who is asked what: the enterprise, the grant and the institution's purpose."""

    request_id: str
    uscc: str
    institution: str
    grant_id: str
    grant_jws: str
    purpose: str
    loan_ref: str
    claims_sha256: str


@dataclass(frozen=True)
class Outcome:
    result: Truth
    providers: tuple[str, ...]
    attestations: tuple[str, ...] = ()
    revealed: tuple[tuple[str, str], ...] = ()  # what the platform learned beyond the answer


class ProviderCallFailed(VeilError):
    """Some providers did not answer; ``failed`` names them (the error is ``cause``)."""

    def __init__(self, cause: VeilError, failed: Sequence[str]) -> None:
        super().__init__(cause.message, details=cause.details, extra=cause.extra)
        self.code = cause.code
        self.cause = cause
        self.failed = tuple(failed)


class AnswerKeys:
    """Each provider's answer-signing keys (``GetAnswerKeys``), cached by ``kid``."""

    def __init__(self, registry: ProviderRegistry) -> None:
        self.registry = registry
        self._keys: dict[str, KeySet] = {}
        self._fetched: dict[str, float] = {}
        self._contributions: dict[str, dict[str, dict[str, str]]] = {}  # oldest first

    async def for_unit(self, unit: str, kid: str | None = None) -> KeySet:
        keys = self._keys.get(unit)
        stale = keys is None or (kid is not None and kid not in keys)
        if stale and time.monotonic() - self._fetched.get(unit, -1e9) >= ANSWER_KEYS_REFRESH_S:
            link = self.registry.link(unit)
            stub = verification_pb2_grpc.ProviderVerificationStub(link.channel)
            try:
                answer = await stub.GetAnswerKeys(
                    vpb.GetAnswerKeysRequest(), timeout=self.registry.timeout_s
                )
            except grpc.aio.AioRpcError as err:
                raise provider_error(link.name, err, self.registry.timeout_s) from None
            self._fetched[unit] = time.monotonic()
            keys = KeySet.from_jwks(json.loads(answer.jwks_json), label=f"{unit} answer keys")
            self._keys[unit] = keys
        if keys is None:
            raise Unavailable(f"provider {unit!r} has published no answer keys")
        return keys

    async def all_jwks(self, units: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for unit in units:
            try:
                out[unit] = (await self.for_unit(unit)).to_jwks()
            except VeilError:
                continue  # not serving verification (or down): not published now
        return out

    async def check_contribution(
        self, unit: str, token: str, asked: Asked, request_id: str, ciphertexts: Sequence[bytes]
    ) -> None:
        """A masked contribution is covered by its provider's signature: for this request,
        this enterprise, these ciphertexts.  The items of one provider call share one
        attestation, checked once (kept for the other items of the call)."""
        answers = self._contributions.get(token)
        if answers is None:
            keys = await self.for_unit(unit, unverified_kid(token))
            answers = verify_contributions(token, keys, unit=unit)
            self._contributions[token] = answers
            if len(self._contributions) > CONTRIBUTIONS_KEPT:
                del self._contributions[next(iter(self._contributions))]
        answer = answers.get(request_id)
        if answer is None:
            raise PermissionDenied(f"provider {unit!r} signed no answer to this request")
        if answer["sub"] != asked.uscc:
            raise PermissionDenied(f"provider {unit!r} signed an answer about another enterprise")
        if answer["ciphertexts_sha256"] != ciphertexts_digest(list(ciphertexts)):
            raise PermissionDenied(f"provider {unit!r}'s signature does not cover its contribution")

    async def check(self, unit: str, token: str, asked: Asked, request_id: str) -> dict[str, Any]:
        """The provider's signed answer, checked: its key, this request, this enterprise."""
        kid = unverified_kid(token)
        claims = verify_answer(token, await self.for_unit(unit, kid), unit=unit)
        if claims.get("jti") != request_id:
            raise PermissionDenied(f"provider {unit!r} signed an answer to another request")
        if claims.get("sub") != asked.uscc:
            raise PermissionDenied(f"provider {unit!r} signed an answer about another enterprise")
        return claims


async def gather_all(calls: Mapping[str, Awaitable[T]]) -> dict[str, T]:
    """Run every call; if any fails, raise one error naming every provider that failed."""
    units = list(calls)
    results = await asyncio.gather(*calls.values(), return_exceptions=True)
    failed = [(u, r) for u, r in zip(units, results, strict=True) if isinstance(r, BaseException)]
    if failed:
        errors = [r for _, r in failed]
        for err in errors:
            if not isinstance(err, VeilError):
                raise err
        down = [(u, e) for u, e in failed if isinstance(e, Unavailable)]
        if down:
            names = ", ".join(repr(u) for u, _ in down)
            first = down[0][1]
            assert isinstance(first, VeilError)
            cause: VeilError = Unavailable(
                f"{first.message}; the check is not answered without provider(s) {names}"
                if len(down) == 1
                else f"providers {names} did not answer; the check is not answered"
            )
        else:
            cause = failed[0][1]  # type: ignore[assignment]
        raise ProviderCallFailed(cause, [u for u, _ in failed])
    return {u: r for u, r in zip(units, results, strict=True)}  # type: ignore[misc]


class Fanout:
    def __init__(
        self,
        *,
        catalog: Catalog,
        registry: ProviderRegistry,
        keys: PlatformKeys,
        paillier: PaillierKeys,
        masks: MaskDirectory,
        answer_keys: AnswerKeys,
    ) -> None:
        self.catalog = catalog
        self.registry = registry
        self.keys = keys
        self.paillier = paillier
        self.masks = masks
        self.answer_keys = answer_keys
        self._stubs: dict[str, verification_pb2_grpc.ProviderVerificationAsyncStub] = {}
        self._batchers: dict[tuple[str, str], CallBatcher[Any, Any]] = {}
        self._n_bytes = public_key_bytes(paillier.public)

    def stub(self, unit: str) -> verification_pb2_grpc.ProviderVerificationAsyncStub:
        stub = self._stubs.get(unit)
        if stub is None:
            stub = verification_pb2_grpc.ProviderVerificationStub(self.registry.link(unit).channel)
            self._stubs[unit] = stub
        return stub

    def token(self, unit: str, asked: Asked, fields: Sequence[str], request_id: str) -> str:
        now = int(time.time())
        return self.keys.request_token(
            RequestClaims(
                provider=unit,
                uscc=asked.uscc,
                institution=asked.institution,
                fields=tuple(sorted(fields)),
                use=USE,
                purpose=asked.purpose,
                loan_ref=asked.loan_ref,
                grant_id=asked.grant_id,
                request_id=request_id,
                issued_at=now,
                expires=now + REQUEST_TOKEN_LIFETIME_S,
            )
        )

    async def _batched(self, method: str, unit: str, request: Any) -> Any:
        """One ``method`` call to ``unit`` (``VerifyClaim`` or ``Contribute``), travelling
        with the other checks' calls in flight at the same moment in one ``<method>Many``
        (:class:`CallBatcher`): the item's answer, or its own refusal, or the batch's
        failure — each named as :func:`provider_error` names a failed call."""
        batcher = self._batchers.get((method, unit))
        if batcher is None:
            batcher = CallBatcher(self._send_many(method, unit), name=f"{method}Many")
            self._batchers[(method, unit)] = batcher
        return await batcher.call(request)

    def _send_many(self, method: str, unit: str) -> Callable[[list[Any]], Awaitable[list[Any]]]:
        rpc = getattr(self.stub(unit), f"{method}Many")
        wrap = MANY_REQUESTS[method]
        name = self.registry.link(unit).name
        timeout = self.registry.timeout_s

        async def send(requests: list[Any]) -> list[Any]:
            try:
                answer = await rpc(wrap(requests=requests), timeout=timeout)
            except grpc.aio.AioRpcError as err:
                raise provider_error(name, err, timeout) from None
            return unpack_batch(name, requests, answer.results)

        return send

    # --- one provider, one claim ---

    async def ask(
        self, unit: str, claim_json: str, fields: Sequence[str], asked: Asked, rid: str
    ) -> tuple[Truth, str]:
        request = vpb.ProviderVerifyRequest(
            request_id=rid,
            uscc=asked.uscc,
            claim_json=claim_json,
            request_token=self.token(unit, asked, fields, rid),
            grant_jws=asked.grant_jws,
        )
        answer: vpb.ProviderVerifyResponse = await self._batched("VerifyClaim", unit, request)
        truth = TRUTHS.get(answer.result)
        if truth is None or answer.request_id != rid:
            raise FailedPrecondition(f"provider {unit!r} gave a malformed answer")
        signed = await self.answer_keys.check(unit, answer.attestation, asked, rid)
        if signed.get("result") != truth.value:
            raise PermissionDenied(f"provider {unit!r}'s signature does not match its answer")
        return truth, answer.attestation

    async def single(self, plan: Plan, asked: Asked) -> Outcome:
        unit = plan.providers[0]
        claim = plan.conditions[unit][0]
        calls = {
            unit: self.ask(unit, canonical_json(claim), plan.fields[unit], asked, asked.request_id)
        }
        truth, attestation = (await gather_all(calls))[unit]
        return Outcome(truth, plan.providers, (attestation,))

    # --- several providers, masked ---

    async def masked(self, plan: Plan, asked: Asked) -> Outcome:
        roster = await self.masks.roster(plan.providers)
        calls = {}
        for unit in plan.providers:
            request = vpb.ContributeRequest(
                request_id=asked.request_id,
                uscc=asked.uscc,
                request_token=self.token(unit, asked, plan.fields[unit], asked.request_id),
                grant_jws=asked.grant_jws,
                protocol=WIRE_PROTOCOLS[plan.protocol],
                conditions_json=[canonical_json(c) for c in plan.conditions.get(unit, [])],
                sum_fields=plan.sum_fields.get(unit, []),
                total_conditions=plan.total,
                paillier_n=self._n_bytes,
                participants=roster,
                claims_sha256=asked.claims_sha256,
            )
            calls[unit] = self._batched("Contribute", unit, request)
        try:
            answers = await gather_all(calls)
        except ProviderCallFailed as exc:
            if "mask key" in exc.message:  # a rotated key: fetch it afresh next time
                for unit in exc.failed:
                    self.masks.forget(unit)
            raise
        for unit, answer in answers.items():
            try:
                check_ciphertext_count(unit, plan.protocol, len(answer.ciphertexts))
            except MalformedContribution as exc:
                raise ProviderCallFailed(exc, [unit]) from None
            await self.answer_keys.check_contribution(
                unit, answer.attestation, asked, asked.request_id, answer.ciphertexts
            )
        contributions = [list(answers[u].ciphertexts) for u in plan.providers]
        combined = Combined(self.paillier, plan.protocol, contributions, plan.providers)
        threshold = plan.sum_value if isinstance(plan.sum_value, Decimal) else None

        def conclude() -> tuple[Truth, dict[str, str]]:
            return decide(
                plan.protocol,
                combined.read(),
                k=plan.k,
                total=plan.total,
                op=plan.sum_op,
                threshold=threshold,
            )

        try:
            truth, revealed = await asyncio.to_thread(conclude)
        except MalformedContribution as exc:  # named when one provider's is; else all
            who = exc.details.get("provider")
            raise ProviderCallFailed(exc, [who] if who else list(plan.providers)) from None
        return Outcome(truth, plan.providers, revealed=tuple(sorted(revealed.items())))

    # --- the benchmark baseline: the same fan-out, answers in the clear ---

    async def plaintext(self, plan: Plan, asked: Asked) -> Outcome:
        """One request per provider, batched as in the masked protocol, but each answer in
        the clear: for all/any the provider combines its own conditions (the combination
        is associative in three-valued logic); at_least needs each condition's answer."""
        if plan.protocol is Protocol.SUM:
            raise FailedPrecondition("the plaintext baseline covers all, any and at_least checks")
        calls = {}
        i = 0
        for unit in plan.providers:
            conditions = plan.conditions[unit]
            if plan.protocol is Protocol.COUNT:
                parts: list[Claim] = list(conditions)
            elif len(conditions) == 1:
                parts = [conditions[0]]
            else:
                parts = [
                    All(tuple(conditions))
                    if plan.protocol is Protocol.ALL
                    else AnyOf(tuple(conditions))
                ]
            for claim in parts:
                # a request id per call (providers refuse a replayed one), of the same length
                rid = hashlib.sha256(f"{asked.request_id}|{i}".encode()).hexdigest()[:32]
                fields = claim_fields(claim, self.catalog)
                calls[f"{unit}#{i}"] = self.ask(unit, canonical_json(claim), fields, asked, rid)
                i += 1
        answers = await gather_all(calls)
        truths = [t for t, _ in answers.values()]
        if plan.protocol is Protocol.ALL:
            result = t_all(truths)
        elif plan.protocol is Protocol.ANY:
            result = t_any(truths)
        else:
            result = t_at_least(plan.k, truths.count(Truth.TRUE), truths.count(Truth.NO_RECORD))
        return Outcome(result, plan.providers, tuple(a for _, a in answers.values()))
