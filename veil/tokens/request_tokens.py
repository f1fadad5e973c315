"""Request tokens: the platform's per-request authorization to one provider.

For every request the platform signs a token (``typ: veil-request+jwt``) for exactly one
provider (``aud``), binding the enterprise, the institution, exactly the fields asked of
that provider, the use, purpose, loan reference, grant id and a unique request id
(``jti``), valid for at most 120 s.  The provider verifies it with the platform's JWKS and
then checks it against the enterprise-signed grant (:mod:`veil.tokens.checks`): the token
says what the platform decided, the grant proves the enterprise allowed it.
"""

from __future__ import annotations

from dataclasses import dataclass

from veil.errors import InvalidArgument, InvalidToken, WrongAudience
from veil.tokens import _jws, _validate
from veil.tokens.constants import MAX_REQUEST_TOKEN_LIFETIME_S, PLATFORM_ISSUER, TYP_REQUEST
from veil.tokens.keys import KeySet, SigningKey

__all__ = ["RequestClaims", "issue_request_token", "verify_request_token"]


@dataclass(frozen=True)
class RequestClaims:
    """One request to one provider, as the platform authorizes it (times: Unix seconds).

    ``grant_id`` is None only for requests limited to public fields, which need no
    grant; a provider must then refuse every field that is not public.
    """

    provider: str
    uscc: str
    institution: str
    fields: tuple[str, ...]
    use: str
    purpose: str
    loan_ref: str
    grant_id: str | None
    request_id: str
    issued_at: int
    expires: int
    recipient: str | None = None

    def __post_init__(self) -> None:
        _validate.text(self.provider, "provider")
        _validate.uscc(self.uscc)
        _validate.text(self.institution, "institution")
        object.__setattr__(self, "fields", _validate.fields(self.fields))
        _validate.use(self.use)
        _validate.purpose(self.purpose)
        _validate.text(self.loan_ref, "loan_ref")
        if self.grant_id is not None:
            _validate.grant_id(self.grant_id)
        _validate.token_id(self.request_id, "request_id")
        _validate.numeric_date(self.issued_at, "issued_at")
        _validate.numeric_date(self.expires, "expires")
        if self.expires <= self.issued_at:
            raise InvalidArgument("request token expires must be after issued_at")
        if self.recipient is not None:
            _validate.text(self.recipient, "recipient", max_len=64)


def issue_request_token(platform_key: SigningKey, claims: RequestClaims) -> str:
    """Sign ``claims`` for ``claims.provider``; a lifetime over 120 s is refused."""
    if not isinstance(claims, RequestClaims):
        raise InvalidArgument("issue_request_token needs RequestClaims")
    lifetime = claims.expires - claims.issued_at
    if lifetime > MAX_REQUEST_TOKEN_LIFETIME_S:
        raise InvalidArgument(
            f"request token lifetime {lifetime} s exceeds {MAX_REQUEST_TOKEN_LIFETIME_S} s"
        )
    payload: dict[str, object] = {
        "iss": PLATFORM_ISSUER,
        "aud": claims.provider,
        "sub": claims.uscc,
        "institution": claims.institution,
        "fields": list(claims.fields),
        "use": claims.use,
        "purpose": claims.purpose,
        "loan_ref": claims.loan_ref,
    }
    if claims.grant_id is not None:
        payload["grant_id"] = claims.grant_id
    if claims.recipient is not None:
        payload["rcpt"] = claims.recipient
    payload |= {"jti": claims.request_id, "iat": claims.issued_at, "exp": claims.expires}
    return _jws.sign(platform_key, TYP_REQUEST, payload)


def verify_request_token(
    token: str, platform_keys: KeySet, *, audience: str, now: float | None = None
) -> RequestClaims:
    """Verify a request token at provider ``audience``.

    Checks: shape, ``alg``, ``typ``; ``kid`` among the platform keys; signature;
    ``iss`` = ``veil-platform``; ``aud`` = this provider; ``iat`` not beyond skew in the
    future; not expired; ``exp - iat`` ≤ 120 s; every claim well-formed.  The caller must
    still refuse a replayed ``request_id`` and run :func:`check_request_against_grant`.
    """
    t = _jws.clock(now)
    header = _jws.read_header(token, TYP_REQUEST)
    claims = _jws.verify_signature(token, header, platform_keys.get(header["kid"]), TYP_REQUEST)
    if claims.get("iss") != PLATFORM_ISSUER:
        raise InvalidToken(f"request token iss {_jws.show(claims.get('iss'))} is not the platform")
    aud = claims.get("aud")
    if aud != audience:
        raise WrongAudience(f"request token aud {_jws.show(aud)} is not {audience!r}")
    iat, exp = _jws.check_times(claims, TYP_REQUEST, t, max_lifetime=MAX_REQUEST_TOKEN_LIFETIME_S)
    grant_id = claims.get("grant_id")
    if grant_id is not None and not isinstance(grant_id, str):
        raise InvalidToken("request token claim 'grant_id' must be a string")
    recipient = claims.get("rcpt")
    if recipient is not None and not isinstance(recipient, str):
        raise InvalidToken("request token claim 'rcpt' must be a string")
    try:
        return RequestClaims(
            provider=audience,
            uscc=_jws.claim_str(claims, "sub", TYP_REQUEST),
            institution=_jws.claim_str(claims, "institution", TYP_REQUEST),
            fields=_jws.claim_str_list(claims, "fields", TYP_REQUEST),
            use=_jws.claim_str(claims, "use", TYP_REQUEST),
            purpose=_jws.claim_str(claims, "purpose", TYP_REQUEST),
            loan_ref=_jws.claim_str(claims, "loan_ref", TYP_REQUEST),
            grant_id=grant_id,
            request_id=_jws.claim_str(claims, "jti", TYP_REQUEST),
            issued_at=iat,
            expires=exp,
            recipient=recipient,
        )
    except InvalidArgument as exc:
        raise InvalidToken(f"request token claims: {exc.message}") from None
