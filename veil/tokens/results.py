"""Signed results: what a bank receives for a verification or a score.

A compact JWS (``typ: veil-result+jwt``) signed by the platform's key, verifiable by any
standard JOSE library against the JWKS the gateway publishes.  Its claims bind the
result to everything it is about — the enterprise, the institution, the grant, what was
asked (a hash of the claim, or the model and version), the answer, the time and the
transparency-log index where the use is recorded — so a result cannot be altered,
re-attributed or replayed as another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from veil.errors import InvalidArgument, InvalidToken
from veil.tokens import _jws
from veil.tokens.constants import PLATFORM_ISSUER, RESULT_KINDS, TYP_RESULT
from veil.tokens.keys import KeySet, SigningKey

REQUIRED = ("kind", "sub", "institution", "result", "log_index")
RESERVED = frozenset({"iss", "iat", "typ"})


def sign_result(key: SigningKey, claims: Mapping[str, Any], *, now: float | None = None) -> str:
    """Sign a result; ``claims`` must name ``kind``, ``sub`` (the USCC), ``institution``,
    ``result`` and ``log_index``; ``iss`` and ``iat`` are set here."""
    missing = [name for name in REQUIRED if name not in claims]
    if missing:
        raise InvalidArgument(f"a signed result needs {', '.join(missing)}")
    if claims["kind"] not in RESULT_KINDS:
        raise InvalidArgument(f"result kind must be one of {', '.join(RESULT_KINDS)}")
    if RESERVED & set(claims):
        raise InvalidArgument("iss, iat and typ are set by sign_result")
    body = {**claims, "iss": PLATFORM_ISSUER, "iat": _jws.issue_time(now)}
    return _jws.sign(key, TYP_RESULT, body)


def verify_result(token: str, keys: KeySet) -> dict[str, Any]:
    """Verify a signed result's signature against ``keys``; return its claims.

    Results do not expire (a bank keeps them as evidence); what they say is pinned by
    ``iat`` and ``log_index``, whose inclusion the bank can demand from the audit log.
    """
    header = _jws.read_header(token, TYP_RESULT)
    claims = _jws.verify_signature(token, header, keys.get(header["kid"]), TYP_RESULT)
    if claims.get("iss") != PLATFORM_ISSUER:
        raise InvalidToken("signed result was not issued by the platform")
    for name in REQUIRED:
        if name not in claims:
            raise InvalidToken(f"signed result lacks {name}")
    return claims
