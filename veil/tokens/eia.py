"""Enterprise key certificates, signed by the enterprise identity authority (EIA).

An enterprise proves who it is with a key that the EIA (modelled on SAMR's electronic
business licence, 电子营业执照) has bound to its USCC.  The EIA is deliberately *not* the
platform: providers and the platform each configure the EIA's public key out of band, so a
compromised platform cannot mint enterprises — and therefore cannot forge the
enterprise-signed grants that providers check before releasing anything.

Enterprise-signed tokens (client assertions, grants, revocations) carry the certificate in
their ``eia`` header, so any verifier holding the EIA keys can check them without looking
an account up: certificate signature and validity → ``kid`` equal to the certified key's
→ token signature with that key → ``iss`` = ``sub`` = the certified USCC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from veil.errors import (
    CertificateMismatch,
    ExpiredToken,
    InvalidArgument,
    InvalidJWK,
    InvalidToken,
    NotYetValid,
    UnknownKey,
)
from veil.tokens import _jws, _validate
from veil.tokens.constants import (
    CLOCK_SKEW_S,
    DEFAULT_CERTIFICATE_LIFETIME_S,
    DEFAULT_EIA_ISSUER,
    TYP_EIA_CERT,
)
from veil.tokens.keys import KeySet, PublicKey, SigningKey, VerifyingKey
from veil.uscc import is_valid_uscc

__all__ = [
    "EnterpriseCertificate",
    "issue_enterprise_certificate",
    "verify_enterprise_certificate",
]


@dataclass(frozen=True)
class EnterpriseCertificate:
    """A verified enterprise key certificate: this key speaks for this USCC until ``exp``."""

    uscc: str
    name: str
    jwk: Mapping[str, str]
    public_key: PublicKey
    exp: int
    issued_at: int
    issuer: str
    kid: str

    @property
    def verifying_key(self) -> VerifyingKey:
        return VerifyingKey.from_jwk(self.jwk)

    def check_signed_within(self, iat: int, what: str) -> None:
        """Refuse a token whose ``iat`` lies outside this certificate's validity.

        A token cannot have been signed with a certified key before the certificate was
        issued or after it expired (allowing ``CLOCK_SKEW_S`` either way).
        """
        if iat < self.issued_at - CLOCK_SKEW_S:
            raise NotYetValid(
                f"{what} iat {iat} precedes its enterprise key certificate ({self.issued_at})"
            )
        if iat >= self.exp + CLOCK_SKEW_S:
            raise ExpiredToken(
                f"{what} was signed at {iat}, after its enterprise key certificate for "
                f"{self.uscc} expired ({self.exp})"
            )


def issue_enterprise_certificate(
    eia_key: SigningKey,
    *,
    uscc: str,
    name: str,
    enterprise_jwk: Mapping[str, Any],
    issuer: str = DEFAULT_EIA_ISSUER,
    lifetime_s: int = DEFAULT_CERTIFICATE_LIFETIME_S,
    now: float | None = None,
) -> str:
    """The EIA's signed statement that ``enterprise_jwk`` is the key of enterprise ``uscc``.

    ``enterprise_jwk`` is a public JWK (a ``kid`` is added, the RFC 7638 thumbprint, when
    it has none); private members are refused.
    """
    _validate.uscc(uscc)
    _validate.text(name, "enterprise name")
    _validate.text(issuer, "issuer")
    if isinstance(lifetime_s, bool) or not isinstance(lifetime_s, int) or lifetime_s <= 0:
        raise InvalidArgument("lifetime_s must be a positive integer")
    jwk = VerifyingKey.from_jwk(enterprise_jwk, require_kid=False).to_jwk()
    iat = _jws.issue_time(now)
    claims = {
        "iss": issuer,
        "sub": uscc,
        "name": name,
        "jwk": jwk,
        "iat": iat,
        "exp": iat + lifetime_s,
    }
    return _jws.sign(eia_key, TYP_EIA_CERT, claims)


def _verify(token: str, eia_keys: KeySet, now: float | None) -> EnterpriseCertificate:
    """Verify a certificate; ``now`` None skips the clock checks (caller checks later)."""
    header = _jws.read_header(token, TYP_EIA_CERT)
    kid = header["kid"]
    if kid not in eia_keys:
        raise UnknownKey(f"enterprise key certificate is signed by unknown EIA key {kid!r}")
    claims = _jws.verify_signature(token, header, eia_keys.get(kid), TYP_EIA_CERT)
    issuer = _jws.claim_str(claims, "iss", TYP_EIA_CERT)
    uscc = _jws.claim_str(claims, "sub", TYP_EIA_CERT)
    if not is_valid_uscc(uscc):
        raise InvalidToken(f"enterprise key certificate subject {_jws.show(uscc)} is not a USCC")
    name = _jws.claim_str(claims, "name", TYP_EIA_CERT)
    jwk = claims.get("jwk")
    if not isinstance(jwk, Mapping):
        raise InvalidToken("enterprise key certificate jwk must be a JSON object")
    try:
        key = VerifyingKey.from_jwk(jwk)
    except InvalidJWK as exc:
        raise InvalidToken(f"enterprise key certificate jwk: {exc.message}") from None
    iat, exp = _jws.check_times(claims, TYP_EIA_CERT, now, subject=uscc)
    return EnterpriseCertificate(
        uscc=uscc,
        name=name,
        jwk=key.to_jwk(),
        public_key=key.key,
        exp=exp,
        issued_at=iat,
        issuer=issuer,
        kid=key.kid,
    )


def verify_enterprise_certificate(
    token: str, eia_keys: KeySet, *, now: float | None = None
) -> EnterpriseCertificate:
    """Verify an EIA certificate (signature by a trusted EIA key, claims, validity at now)."""
    return _verify(token, eia_keys, _jws.clock(now))


def verify_enterprise_signed(
    token: str,
    header: Mapping[str, Any],
    eia_keys: KeySet,
    typ: str,
    *,
    now: float | None,
) -> tuple[EnterpriseCertificate, dict[str, Any]]:
    """Verify a token signed by an enterprise key with its certificate in header ``eia``.

    ``now`` None defers the certificate's validity check to the caller (listing old
    grants checks it at the grant's ``iat`` instead).  Returns the certificate and the
    verified claims, with ``iss`` = ``sub`` = certificate USCC already checked.
    """
    kind = _jws.KIND[typ]
    cert_token = header.get("eia")
    if not isinstance(cert_token, str):
        raise InvalidToken(f"{kind} carries no enterprise key certificate (header eia)")
    cert = _verify(cert_token, eia_keys, now)
    if header["kid"] != cert.kid:
        raise CertificateMismatch(
            f"{kind} is signed with key {header['kid']!r}, not the certified key {cert.kid!r}"
        )
    claims = _jws.verify_signature(token, header, cert.verifying_key, typ)
    iss = _jws.claim_str(claims, "iss", typ)
    if claims.get("sub") != iss:
        raise InvalidToken(f"{kind} iss and sub differ")
    if iss != cert.uscc:
        raise CertificateMismatch(
            f"{kind} iss {_jws.show(iss)} is not the certificate's enterprise {cert.uscc}"
        )
    return cert, claims


def unverified_certificate(certificate: str) -> dict[str, Any]:
    """The claims of a certificate without checking its signature (signer-side checks).

    Used only by :func:`enterprise_headers` so that an enterprise cannot sign with a key
    or USCC that does not match its own certificate; verifiers never use this.
    """
    try:
        _jws.read_header(certificate, TYP_EIA_CERT)
        return _jws.unverified_claims(certificate, TYP_EIA_CERT)
    except InvalidToken as exc:
        raise InvalidArgument(f"eia_certificate: {exc.message}") from None


def enterprise_headers(
    key: SigningKey, certificate: str, uscc: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """The ``eia`` header for a token ``key`` signs for ``uscc``, after checking that the
    certificate is for that USCC and that key.  Returns the headers and the certificate
    claims."""
    claims = unverified_certificate(certificate)
    if claims.get("sub") != uscc:
        raise InvalidArgument(f"eia_certificate is for {_jws.show(claims.get('sub'))}, not {uscc}")
    jwk = claims.get("jwk")
    if not isinstance(jwk, Mapping):
        raise InvalidArgument("eia_certificate has no jwk object")
    try:
        certified = VerifyingKey.from_jwk(jwk)
    except InvalidJWK as exc:
        raise InvalidArgument(f"eia_certificate jwk: {exc.message}") from None
    if certified.kid != key.kid or not certified.same_key(key.verifying_key()):
        raise InvalidArgument(
            f"eia_certificate certifies key {certified.kid!r}, not signing key {key.kid!r}"
        )
    return {"eia": certificate}, claims
