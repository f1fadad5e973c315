"""Attacks on veil.tokens: each must be refused with its specific error.

The attacker here is realistic: it may hold its own valid keys (an institution, another
enterprise, a compromised platform), see and replay any token, and craft tokens with pyjwt
or by hand.  It never holds the EIA key or the victim enterprise's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from veil.errors import (
    AuthorizationError,
    BadSignature,
    CertificateMismatch,
    DisallowedAlgorithm,
    ExpiredToken,
    GrantMismatch,
    GrantNotActive,
    InsecureKeyFile,
    InvalidJWK,
    InvalidToken,
    LifetimeTooLong,
    NotYetValid,
    PurposeMismatch,
    RequestFieldsMismatch,
    ScopeExceeded,
    TokenError,
    UnknownKey,
    UseNotGranted,
    WrongAudience,
    WrongTokenType,
)
from veil.tokens import (
    CLOCK_SKEW_S,
    MAX_ASSERTION_LIFETIME_S,
    MAX_TOKEN_CHARS,
    TYP_CLIENT_ASSERTION,
    TYP_GRANT,
    TYP_REQUEST,
    Grant,
    KeySet,
    RequestClaims,
    SigningKey,
    check_request_against_grant,
    gateway_audience,
    issue_enterprise_certificate,
    issue_request_token,
    make_client_assertion,
    sign_grant,
    sign_revocation,
    verify_client_assertion,
    verify_enterprise_certificate,
    verify_grant,
    verify_request_token,
    verify_revocation,
)

NOW = 1_700_000_000
DAY = 86_400
USCC = "91110000MA01AB2C32"
OTHER_USCC = "91310000MA1FL5X86A"
AUD = gateway_audience("main")
GRANT_ID = "3f1c2a8e-5b7d-4e0f-9a6b-1c2d3e4f5a6b"


def ed_raw(seed: int) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


EIA = SigningKey(ed_raw(1))
EIA_KEYS = KeySet.of(EIA, label="EIA keys")
PLATFORM_RAW = ed_raw(2)
PLATFORM = SigningKey(PLATFORM_RAW)
PLATFORM_KEYS = KeySet.of(PLATFORM, label="platform keys")
ENTERPRISE_RAW = ec.derive_private_key(10**20 + 3, ec.SECP256R1())
ENTERPRISE = SigningKey(ENTERPRISE_RAW)
BANK_RAW = ed_raw(4)
BANK = SigningKey(BANK_RAW)
OTHER_RAW = ed_raw(5)
OTHER = SigningKey(OTHER_RAW)  # another enterprise, legitimately certified
ROGUE_EIA = SigningKey(ed_raw(66), kid=EIA.kid)  # not the EIA, claims its kid


def certify(key: SigningKey, uscc: str = USCC, *, eia: SigningKey = EIA, **kw: Any) -> str:
    kw.setdefault("lifetime_s", 365 * DAY)
    kw.setdefault("now", NOW - DAY)
    return issue_enterprise_certificate(
        eia, uscc=uscc, name="示例", enterprise_jwk=key.public_jwk(), **kw
    )


CERT = certify(ENTERPRISE)
OTHER_CERT = certify(OTHER, OTHER_USCC)


def bank_key(iss: str, kid: str) -> dict[str, str]:
    if iss != "bank-1" or kid != BANK.kid:
        raise UnknownKey(f"no key {kid!r} for {iss!r}")
    return BANK.public_jwk()


def verify_assertion(token: str, now: float = NOW) -> Any:
    return verify_client_assertion(
        token, audience=AUD, institution_key=bank_key, eia_keys=EIA_KEYS, now=now
    )


def grant(**over: Any) -> Grant:
    values: dict[str, Any] = {
        "grant_id": GRANT_ID,
        "uscc": USCC,
        "institution": "bank-1",
        "fields": ("samr_legal_rep", "tax_credit_rating"),
        "uses": ("fetch",),
        "purpose": "loan_origination",
        "loan_ref": "LA-1",
        "not_before": NOW - 3600,
        "expires": NOW + 30 * DAY,
        "issued_at": NOW - 3600,
    }
    values.update(over)
    return Grant(**values)


def claims(**over: Any) -> RequestClaims:
    values: dict[str, Any] = {
        "provider": "tax",
        "uscc": USCC,
        "institution": "bank-1",
        "fields": ("tax_credit_rating",),
        "use": "fetch",
        "purpose": "loan_origination",
        "loan_ref": "LA-1",
        "grant_id": GRANT_ID,
        "request_id": "req-0123456789abcdef",
        "issued_at": NOW,
        "expires": NOW + 60,
    }
    values.update(over)
    return RequestClaims(**values)


def assertion_claims(**over: Any) -> dict[str, Any]:
    out = {
        "iss": "bank-1",
        "sub": "bank-1",
        "aud": AUD,
        "iat": NOW,
        "exp": NOW + 60,
        "jti": "attack-jti-0123456789",
    }
    out.update(over)
    return out


def craft(raw: Any, alg: str, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """A token made directly with pyjwt, bypassing every check of veil.tokens."""
    return jwt.encode(payload, raw, algorithm=alg, headers=header)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def swap_payload(token: str, change: dict[str, Any]) -> str:
    """Alter claims and re-encode them, keeping the original header and signature."""
    header, payload, signature = token.split(".")
    altered = {**unb64(payload), **change}
    return ".".join((header, b64(json.dumps(altered).encode()), signature))


def hmac_token(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


# --- forged and altered signatures --------------------------------------------------------


def test_forged_signature_with_another_key_under_the_same_kid() -> None:
    impostor = SigningKey(ed_raw(77), kid=BANK.kid)
    token = make_client_assertion(impostor, issuer="bank-1", audience=AUD, now=NOW)
    with pytest.raises(BadSignature, match="does not verify"):
        verify_assertion(token)
    rogue_platform = SigningKey(ed_raw(78), kid=PLATFORM.kid)
    forged = issue_request_token(rogue_platform, claims())
    with pytest.raises(BadSignature):
        verify_request_token(forged, PLATFORM_KEYS, audience="tax", now=NOW)


def test_altered_payload_keeps_signature_but_fails() -> None:
    token = issue_request_token(PLATFORM, claims())
    wider = swap_payload(token, {"fields": ["tax_credit_rating", "tax_paid_band"]})
    with pytest.raises(BadSignature):
        verify_request_token(wider, PLATFORM_KEYS, audience="tax", now=NOW)
    granted = sign_grant(ENTERPRISE, CERT, grant())
    with pytest.raises(BadSignature):
        verify_grant(swap_payload(granted, {"institution": "bank-2"}), EIA_KEYS, now=NOW)
    extended = swap_payload(
        make_client_assertion(BANK, issuer="bank-1", audience=AUD, now=NOW), {"exp": NOW + 200}
    )
    with pytest.raises(BadSignature):
        verify_assertion(extended)


# --- algorithm confusion -----------------------------------------------------------------


def test_alg_none_is_refused() -> None:
    header = {"alg": "none", "typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid}
    unsigned = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(assertion_claims()).encode())}."
    with pytest.raises(DisallowedAlgorithm, match="'none' is not allowed"):
        verify_assertion(unsigned)
    with pytest.raises(DisallowedAlgorithm):
        verify_assertion(unsigned + "AAAA")
    with pytest.raises(DisallowedAlgorithm):
        verify_assertion(unsigned.replace(b64(json.dumps(header).encode()), b64(b'{"typ":"x"}')))


def test_hs256_with_the_public_key_as_secret_is_refused() -> None:
    header = {"alg": "HS256", "typ": TYP_REQUEST, "kid": PLATFORM.kid}
    payload = unb64(issue_request_token(PLATFORM, claims()).split(".")[1])
    payload["fields"] = ["tax_credit_rating", "tax_paid_band"]
    public = PLATFORM.public_key
    secrets_tried = (
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        json.dumps(PLATFORM.public_jwk()).encode(),
    )
    for secret in secrets_tried:
        with pytest.raises(DisallowedAlgorithm, match="HS256"):
            verify_request_token(
                hmac_token(header, payload, secret), PLATFORM_KEYS, audience="tax", now=NOW
            )


def test_rsa_and_mismatched_algorithms_are_refused() -> None:
    token = issue_request_token(PLATFORM, claims())
    header, payload, signature = token.split(".")
    for alg in ("RS256", "PS256", "ES384", "HS512", "EdDSA "):
        forged = {**unb64(header), "alg": alg}
        with pytest.raises(DisallowedAlgorithm):
            verify_request_token(
                f"{b64(json.dumps(forged).encode())}.{payload}.{signature}",
                PLATFORM_KEYS,
                audience="tax",
                now=NOW,
            )
    # ES256 header on a token whose kid names an Ed25519 key: the key decides, not the token.
    es = craft(
        ENTERPRISE_RAW,
        "ES256",
        {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid},
        assertion_claims(),
    )
    with pytest.raises(DisallowedAlgorithm, match="does not match key"):
        verify_assertion(es)


def test_embedded_key_headers_are_refused() -> None:
    for extra in ({"jwk": OTHER.public_jwk()}, {"jku": "https://evil/jwks"}, {"crit": ["exp"]}):
        token = craft(
            BANK_RAW,
            "EdDSA",
            {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid, **extra},
            assertion_claims(),
        )
        with pytest.raises(InvalidToken, match="unexpected parameters"):
            verify_assertion(token)


# --- audience, time, lifetime --------------------------------------------------------------


def test_wrong_audience() -> None:
    token = make_client_assertion(BANK, issuer="bank-1", audience="veil://gateway/other", now=NOW)
    with pytest.raises(WrongAudience, match="veil://gateway/other"):
        verify_assertion(token)
    request = issue_request_token(PLATFORM, claims(provider="court"))
    with pytest.raises(WrongAudience, match="'court' is not 'tax'"):
        verify_request_token(request, PLATFORM_KEYS, audience="tax", now=NOW)
    listed = craft(
        BANK_RAW,
        "EdDSA",
        {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid},
        assertion_claims(aud=[AUD, "veil://gateway/other"]),
    )
    with pytest.raises(WrongAudience):
        verify_assertion(listed)


def test_expired_tokens() -> None:
    token = make_client_assertion(BANK, issuer="bank-1", audience=AUD, lifetime_s=60, now=NOW)
    verify_assertion(token, now=NOW + 60 + CLOCK_SKEW_S - 1)  # within the skew allowance
    with pytest.raises(ExpiredToken, match="expired"):
        verify_assertion(token, now=NOW + 60 + CLOCK_SKEW_S)
    request = issue_request_token(PLATFORM, claims())
    with pytest.raises(ExpiredToken):
        verify_request_token(request, PLATFORM_KEYS, audience="tax", now=NOW + 3600)
    with pytest.raises(ExpiredToken):
        verify_enterprise_certificate(CERT, EIA_KEYS, now=NOW + 2 * 365 * DAY)


def test_lifetime_too_long() -> None:
    too_long = craft(
        BANK_RAW,
        "EdDSA",
        {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid},
        assertion_claims(exp=NOW + MAX_ASSERTION_LIFETIME_S + 1),
    )
    with pytest.raises(LifetimeTooLong, match="301 s exceeds the maximum 300 s"):
        verify_assertion(too_long)
    request = unb64(issue_request_token(PLATFORM, claims()).split(".")[1])
    request["exp"] = NOW + 121
    token = craft(PLATFORM_RAW, "EdDSA", {"typ": TYP_REQUEST, "kid": PLATFORM.kid}, request)
    with pytest.raises(LifetimeTooLong, match="121 s exceeds the maximum 120 s"):
        verify_request_token(token, PLATFORM_KEYS, audience="tax", now=NOW)


def test_iat_in_the_future_beyond_skew_and_within() -> None:
    early = make_client_assertion(BANK, issuer="bank-1", audience=AUD, now=NOW + CLOCK_SKEW_S)
    assert verify_assertion(early).subject == "bank-1"  # exactly at the allowance: accepted
    future = make_client_assertion(BANK, issuer="bank-1", audience=AUD, now=NOW + CLOCK_SKEW_S + 1)
    with pytest.raises(NotYetValid, match="clock-skew"):
        verify_assertion(future)
    request = issue_request_token(PLATFORM, claims(issued_at=NOW + 600, expires=NOW + 660))
    with pytest.raises(NotYetValid):
        verify_request_token(request, PLATFORM_KEYS, audience="tax", now=NOW)
    ahead = certify(ENTERPRISE, now=NOW + 3600)
    with pytest.raises(NotYetValid):
        verify_enterprise_certificate(ahead, EIA_KEYS, now=NOW)


def test_integer_times_only() -> None:
    token = craft(
        BANK_RAW,
        "EdDSA",
        {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid},
        assertion_claims(exp=str(NOW + 60)),
    )
    with pytest.raises(InvalidToken, match="'exp' must be an integer"):
        verify_assertion(token)


# --- one token kind presented as another ---------------------------------------------------


def test_token_of_another_type_is_refused() -> None:
    granted = sign_grant(ENTERPRISE, CERT, grant())
    request = issue_request_token(PLATFORM, claims())
    assertion = make_client_assertion(
        ENTERPRISE, issuer=USCC, audience=AUD, now=NOW, eia_certificate=CERT
    )
    revocation = sign_revocation(ENTERPRISE, CERT, uscc=USCC, grant_id=GRANT_ID, now=NOW)
    with pytest.raises(WrongTokenType, match="got typ 'veil-grant\\+jwt' \\(a grant\\)"):
        verify_assertion(granted)
    with pytest.raises(WrongTokenType, match="request token"):
        verify_grant(request, EIA_KEYS, now=NOW)
    with pytest.raises(WrongTokenType):
        verify_grant(revocation, EIA_KEYS, now=NOW)
    with pytest.raises(WrongTokenType):
        verify_revocation(granted, EIA_KEYS, now=NOW)
    with pytest.raises(WrongTokenType):
        verify_request_token(assertion, PLATFORM_KEYS, audience="tax", now=NOW)
    with pytest.raises(WrongTokenType):
        verify_assertion(CERT)
    with pytest.raises(WrongTokenType):
        verify_enterprise_certificate(assertion, EIA_KEYS, now=NOW)
    plain = craft(BANK_RAW, "EdDSA", {"kid": BANK.kid}, assertion_claims())  # typ: JWT
    with pytest.raises(WrongTokenType, match="'JWT'"):
        verify_assertion(plain)
    untyped = craft(BANK_RAW, "EdDSA", {"kid": BANK.kid, "typ": None}, assertion_claims())
    with pytest.raises(WrongTokenType, match="None"):
        verify_assertion(untyped)


# --- enterprise certificates ------------------------------------------------------------


def test_enterprise_assertion_with_certificate_from_a_rogue_eia() -> None:
    rogue_cert = certify(ENTERPRISE, eia=ROGUE_EIA)  # same kid as the real EIA
    token = make_client_assertion(
        ENTERPRISE, issuer=USCC, audience=AUD, now=NOW, eia_certificate=rogue_cert
    )
    with pytest.raises(BadSignature, match="enterprise key certificate signature"):
        verify_assertion(token)
    platform_cert = certify(ENTERPRISE, eia=PLATFORM)  # the platform cannot mint enterprises
    token = make_client_assertion(
        ENTERPRISE, issuer=USCC, audience=AUD, now=NOW, eia_certificate=platform_cert
    )
    with pytest.raises(UnknownKey, match="unknown EIA key"):
        verify_assertion(token)


def test_enterprise_assertion_with_expired_certificate() -> None:
    old = certify(ENTERPRISE, lifetime_s=DAY, now=NOW - 2 * DAY)
    token = make_client_assertion(
        ENTERPRISE, issuer=USCC, audience=AUD, now=NOW, eia_certificate=old
    )
    with pytest.raises(ExpiredToken, match="certificate for 91110000MA01AB2C32 expired"):
        verify_assertion(token)


def test_enterprise_assertion_with_certificate_for_another_uscc() -> None:
    # The other enterprise signs with its own certified key but claims to be USCC.
    payload = assertion_claims(iss=USCC, sub=USCC)
    header = {"typ": TYP_CLIENT_ASSERTION, "kid": OTHER.kid, "eia": OTHER_CERT}
    with pytest.raises(CertificateMismatch, match="not the certificate's enterprise"):
        verify_assertion(craft(OTHER_RAW, "EdDSA", header, payload))


def test_enterprise_assertion_shape_rules() -> None:
    no_cert = craft(
        ENTERPRISE_RAW,
        "ES256",
        {"typ": TYP_CLIENT_ASSERTION, "kid": ENTERPRISE.kid},
        assertion_claims(iss=USCC, sub=USCC),
    )
    with pytest.raises(InvalidToken, match="no enterprise key certificate"):
        verify_assertion(no_cert)
    cert_but_not_uscc = craft(
        BANK_RAW,
        "EdDSA",
        {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid, "eia": CERT},
        assertion_claims(),
    )
    with pytest.raises(InvalidToken, match="iss is not a USCC"):
        verify_assertion(cert_but_not_uscc)
    sub_differs = craft(
        BANK_RAW,
        "EdDSA",
        {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid},
        assertion_claims(sub="bank-2"),
    )
    with pytest.raises(InvalidToken, match="iss and sub differ"):
        verify_assertion(sub_differs)
    short_jti = craft(
        BANK_RAW,
        "EdDSA",
        {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid},
        assertion_claims(jti="x" * 15),
    )
    with pytest.raises(InvalidToken, match="jti"):
        verify_assertion(short_jti)
    no_jti = craft(
        BANK_RAW,
        "EdDSA",
        {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid},
        {k: v for k, v in assertion_claims().items() if k != "jti"},
    )
    with pytest.raises(InvalidToken, match="jti"):
        verify_assertion(no_jti)


# --- grants ----------------------------------------------------------------------------


def _grant_payload(g: Grant) -> dict[str, Any]:
    return {
        "iss": g.uscc,
        "sub": g.uscc,
        "grant_id": g.grant_id,
        "institution": g.institution,
        "fields": list(g.fields),
        "uses": list(g.uses),
        "purpose": g.purpose,
        "loan_ref": g.loan_ref,
        "nbf": g.not_before,
        "exp": g.expires,
        "iat": g.issued_at,
    }


def test_grant_signed_by_a_key_not_in_its_certificate() -> None:
    payload = _grant_payload(grant())
    same_kid = craft(
        ed_raw(90),
        "EdDSA",
        {"typ": TYP_GRANT, "kid": OTHER.kid, "eia": OTHER_CERT},
        {**payload, "iss": OTHER_USCC, "sub": OTHER_USCC},
    )
    with pytest.raises(BadSignature):
        verify_grant(same_kid, EIA_KEYS, now=NOW)
    other_key = craft(
        OTHER_RAW, "EdDSA", {"typ": TYP_GRANT, "kid": OTHER.kid, "eia": CERT}, payload
    )
    with pytest.raises(CertificateMismatch, match="not the certified key"):
        verify_grant(other_key, EIA_KEYS, now=NOW)


def test_grant_claiming_another_enterprise() -> None:
    # A certified enterprise signs a grant "from" the victim enterprise.
    forged = craft(
        OTHER_RAW,
        "EdDSA",
        {"typ": TYP_GRANT, "kid": OTHER.kid, "eia": OTHER_CERT},
        _grant_payload(grant()),
    )
    with pytest.raises(CertificateMismatch):
        verify_grant(forged, EIA_KEYS, now=NOW)


def test_compromised_platform_cannot_forge_a_grant() -> None:
    # The platform mints itself a "certificate" for the victim and signs a grant with it.
    fake_cert = certify(PLATFORM, eia=PLATFORM)
    forged = craft(
        PLATFORM_RAW,
        "EdDSA",
        {"typ": TYP_GRANT, "kid": PLATFORM.kid, "eia": fake_cert},
        _grant_payload(grant()),
    )
    with pytest.raises(UnknownKey):
        verify_grant(forged, EIA_KEYS, now=NOW)
    # Or it reuses the victim's genuine certificate with its own key.
    reused = craft(
        PLATFORM_RAW,
        "EdDSA",
        {"typ": TYP_GRANT, "kid": ENTERPRISE.kid, "eia": CERT},
        _grant_payload(grant()),
    )
    with pytest.raises(DisallowedAlgorithm):  # Ed25519 signature, P-256 certified key
        verify_grant(reused, EIA_KEYS, now=NOW)
    # Or it signs request tokens beyond a genuine grant: the grant check refuses them.
    genuine = verify_grant(sign_grant(ENTERPRISE, CERT, grant()), EIA_KEYS, now=NOW)
    wide = claims(fields=("tax_credit_rating", "tax_paid_band"))
    token = verify_request_token(
        issue_request_token(PLATFORM, wide), PLATFORM_KEYS, audience="tax", now=NOW
    )
    with pytest.raises(ScopeExceeded, match="does not cover tax_paid_band"):
        check_request_against_grant(token, genuine, requested_fields=wide.fields, now=NOW)


def test_grant_outside_its_window() -> None:
    future = sign_grant(ENTERPRISE, CERT, grant(not_before=NOW + DAY, expires=NOW + 2 * DAY))
    with pytest.raises(GrantNotActive, match="not active before"):
        verify_grant(future, EIA_KEYS, now=NOW)
    past = sign_grant(ENTERPRISE, CERT, grant(expires=NOW - 60))
    with pytest.raises(GrantNotActive, match="expired"):
        verify_grant(past, EIA_KEYS, now=NOW)


def test_grant_with_invalid_purpose_or_use_is_invalid() -> None:
    payload = {**_grant_payload(grant()), "purpose": "marketing"}
    header = {"typ": TYP_GRANT, "kid": ENTERPRISE.kid, "eia": CERT}
    with pytest.raises(InvalidToken, match="financing purpose"):
        verify_grant(craft(ENTERPRISE_RAW, "ES256", header, payload), EIA_KEYS, now=NOW)
    payload = {**_grant_payload(grant()), "uses": ["fetch", "resell"]}
    with pytest.raises(InvalidToken, match="resell"):
        verify_grant(craft(ENTERPRISE_RAW, "ES256", header, payload), EIA_KEYS, now=NOW)
    payload = {**_grant_payload(grant()), "fields": []}
    with pytest.raises(InvalidToken, match="empty"):
        verify_grant(craft(ENTERPRISE_RAW, "ES256", header, payload), EIA_KEYS, now=NOW)


# --- the provider's grant check ------------------------------------------------------------

GRANT = grant()


@pytest.mark.parametrize(
    ("change", "requested", "error", "match"),
    [
        ({"fields": ("samr_legal_rep", "court_judgments")}, None, ScopeExceeded, "court_judgments"),
        ({"use": "score"}, None, UseNotGranted, "'score' is not granted"),
        ({"purpose": "credit_insurance"}, None, PurposeMismatch, "purpose 'credit_insurance'"),
        ({"loan_ref": "LA-2"}, None, PurposeMismatch, "loan_ref 'LA-2'"),
        ({"grant_id": "00000000-0000-4000-8000-000000000000"}, None, GrantMismatch, "grant"),
        ({"grant_id": None}, None, GrantMismatch, "names no grant"),
        ({"uscc": OTHER_USCC}, None, GrantMismatch, "enterprise"),
        ({"institution": "bank-2"}, None, GrantMismatch, "institution 'bank-2'"),
        ({}, ("tax_credit_rating", "samr_legal_rep"), RequestFieldsMismatch, "not in the request"),
        (
            {"fields": ("tax_credit_rating", "samr_legal_rep")},
            ("tax_credit_rating",),
            RequestFieldsMismatch,
            "in the request token but not asked",
        ),
    ],
)
def test_request_outside_the_grant(
    change: dict[str, Any],
    requested: tuple[str, ...] | None,
    error: type[AuthorizationError],
    match: str,
) -> None:
    request = claims(**change)
    asked = request.fields if requested is None else requested
    with pytest.raises(error, match=match):
        check_request_against_grant(request, GRANT, requested_fields=asked, now=NOW)


def test_request_under_an_inactive_grant() -> None:
    with pytest.raises(GrantNotActive):
        check_request_against_grant(
            claims(), GRANT, requested_fields=("tax_credit_rating",), now=GRANT.expires + DAY
        )


def test_revocation_is_the_callers_job() -> None:
    """verify_grant is stateless: a revoked grant still verifies.  The provider must keep
    verified revocations by (uscc, grant_id) and refuse grants found there — and must match
    both, since a revocation from another enterprise names a grant that is not its own."""
    token = sign_grant(ENTERPRISE, CERT, GRANT)
    revocation = verify_revocation(
        sign_revocation(ENTERPRISE, CERT, uscc=USCC, grant_id=GRANT_ID, now=NOW), EIA_KEYS, now=NOW
    )
    g = verify_grant(token, EIA_KEYS, now=NOW)  # still valid as a token
    revoked = {(revocation.uscc, revocation.grant_id)}
    assert (g.uscc, g.grant_id) in revoked
    hostile = verify_revocation(
        sign_revocation(OTHER, OTHER_CERT, uscc=OTHER_USCC, grant_id=GRANT_ID, now=NOW),
        EIA_KEYS,
        now=NOW,
    )
    assert (hostile.uscc, hostile.grant_id) != (g.uscc, g.grant_id)
    forged = swap_payload(
        sign_revocation(OTHER, OTHER_CERT, uscc=OTHER_USCC, grant_id=GRANT_ID, now=NOW),
        {"iss": USCC, "sub": USCC},
    )
    with pytest.raises(BadSignature):
        verify_revocation(forged, EIA_KEYS, now=NOW)


# --- keys ------------------------------------------------------------------------------


def test_unknown_kid() -> None:
    stranger = SigningKey(ed_raw(91))
    token = issue_request_token(stranger, claims())
    with pytest.raises(UnknownKey, match="platform keys: no key with kid"):
        verify_request_token(token, PLATFORM_KEYS, audience="tax", now=NOW)
    with pytest.raises(UnknownKey):
        verify_assertion(make_client_assertion(stranger, issuer="bank-1", audience=AUD, now=NOW))


@pytest.mark.parametrize("member", ["d", "p", "k"])
def test_jwks_with_private_members_is_rejected(member: str) -> None:
    for public in (PLATFORM.public_jwk(), ENTERPRISE.public_jwk()):
        leaked = {"keys": [{**public, member: "c2VjcmV0"}]}
        with pytest.raises(InvalidJWK, match="private key members"):
            KeySet.from_jwks(leaked, label="platform keys")


def test_symmetric_jwk_is_rejected() -> None:
    with pytest.raises(InvalidJWK, match="not allowed"):
        KeySet.from_jwks({"keys": [{"kty": "oct", "kid": "h", "alg": "HS256"}]})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "platform.pem"
    PLATFORM.save(path)
    os.chmod(path, mode)
    with pytest.raises(InsecureKeyFile, match=f"mode {mode:04o}") as err:
        SigningKey.load(path)
    assert "PRIVATE" not in str(err.value) and "chmod 600" in str(err.value)
    os.chmod(path, 0o600)
    assert SigningKey.load(path).kid == PLATFORM.kid


# --- malformed input, and what errors reveal ------------------------------------------------


def test_duplicate_claims_are_refused_even_when_signed() -> None:
    body = b'{"iss":"bank-1","sub":"bank-1","aud":"x","aud":"%s","iat":%d,"exp":%d,"jti":"%s"}' % (
        AUD.encode(),
        NOW,
        NOW + 60,
        b"attack-jti-0123456789",
    )
    token = jwt.PyJWS().encode(
        body, BANK_RAW, algorithm="EdDSA", headers={"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid}
    )
    with pytest.raises(InvalidToken, match="duplicate member 'aud'"):
        verify_assertion(token)


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "!!!.e30.x", "e30.e30.", "x" * (MAX_TOKEN_CHARS + 1), "W10.e30.AA"],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(TokenError):
        verify_assertion(token)


def test_errors_never_echo_the_token_or_key_material() -> None:
    token = make_client_assertion(BANK, issuer="bank-1", audience="veil://gateway/x", now=NOW)
    signature = token.split(".")[2]
    failures: list[Exception] = []
    for attempt in (
        lambda: verify_assertion(token),
        lambda: verify_assertion(token, now=NOW + DAY),
        lambda: verify_assertion(swap_payload(token, {"aud": AUD})),
        lambda: verify_request_token(token, PLATFORM_KEYS, audience="tax", now=NOW),
    ):
        with pytest.raises(TokenError) as err:
            attempt()
        failures.append(err.value)
    private = BANK_RAW.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for exc in failures:
        text = str(exc)
        assert token not in text and signature not in text and b64(private) not in text
