"""Client assertions: how institutions and enterprises authenticate to the gateway.

A client assertion (RFC 7523 style, ``typ: veil-client+jwt``) is a short-lived JWS the
caller signs for one gateway (``aud``), with a unique ``jti``.  It proves possession of a
registered key without ever sending a secret; its short lifetime (≤ 300 s) bounds how long
a stolen one is useful, and the caller's ``jti`` store refuses replays inside that window
(this module is stateless on purpose: it has no store to keep consistent).

Which kind of caller it is, the *verifier* decides from ``iss``, never from the token's
choice of header: a valid USCC is an enterprise (verified through its EIA certificate in
header ``eia``), anything else an institution (verified with the key the registry holds
for ``(iss, kid)``).  Institution ids therefore must never be valid USCCs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from veil.errors import InvalidArgument, InvalidToken, UnknownKey, VeilError, WrongAudience
from veil.tokens import _jws, _validate
from veil.tokens.constants import (
    DEFAULT_ASSERTION_LIFETIME_S,
    MAX_ASSERTION_LIFETIME_S,
    MIN_JTI_CHARS,
    TYP_CLIENT_ASSERTION,
)
from veil.tokens.eia import EnterpriseCertificate, enterprise_headers, verify_enterprise_signed
from veil.tokens.keys import KeySet, SigningKey, VerifyingKey, as_verifying_key
from veil.uscc import is_valid_uscc

__all__ = [
    "ClientAssertion",
    "make_client_assertion",
    "peek_client_assertion",
    "verify_client_assertion",
]

InstitutionKeyLookup = Callable[[str, str], Any]
"""``(institution id, kid) -> public key`` (a :class:`VerifyingKey`, a public JWK or a
``cryptography`` public key); raises (e.g. ``UnknownKey``, ``PermissionDenied`` for a
suspended institution) when there is none.  A ``LookupError`` becomes ``UnknownKey``."""

_TYP = TYP_CLIENT_ASSERTION
_KIND = "client assertion"


@dataclass(frozen=True)
class ClientAssertion:
    """A verified client assertion: who called (``kind``, ``subject``) with which key.

    The caller must still record ``jti`` until ``exp`` + skew and refuse a second use.
    """

    kind: Literal["institution", "enterprise"]
    subject: str
    jti: str
    exp: int
    kid: str
    issued_at: int
    certificate: EnterpriseCertificate | None = None


def make_client_assertion(
    key: SigningKey,
    *,
    issuer: str,
    audience: str,
    lifetime_s: int = DEFAULT_ASSERTION_LIFETIME_S,
    now: float | None = None,
    jti: str | None = None,
    eia_certificate: str | None = None,
) -> str:
    """Sign a client assertion for ``audience`` (e.g. ``veil://gateway/main``).

    Enterprises (``issuer`` a USCC) must pass their EIA certificate, which goes into the
    ``eia`` header; institutions must not.  ``jti`` defaults to 16 random bytes, base64url.
    """
    _validate.text(issuer, "issuer")
    _validate.text(audience, "audience")
    if isinstance(lifetime_s, bool) or not isinstance(lifetime_s, int):
        raise InvalidArgument("lifetime_s must be an integer")
    if not 0 < lifetime_s <= MAX_ASSERTION_LIFETIME_S:
        raise InvalidArgument(
            f"client assertion lifetime must be 1..{MAX_ASSERTION_LIFETIME_S} s, got {lifetime_s}"
        )
    jti = secrets.token_urlsafe(16) if jti is None else _validate.token_id(jti, "jti")
    headers: dict[str, str] = {}
    if is_valid_uscc(issuer):
        if eia_certificate is None:
            raise InvalidArgument("issuer is a USCC: an enterprise assertion needs its EIA cert")
        headers, _ = enterprise_headers(key, eia_certificate, issuer)
    elif eia_certificate is not None:
        raise InvalidArgument("eia_certificate given but issuer is not a valid USCC")
    iat = _jws.issue_time(now)
    claims = {
        "iss": issuer,
        "sub": issuer,
        "aud": audience,
        "iat": iat,
        "exp": iat + lifetime_s,
        "jti": jti,
    }
    return _jws.sign(key, _TYP, claims, headers)


def _institution_key(lookup: InstitutionKeyLookup, iss: str, kid: str) -> VerifyingKey:
    try:
        found = lookup(iss, kid)
    except VeilError:
        raise
    except LookupError:
        raise UnknownKey(f"no key {kid!r} registered for institution {iss!r}") from None
    if found is None:
        raise UnknownKey(f"no key {kid!r} registered for institution {iss!r}")
    return as_verifying_key(found, kid)


def peek_client_assertion(token: str) -> tuple[str, str]:
    """``(iss, kid)`` of a client assertion, *unverified*, after the header checks.

    Only for fetching the key before :func:`verify_client_assertion` when the look-up is
    asynchronous (fetch it, then pass ``institution_key=lambda iss, kid: fetched``).
    Nothing returned here is authenticated.
    """
    header = _jws.read_header(token, _TYP, extra=frozenset({"eia"}))
    return _issuer(token), header["kid"]


def _issuer(token: str) -> str:
    iss = _jws.unverified_claims(token, _TYP).get("iss")
    if not isinstance(iss, str) or not iss or len(iss) > 256 or not iss.isprintable():
        raise InvalidToken("client assertion iss is missing or malformed")
    return iss


def verify_client_assertion(
    token: str,
    *,
    audience: str,
    institution_key: InstitutionKeyLookup | None,
    eia_keys: KeySet | None,
    now: float | None = None,
) -> ClientAssertion:
    """Verify a client assertion presented to the gateway ``audience``.

    Checks, in order: shape, ``alg``, ``typ``; the key (EIA certificate for an enterprise,
    the registry for an institution); the signature; ``iss`` = ``sub``; ``aud``; ``iat``
    not beyond skew in the future; not expired; ``exp - iat`` ≤ 300 s; ``jti`` ≥ 16 chars.
    Pass ``None`` for ``institution_key`` or ``eia_keys`` to refuse that kind of caller.
    """
    t = _jws.clock(now)
    header = _jws.read_header(token, _TYP, extra=frozenset({"eia"}))
    iss = _issuer(token)
    certificate: EnterpriseCertificate | None = None
    if is_valid_uscc(iss):
        if eia_keys is None:
            raise UnknownKey("enterprise client assertions are not accepted here")
        certificate, claims = verify_enterprise_signed(token, header, eia_keys, _TYP, now=t)
        kind: Literal["institution", "enterprise"] = "enterprise"
    else:
        if "eia" in header:
            raise InvalidToken("client assertion carries an EIA certificate but iss is not a USCC")
        if institution_key is None:
            raise UnknownKey("institution client assertions are not accepted here")
        key = _institution_key(institution_key, iss, header["kid"])
        claims = _jws.verify_signature(token, header, key, _TYP)
        if claims.get("iss") != iss or claims.get("sub") != iss:
            raise InvalidToken("client assertion iss and sub differ")
        kind = "institution"
    aud = claims.get("aud")
    if aud != audience:
        raise WrongAudience(f"client assertion aud {_jws.show(aud)} is not {audience!r}")
    iat, exp = _jws.check_times(claims, _TYP, t, max_lifetime=MAX_ASSERTION_LIFETIME_S)
    jti = claims.get("jti")
    if not isinstance(jti, str) or not MIN_JTI_CHARS <= len(jti) <= 256:
        raise InvalidToken(f"client assertion jti must be a string of {MIN_JTI_CHARS}-256 chars")
    return ClientAssertion(
        kind=kind,
        subject=iss,
        jti=jti,
        exp=exp,
        kid=header["kid"],
        issued_at=iat,
        certificate=certificate,
    )
