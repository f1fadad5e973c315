"""A provider's signed answers: evidence of what a data-providing unit said.

Each provider node holds an Ed25519 *answer key* (``[verification] answer_key``, a 0600
PKCS#8 file, created on first start) and publishes its public half as a JWKS
(``ProviderVerification.GetAnswerKeys``; the platform relays every provider's keys in
``VerificationService.GetVerificationPolicy``).  A single-provider verification result
is a compact JWS of its own (the bank receives it)::

    header  {"alg": "EdDSA", "typ": "veil-provider-answer+jwt", "kid": ...}
    claims  {"iss": "<unit>", "sub": "<USCC>", "jti": "<request id>",
             "claims_sha256": "<hex>", "result": "true" | "false" | "no_record",
             "iat": <unix seconds>}

The masked contributions a provider answers in one call (``Contribute``, or the items of
one ``ContributeMany``) are covered by one JWS, given with each of them::

    header  {"alg": "EdDSA", "typ": "veil-provider-contributions+jwt", "kid": ...}
    claims  {"iss": "<unit>", "result": "masked", "iat": <unix seconds>,
             "answers": [{"jti": "<request id>", "sub": "<USCC>",
                          "claims_sha256": "<hex>", "ciphertexts_sha256": "<hex>"}, ...]}

so the platform can prove later which unit answered what, and a relay cannot alter an
answer unnoticed.  Each answer binds its request id, so it cannot be passed off as the
answer to another request.  One signature per call rather than per item: checking a
signature cost the platform as much as reading a composite check's total
(``docs/performance-history.md``); what one token reveals beyond its own item is the other
requests of the same call, which their recipient, the platform, sent.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from veil.errors import BadSignature, InvalidToken, WrongTokenType
from veil.tokens import ALGORITHMS, KeySet, SigningKey, _jws

__all__ = [
    "RESULTS",
    "TYP_PROVIDER_ANSWER",
    "TYP_PROVIDER_CONTRIBUTIONS",
    "Contribution",
    "sign_answer",
    "sign_contributions",
    "verify_answer",
    "verify_contributions",
]

TYP_PROVIDER_ANSWER = "veil-provider-answer+jwt"
TYP_PROVIDER_CONTRIBUTIONS = "veil-provider-contributions+jwt"
_CONTRIBUTION_CLAIMS = ("jti", "sub", "claims_sha256", "ciphertexts_sha256")
_PYJWS = jwt.PyJWS(algorithms=list(ALGORITHMS))  # each decode still names the key's only
RESULTS = ("true", "false", "no_record")


@dataclass(frozen=True)
class Contribution:
    """What a provider signs for one masked contribution."""

    request_id: str
    uscc: str
    claims_sha256: str
    ciphertexts_sha256: str


def sign_answer(
    key: SigningKey,
    *,
    unit: str,
    uscc: str,
    request_id: str,
    claims_sha256: str,
    result: str,
    now: float | None = None,
) -> str:
    if result not in RESULTS:
        raise ValueError(f"result must be one of {RESULTS}")
    claims: dict[str, Any] = {
        "iss": unit,
        "sub": uscc,
        "jti": request_id,
        "claims_sha256": claims_sha256,
        "result": result,
        "iat": _jws.issue_time(now),
    }
    return _jws.sign(key, TYP_PROVIDER_ANSWER, claims)


def sign_contributions(
    key: SigningKey, *, unit: str, answers: Sequence[Contribution], now: float | None = None
) -> str:
    """One JWS covering every masked contribution a call answers (at least one)."""
    if not answers:
        raise ValueError("a contributions attestation covers at least one answer")
    claims = {
        "iss": unit,
        "result": "masked",
        "answers": [
            {
                "jti": a.request_id,
                "sub": a.uscc,
                "claims_sha256": a.claims_sha256,
                "ciphertexts_sha256": a.ciphertexts_sha256,
            }
            for a in answers
        ],
        "iat": _jws.issue_time(now),
    }
    return _jws.sign(key, TYP_PROVIDER_CONTRIBUTIONS, claims)


def verify_answer(token: str, keys: KeySet, *, unit: str) -> dict[str, Any]:
    """Check a provider answer's signature against ``keys`` (that unit's JWKS); return
    its claims.  Refuses another token kind, another issuer, or a bad signature."""
    claims = _verified(token, keys, unit, TYP_PROVIDER_ANSWER, "provider answer")
    if claims.get("result") not in RESULTS:
        raise InvalidToken("provider answer has no valid result")
    return claims


def verify_contributions(token: str, keys: KeySet, *, unit: str) -> dict[str, dict[str, str]]:
    """Check a contributions attestation against ``keys``; its answers by request id.
    Refuses another token kind or issuer, a bad signature, a malformed or repeated
    answer."""
    claims = _verified(token, keys, unit, TYP_PROVIDER_CONTRIBUTIONS, "provider contributions")
    answers = claims.get("answers")
    if claims.get("result") != "masked" or not isinstance(answers, list) or not answers:
        raise InvalidToken("provider contributions attestation has no answers")
    out: dict[str, dict[str, str]] = {}
    for answer in answers:
        if not isinstance(answer, dict) or set(answer) != set(_CONTRIBUTION_CLAIMS):
            raise InvalidToken("provider contributions attestation has a malformed answer")
        if not all(isinstance(answer[k], str) for k in _CONTRIBUTION_CLAIMS):
            raise InvalidToken("provider contributions attestation has a malformed answer")
        if answer["jti"] in out:
            raise InvalidToken(f"provider contributions answer {answer['jti']!r} twice")
        out[answer["jti"]] = answer
    return out


def _verified(token: str, keys: KeySet, unit: str, typ: str, what: str) -> dict[str, Any]:
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidToken(f"{what} is not a compact JWS")
    try:
        header = _jws.strict_json(_jws.b64decode(token.split(".")[0]), f"{what} header")
    except (binascii.Error, ValueError):
        raise InvalidToken(f"{what} header is not base64url") from None
    if header.get("typ") != typ:
        raise WrongTokenType(f"expected a {what}, got typ {_jws.show(header.get('typ'))}")
    if header.get("alg") not in ALGORITHMS:
        raise InvalidToken(f"{what} alg is not allowed")
    key = keys.get(str(header.get("kid")))
    if header["alg"] != key.alg:
        raise InvalidToken(f"{what} alg does not match its key")
    try:
        decoded = _PYJWS.decode_complete(token, key.key, algorithms=[key.alg])
    except jwt.InvalidSignatureError:
        raise BadSignature(f"{what} signature does not verify with {key.kid!r}") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"{what} is malformed: {str(exc)[:80]}") from None
    claims = _jws.strict_json(decoded["payload"], f"{what} payload")
    if claims.get("iss") != unit:
        raise InvalidToken(f"{what} is from {_jws.show(claims.get('iss'))}, not {unit!r}")
    return claims


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload without checking the signature (for display only)."""
    body = token.split(".")[1]
    return _jws.strict_json(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), "answer")
