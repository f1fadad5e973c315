"""A provider's signed answer: evidence of what a data-providing unit said.

Each provider node holds an Ed25519 *answer key* (``[verification] answer_key``, a 0600
PKCS#8 file, created on first start) and publishes its public half as a JWKS
(``ProviderVerification.GetAnswerKeys``; the platform relays every provider's keys in
``VerificationService.GetVerificationPolicy``).  Every answer it gives — a single-provider
verification result, or the ciphertexts of a masked contribution — is a compact JWS::

    header  {"alg": "EdDSA", "typ": "veil-provider-answer+jwt", "kid": ...}
    claims  {"iss": "<unit>", "sub": "<USCC>", "jti": "<request id>",
             "claims_sha256": "<hex>", "result": "true" | "false" | "no_record" | "masked",
             "ciphertexts_sha256": "<hex>" (masked only), "iat": <unix seconds>}

so the platform (and the bank, which receives single-provider attestations) can prove
later which unit answered what, and a relay cannot alter an answer unnoticed.  It binds
the request id, so it cannot be replayed as the answer to another request.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jwt

from veil.errors import BadSignature, InvalidToken, WrongTokenType
from veil.tokens import ALGORITHMS, KeySet, SigningKey, _jws

__all__ = ["RESULTS", "TYP_PROVIDER_ANSWER", "sign_answer", "verify_answer"]

TYP_PROVIDER_ANSWER = "veil-provider-answer+jwt"
_PYJWS = jwt.PyJWS(algorithms=list(ALGORITHMS))  # each decode still names the key's only
RESULTS = ("true", "false", "no_record", "masked")


def sign_answer(
    key: SigningKey,
    *,
    unit: str,
    uscc: str,
    request_id: str,
    claims_sha256: str,
    result: str,
    ciphertexts_sha256: str = "",
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
    if ciphertexts_sha256:
        claims["ciphertexts_sha256"] = ciphertexts_sha256
    return _jws.sign(key, TYP_PROVIDER_ANSWER, claims)


def verify_answer(token: str, keys: KeySet, *, unit: str) -> dict[str, Any]:
    """Check a provider answer's signature against ``keys`` (that unit's JWKS); return
    its claims.  Refuses another token kind, another issuer, or a bad signature."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidToken("provider answer is not a compact JWS")
    try:
        header = _jws.strict_json(_jws.b64decode(token.split(".")[0]), "provider answer header")
    except (binascii.Error, ValueError):
        raise InvalidToken("provider answer header is not base64url") from None
    if header.get("typ") != TYP_PROVIDER_ANSWER:
        raise WrongTokenType(f"expected a provider answer, got typ {_jws.show(header.get('typ'))}")
    if header.get("alg") not in ALGORITHMS:
        raise InvalidToken("provider answer alg is not allowed")
    key = keys.get(str(header.get("kid")))
    if header["alg"] != key.alg:
        raise InvalidToken("provider answer alg does not match its key")
    try:
        decoded = _PYJWS.decode_complete(token, key.key, algorithms=[key.alg])
    except jwt.InvalidSignatureError:
        raise BadSignature(f"provider answer signature does not verify with {key.kid!r}") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"provider answer is malformed: {str(exc)[:80]}") from None
    claims = _jws.strict_json(decoded["payload"], "provider answer payload")
    if claims.get("iss") != unit:
        raise InvalidToken(f"provider answer is from {_jws.show(claims.get('iss'))}, not {unit!r}")
    if claims.get("result") not in RESULTS:
        raise InvalidToken("provider answer has no valid result")
    return claims


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload without checking the signature (for display only)."""
    body = token.split(".")[1]
    return _jws.strict_json(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)), "answer")
