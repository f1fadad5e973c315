"""Grants (经企业授权) and revocations, signed by the enterprise's own certified key.

A grant is the enterprise's statement "institution X may use fields F for uses U, for
purpose P on loan application L, between nbf and exp".  It is signed with the enterprise
key that the EIA certified, and carries that certificate in header ``eia``.  Providers
verify it themselves: a compromised platform can sign any request token it likes, but it
cannot produce an enterprise signature, so it cannot widen what the enterprise allowed.

A written authorization letter (授权书) confirmed online is just a grant whose
``letter_sha256`` is the hash of the uploaded document.

Revocations are enterprise-signed too, so providers can apply one pushed by the platform
without trusting the platform.  Whether a grant has been revoked is state: the caller's
revocation store decides it (keyed by ``(uscc, grant_id)``), this module only verifies.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.errors import GrantNotActive, InvalidArgument, InvalidToken, NotYetValid
from veil.tokens import _jws, _validate
from veil.tokens.constants import CLOCK_SKEW_S, REVOCATION_LIFETIME_S, TYP_GRANT, TYP_REVOCATION
from veil.tokens.eia import enterprise_headers, verify_enterprise_signed
from veil.tokens.keys import KeySet, SigningKey

__all__ = [
    "Grant",
    "Revocation",
    "sign_grant",
    "sign_revocation",
    "verify_grant",
    "verify_revocation",
]

_EIA_HEADER = frozenset({"eia"})


@dataclass(frozen=True)
class Grant:
    """What an enterprise allowed one institution; times are Unix seconds.

    ``fields`` are catalog field ids, ``uses`` ⊆ {fetch, verify, score}, ``purpose`` a
    financing purpose.  The window is ``[not_before, expires)``.  Construction validates
    every value (``InvalidArgument``); lists are stored as tuples.
    """

    grant_id: str
    uscc: str
    institution: str
    fields: tuple[str, ...]
    uses: tuple[str, ...]
    purpose: str
    loan_ref: str
    not_before: int
    expires: int
    issued_at: int
    letter_sha256: str | None = None

    def __post_init__(self) -> None:
        _validate.grant_id(self.grant_id)
        _validate.uscc(self.uscc)
        _validate.text(self.institution, "institution")
        object.__setattr__(self, "fields", _validate.fields(self.fields))
        object.__setattr__(self, "uses", _validate.uses(self.uses))
        _validate.purpose(self.purpose)
        _validate.text(self.loan_ref, "loan_ref")
        _validate.numeric_date(self.not_before, "not_before")
        _validate.numeric_date(self.expires, "expires")
        _validate.numeric_date(self.issued_at, "issued_at")
        if self.expires <= self.not_before:
            raise InvalidArgument("grant expires must be after not_before")
        if self.letter_sha256 is not None:
            _validate.sha256_hex(self.letter_sha256, "letter_sha256")

    def check_active(self, now: float | None = None) -> None:
        """Raise :class:`~veil.errors.GrantNotActive` unless ``now`` is in the window
        (with ``CLOCK_SKEW_S`` of allowance at both ends)."""
        t = _jws.clock(now)
        if t < self.not_before - CLOCK_SKEW_S:
            raise GrantNotActive(f"grant {self.grant_id} is not active before {self.not_before}")
        if t >= self.expires + CLOCK_SKEW_S:
            raise GrantNotActive(f"grant {self.grant_id} expired at {self.expires}")


@dataclass(frozen=True)
class Revocation:
    """A verified revocation of grant ``grant_id`` by enterprise ``uscc``."""

    uscc: str
    grant_id: str
    issued_at: int
    expires: int


def sign_grant(key: SigningKey, eia_certificate: str, grant: Grant) -> str:
    """The enterprise signs ``grant`` with its certified key.

    Refused when the certificate is not for ``grant.uscc`` and this key, or when the
    grant window outlives the certificate: verifiers require the certificate to be valid
    when they check the grant, so such a grant would silently stop working early.
    """
    if not isinstance(grant, Grant):
        raise InvalidArgument("sign_grant needs a Grant")
    headers, cert = enterprise_headers(key, eia_certificate, grant.uscc)
    cert_iat, cert_exp = cert.get("iat"), cert.get("exp")
    if not isinstance(cert_iat, int) or not isinstance(cert_exp, int):
        raise InvalidArgument("eia_certificate lacks integer iat/exp")
    if grant.expires > cert_exp:
        raise InvalidArgument(
            f"grant window ends at {grant.expires}, after the enterprise key certificate "
            f"expires ({cert_exp}); renew the certificate or shorten the grant"
        )
    if not cert_iat - CLOCK_SKEW_S <= grant.issued_at < cert_exp:
        raise InvalidArgument("grant issued_at is outside the certificate's validity")
    claims: dict[str, object] = {
        "iss": grant.uscc,
        "sub": grant.uscc,
        "grant_id": grant.grant_id,
        "institution": grant.institution,
        "fields": list(grant.fields),
        "uses": list(grant.uses),
        "purpose": grant.purpose,
        "loan_ref": grant.loan_ref,
        "nbf": grant.not_before,
        "exp": grant.expires,
        "iat": grant.issued_at,
    }
    if grant.letter_sha256 is not None:
        claims["letter_sha256"] = grant.letter_sha256
    return _jws.sign(key, TYP_GRANT, claims, headers)


def verify_grant(
    token: str, eia_keys: KeySet, *, now: float | None = None, at_any_time: bool = False
) -> Grant:
    """Verify a grant: EIA certificate, enterprise signature, claims, and the window.

    Checks: certificate signed by a trusted EIA key and valid now; header ``kid`` is the
    certified key; signature by that key; ``iss`` = ``sub`` = certified USCC; the grant
    was signed while the certificate was valid; purpose, uses and fields well-formed;
    ``iat`` not in the future beyond skew; and now within ``[nbf, exp)`` (else
    :class:`~veil.errors.GrantNotActive`).

    ``at_any_time=True`` is for *listing* grants (an enterprise's history): the window
    is not checked and the certificate is checked at the grant's ``iat`` rather than now.
    Never authorize a request with it.  Revocation is not checked here: the caller's
    revocation store must be consulted for ``(grant.uscc, grant.grant_id)``.
    """
    t = _jws.clock(now)
    header = _jws.read_header(token, TYP_GRANT, extra=_EIA_HEADER)
    cert, claims = verify_enterprise_signed(
        token, header, eia_keys, TYP_GRANT, now=None if at_any_time else t
    )
    iat = _jws.claim_int(claims, "iat", TYP_GRANT)
    if iat > t + CLOCK_SKEW_S:
        raise NotYetValid(
            f"grant iat is {iat - t:.0f} s in the future, beyond the {CLOCK_SKEW_S} s allowance"
        )
    cert.check_signed_within(iat, "grant")
    letter = claims.get("letter_sha256")
    if letter is not None and not isinstance(letter, str):
        raise InvalidToken("grant claim 'letter_sha256' must be a string")
    try:
        grant = Grant(
            grant_id=_jws.claim_str(claims, "grant_id", TYP_GRANT),
            uscc=cert.uscc,
            institution=_jws.claim_str(claims, "institution", TYP_GRANT),
            fields=_jws.claim_str_list(claims, "fields", TYP_GRANT),
            uses=_jws.claim_str_list(claims, "uses", TYP_GRANT),
            purpose=_jws.claim_str(claims, "purpose", TYP_GRANT),
            loan_ref=_jws.claim_str(claims, "loan_ref", TYP_GRANT),
            not_before=_jws.claim_int(claims, "nbf", TYP_GRANT),
            expires=_jws.claim_int(claims, "exp", TYP_GRANT),
            issued_at=iat,
            letter_sha256=letter,
        )
    except InvalidArgument as exc:
        raise InvalidToken(f"grant claims: {exc.message}") from None
    if not at_any_time:
        grant.check_active(t)
    return grant


def sign_revocation(
    key: SigningKey,
    eia_certificate: str,
    *,
    uscc: str,
    grant_id: str,
    now: float | None = None,
) -> str:
    """The enterprise revokes grant ``grant_id``; valid for ``REVOCATION_LIFETIME_S``."""
    _validate.uscc(uscc)
    _validate.grant_id(grant_id)
    headers, _ = enterprise_headers(key, eia_certificate, uscc)
    iat = _jws.issue_time(now)
    claims = {
        "iss": uscc,
        "sub": uscc,
        "grant_id": grant_id,
        "iat": iat,
        "exp": iat + REVOCATION_LIFETIME_S,
    }
    return _jws.sign(key, TYP_REVOCATION, claims, headers)


def verify_revocation(
    token: str, eia_keys: KeySet, *, now: float | None = None, at_any_time: bool = False
) -> Revocation:
    """Verify a revocation (EIA certificate, enterprise signature, ``exp`` not passed).

    The revocation applies to the grant ``grant_id`` *of enterprise* ``uscc`` only: the
    caller must match both, so one enterprise can never revoke another's grant.

    ``at_any_time=True`` skips the freshness check (the certificate is checked at the
    revocation's ``iat``): use it when a provider re-synchronises revocations after being
    offline.  That is safe because applying a genuine old revocation only removes access.
    """
    t = _jws.clock(now)
    header = _jws.read_header(token, TYP_REVOCATION, extra=_EIA_HEADER)
    cert, claims = verify_enterprise_signed(
        token, header, eia_keys, TYP_REVOCATION, now=None if at_any_time else t
    )
    iat, exp = _jws.check_times(
        claims, TYP_REVOCATION, None if at_any_time else t, max_lifetime=REVOCATION_LIFETIME_S
    )
    if iat > t + CLOCK_SKEW_S:
        raise NotYetValid(f"revocation iat is {iat - t:.0f} s in the future")
    cert.check_signed_within(iat, "revocation")
    try:
        grant_id = _validate.grant_id(_jws.claim_str(claims, "grant_id", TYP_REVOCATION))
    except InvalidArgument as exc:
        raise InvalidToken(f"revocation claims: {exc.message}") from None
    return Revocation(uscc=cert.uscc, grant_id=grant_id, issued_at=iat, expires=exp)
