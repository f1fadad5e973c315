"""veil.tokens: known answers, interoperability with jwcrypto, round trips, key handling.

The attacks (forgeries, confusions, mismatches) are in ``test_tokens_attacks.py``.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwk as jjwk
from jwcrypto import jws as jjws

from veil.errors import (
    ConfigError,
    ExpiredToken,
    GrantNotActive,
    InvalidArgument,
    InvalidJWK,
    InvalidUSCC,
    PermissionDenied,
    UnknownKey,
)
from veil.tokens import (
    CLOCK_SKEW_S,
    MAX_ASSERTION_LIFETIME_S,
    MAX_REQUEST_TOKEN_LIFETIME_S,
    PURPOSES,
    REVOCATION_LIFETIME_S,
    TYP_CLIENT_ASSERTION,
    TYP_EIA_CERT,
    TYP_GRANT,
    TYP_REQUEST,
    TYP_REVOCATION,
    USES,
    Grant,
    KeySet,
    RequestClaims,
    SigningKey,
    VerifyingKey,
    check_request_against_grant,
    gateway_audience,
    issue_enterprise_certificate,
    issue_request_token,
    jwk_thumbprint,
    make_client_assertion,
    peek_client_assertion,
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
AUD = gateway_audience("main")


def ed_raw(seed: int) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def p256_raw(seed: int) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(10**20 + seed, ec.SECP256R1())


EIA = SigningKey(ed_raw(1))
EIA_KEYS = KeySet.of(EIA, label="EIA keys")
PLATFORM = SigningKey(ed_raw(2))
PLATFORM_KEYS = KeySet.of(PLATFORM, label="platform keys")
ENTERPRISE_RAW = p256_raw(3)
ENTERPRISE = SigningKey(ENTERPRISE_RAW)
BANK_RAW = ed_raw(4)
BANK = SigningKey(BANK_RAW)
CERT = issue_enterprise_certificate(
    EIA,
    uscc=USCC,
    name="北京示例科技有限公司",
    enterprise_jwk=ENTERPRISE.public_jwk(),
    lifetime_s=10 * 365 * DAY,
    now=NOW - DAY,
)


def b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def bank_key(iss: str, kid: str) -> dict[str, str]:
    if iss != "bank-1" or kid != BANK.kid:
        raise UnknownKey(f"no key {kid!r} for {iss!r}")
    return BANK.public_jwk()


def make_grant(**over: Any) -> Grant:
    values: dict[str, Any] = {
        "grant_id": "3f1c2a8e-5b7d-4e0f-9a6b-1c2d3e4f5a6b",
        "uscc": USCC,
        "institution": "bank-1",
        "fields": ("samr_legal_rep", "tax_credit_rating", "court_judgments"),
        "uses": ("fetch", "verify"),
        "purpose": "loan_origination",
        "loan_ref": "LA-2023-0001",
        "not_before": NOW - 3600,
        "expires": NOW + 30 * DAY,
        "issued_at": NOW - 3600,
        "letter_sha256": None,
    }
    values.update(over)
    return Grant(**values)


def make_claims(**over: Any) -> RequestClaims:
    values: dict[str, Any] = {
        "provider": "tax",
        "uscc": USCC,
        "institution": "bank-1",
        "fields": ("tax_credit_rating",),
        "use": "fetch",
        "purpose": "loan_origination",
        "loan_ref": "LA-2023-0001",
        "grant_id": "3f1c2a8e-5b7d-4e0f-9a6b-1c2d3e4f5a6b",
        "request_id": "req-0123456789abcdef",
        "issued_at": NOW,
        "expires": NOW + 60,
    }
    values.update(over)
    return RequestClaims(**values)


# --- constants -------------------------------------------------------------------------


def test_constants_match_the_design() -> None:
    assert (CLOCK_SKEW_S, MAX_ASSERTION_LIFETIME_S, MAX_REQUEST_TOKEN_LIFETIME_S) == (30, 300, 120)
    assert PURPOSES == (
        "loan_origination",
        "post_loan_monitoring",
        "credit_guarantee",
        "credit_insurance",
        "credit_service",
    )
    assert USES == ("fetch", "verify", "score")
    assert (TYP_EIA_CERT, TYP_CLIENT_ASSERTION, TYP_GRANT, TYP_REVOCATION, TYP_REQUEST) == (
        "veil-eia-cert+jwt",
        "veil-client+jwt",
        "veil-grant+jwt",
        "veil-revocation+jwt",
        "veil-request+jwt",
    )
    assert AUD == "veil://gateway/main"


# --- known answers ---------------------------------------------------------------------

RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"  # RFC 8037 §A.3

KAT_SEED = bytes(range(32))
KAT_KID = "1IG2tMH7J2wbJZnOf8LJzQitKf7LMvoAElsuDMVM54Y"
KAT_TOKEN = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6IjFJRzJ0TUg3SjJ3Ykpabk9mOExKelFpdEtmN0xNdm9BRWxzdURNVk01NFki"
    "LCJ0eXAiOiJ2ZWlsLWNsaWVudCtqd3QifQ"
    ".eyJpc3MiOiJiYW5rLWthdCIsInN1YiI6ImJhbmsta2F0IiwiYXVkIjoidmVpbDovL2dhdGV3YXkva2F0IiwiaWF0"
    "IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAxMjAsImp0aSI6ImthdC1qdGktMDEyMzQ1Njc4OWFiY2RlZiJ9"
    ".q7-Pd3Ocb4-0BDvrAN3m98ZuN6cF3aZb9xfif6vBAO6ZzGfqIFcGIj8ZF-ylX8rFuaNJG6ULAhB6jPVzN5JRCg"
)


def test_default_kid_is_the_rfc7638_thumbprint_rfc8037_vector() -> None:
    d = base64.urlsafe_b64decode(RFC8037_D + "=")
    key = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(d))
    assert key.public_jwk()["x"] == RFC8037_X
    assert key.kid == RFC8037_THUMBPRINT
    assert jwk_thumbprint({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}) == RFC8037_THUMBPRINT


def test_known_answer_client_assertion() -> None:
    key = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(KAT_SEED))
    assert key.kid == KAT_KID
    token = make_client_assertion(
        key,
        issuer="bank-kat",
        audience=gateway_audience("kat"),
        now=NOW,
        jti="kat-jti-0123456789abcdef",
    )
    header, payload, _ = token.split(".")
    assert b64json(header) == {"alg": "EdDSA", "kid": KAT_KID, "typ": "veil-client+jwt"}
    assert b64json(payload) == {
        "iss": "bank-kat",
        "sub": "bank-kat",
        "aud": "veil://gateway/kat",
        "iat": NOW,
        "exp": NOW + 120,
        "jti": "kat-jti-0123456789abcdef",
    }
    assert token == KAT_TOKEN  # Ed25519 is deterministic: the whole token is fixed

    # An independent JOSE implementation agrees on the signature and the thumbprint.
    public = jjwk.JWK(**key.public_jwk())
    assert public.thumbprint() == KAT_KID
    jws = jjws.JWS()
    jws.deserialize(token)
    jws.verify(public, alg="EdDSA")
    assert json.loads(jws.payload) == b64json(payload)

    verified = verify_client_assertion(
        token,
        audience="veil://gateway/kat",
        institution_key=lambda iss, kid: key.public_jwk(),
        eia_keys=None,
        now=NOW + 1,
    )
    assert (verified.kind, verified.subject, verified.kid, verified.exp) == (
        "institution",
        "bank-kat",
        KAT_KID,
        NOW + 120,
    )


def _jwcrypto_sign(raw: Any, alg: str, header: dict[str, Any], claims: dict[str, Any]) -> str:
    pem = raw.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = jjwk.JWK.from_pem(pem)
    jws = jjws.JWS(json.dumps(claims).encode())
    jws.add_signature(key, alg=alg, protected=json.dumps({"alg": alg, **header}))
    return str(jws.serialize(compact=True))


def test_assertion_made_by_jwcrypto_verifies() -> None:
    claims = {
        "iss": "bank-1",
        "sub": "bank-1",
        "aud": AUD,
        "iat": NOW,
        "exp": NOW + 60,
        "jti": "jwcrypto-jti-000000001",
    }
    token = _jwcrypto_sign(
        BANK_RAW, "EdDSA", {"typ": TYP_CLIENT_ASSERTION, "kid": BANK.kid}, claims
    )
    got = verify_client_assertion(
        token, audience=AUD, institution_key=bank_key, eia_keys=EIA_KEYS, now=NOW + 5
    )
    assert (got.kind, got.subject, got.jti) == ("institution", "bank-1", claims["jti"])


def test_es256_grant_made_by_jwcrypto_verifies_and_ours_verifies_in_jwcrypto() -> None:
    grant = make_grant()
    claims = {
        "iss": USCC,
        "sub": USCC,
        "grant_id": grant.grant_id,
        "institution": "bank-1",
        "fields": list(grant.fields),
        "uses": list(grant.uses),
        "purpose": grant.purpose,
        "loan_ref": grant.loan_ref,
        "nbf": grant.not_before,
        "exp": grant.expires,
        "iat": grant.issued_at,
    }
    header = {"typ": TYP_GRANT, "kid": ENTERPRISE.kid, "eia": CERT}
    theirs = _jwcrypto_sign(ENTERPRISE_RAW, "ES256", header, claims)
    assert verify_grant(theirs, EIA_KEYS, now=NOW) == grant

    ours = sign_grant(ENTERPRISE, CERT, grant)
    jws = jjws.JWS()
    jws.deserialize(ours)
    jws.verify(jjwk.JWK(**ENTERPRISE.public_jwk()), alg="ES256")
    assert json.loads(jws.payload) == claims
    cert = jjws.JWS()
    cert.deserialize(jws.jose_header["eia"])
    cert.verify(jjwk.JWK(**EIA.public_jwk()), alg="EdDSA")
    assert json.loads(cert.payload)["sub"] == USCC


# --- round trips -----------------------------------------------------------------------

FIELD_POOL = (
    "samr_legal_rep",
    "samr_founding_date",
    "tax_credit_rating",
    "tax_paid_band",
    "court_judgments",
    "social_insurance_headcount",
    "utilities_arrears",
    "customs_rating",
)
field_ids = st.sampled_from(FIELD_POOL) | st.from_regex(r"[a-z][a-z0-9_.]{0,30}", fullmatch=True)
printable = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=1, max_size=40
).filter(lambda s: s.isprintable())


@st.composite
def grants(draw: st.DrawFn) -> Grant:
    nbf = draw(st.integers(1_500_000_000, 1_900_000_000))
    return Grant(
        grant_id=str(draw(st.uuids())),
        uscc=USCC,
        institution=draw(st.from_regex(r"[a-z][a-z0-9-]{2,20}", fullmatch=True)),
        fields=tuple(draw(st.lists(field_ids, min_size=1, max_size=8, unique=True))),
        uses=tuple(draw(st.lists(st.sampled_from(USES), min_size=1, max_size=3, unique=True))),
        purpose=draw(st.sampled_from(PURPOSES)),
        loan_ref=draw(printable),
        not_before=nbf,
        expires=nbf + draw(st.integers(1, 5 * 365 * DAY)),
        issued_at=nbf - draw(st.integers(0, 30 * DAY)),
        letter_sha256=draw(st.none() | st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
    )


@settings(max_examples=40, deadline=None)
@given(grant=grants(), where=st.floats(0, 1), es256=st.booleans())
def test_grant_round_trip(grant: Grant, where: float, es256: bool) -> None:
    raw: Any = ENTERPRISE_RAW if es256 else ed_raw(5)
    key = SigningKey(raw)
    cert_iat = grant.issued_at - 10
    cert = issue_enterprise_certificate(
        EIA,
        uscc=USCC,
        name="示例",
        enterprise_jwk=key.public_jwk(),
        lifetime_s=grant.expires - cert_iat,
        now=cert_iat,
    )
    token = sign_grant(key, cert, grant)
    now = grant.not_before + int(where * (grant.expires - grant.not_before - 1))
    assert verify_grant(token, EIA_KEYS, now=now) == grant
    assert verify_grant(token, EIA_KEYS, now=grant.expires + DAY, at_any_time=True) == grant


@settings(max_examples=40, deadline=None)
@given(
    fields=st.lists(field_ids, min_size=1, max_size=8, unique=True),
    use=st.sampled_from(USES),
    purpose=st.sampled_from(PURPOSES),
    lifetime=st.integers(1, MAX_REQUEST_TOKEN_LIFETIME_S),
    grant_id=st.none() | st.uuids().map(str),
    loan_ref=printable,
    order=st.randoms(use_true_random=False),
)
def test_request_token_round_trip(
    fields: list[str],
    use: str,
    purpose: str,
    lifetime: int,
    grant_id: str | None,
    loan_ref: str,
    order: Any,
) -> None:
    claims = make_claims(
        fields=tuple(fields),
        use=use,
        purpose=purpose,
        loan_ref=loan_ref,
        grant_id=grant_id,
        request_id=str(uuid.UUID(int=len(fields))),
        expires=NOW + lifetime,
    )
    token = issue_request_token(PLATFORM, claims)
    got = verify_request_token(token, PLATFORM_KEYS, audience="tax", now=NOW + lifetime // 2)
    assert got == claims
    if grant_id is not None:
        grant = make_grant(
            grant_id=grant_id,
            fields=tuple(fields),
            uses=(use,),
            purpose=purpose,
            loan_ref=loan_ref,
        )
        asked = list(fields)
        order.shuffle(asked)
        check_request_against_grant(got, grant, requested_fields=asked, now=NOW)


def test_enterprise_certificate_round_trip() -> None:
    cert = verify_enterprise_certificate(CERT, EIA_KEYS, now=NOW)
    assert (cert.uscc, cert.name, cert.kid, cert.issuer) == (
        USCC,
        "北京示例科技有限公司",
        ENTERPRISE.kid,
        "veil-eia",
    )
    assert cert.exp == NOW - DAY + 10 * 365 * DAY
    assert dict(cert.jwk) == ENTERPRISE.public_jwk()
    assert cert.public_key == ENTERPRISE.public_key
    with pytest.raises(InvalidUSCC):
        issue_enterprise_certificate(
            EIA, uscc="91110000MA01AB2C33", name="x", enterprise_jwk=ENTERPRISE.public_jwk()
        )
    with pytest.raises(InvalidJWK, match="private"):
        issue_enterprise_certificate(
            EIA, uscc=USCC, name="x", enterprise_jwk={**ENTERPRISE.public_jwk(), "d": "AAAA"}
        )


def test_enterprise_assertion_round_trip() -> None:
    token = make_client_assertion(
        ENTERPRISE, issuer=USCC, audience=AUD, now=NOW, eia_certificate=CERT
    )
    got = verify_client_assertion(
        token, audience=AUD, institution_key=bank_key, eia_keys=EIA_KEYS, now=NOW + 10
    )
    assert (got.kind, got.subject, got.kid) == ("enterprise", USCC, ENTERPRISE.kid)
    assert got.certificate is not None and got.certificate.name == "北京示例科技有限公司"
    assert len(got.jti) >= 22  # 16 random bytes, base64url


def test_revocation_round_trip_and_resync_after_expiry() -> None:
    grant_id = make_grant().grant_id
    token = sign_revocation(ENTERPRISE, CERT, uscc=USCC, grant_id=grant_id, now=NOW)
    got = verify_revocation(token, EIA_KEYS, now=NOW + 1)
    assert (got.uscc, got.grant_id, got.issued_at, got.expires) == (
        USCC,
        grant_id,
        NOW,
        NOW + REVOCATION_LIFETIME_S,
    )
    late = NOW + REVOCATION_LIFETIME_S + CLOCK_SKEW_S
    with pytest.raises(ExpiredToken):
        verify_revocation(token, EIA_KEYS, now=late)
    assert verify_revocation(token, EIA_KEYS, now=late + DAY, at_any_time=True) == got


def test_letter_confirmation_is_a_grant_with_the_letter_hash() -> None:
    grant = make_grant(letter_sha256="ab" * 32)
    assert verify_grant(sign_grant(ENTERPRISE, CERT, grant), EIA_KEYS, now=NOW).letter_sha256 == (
        "ab" * 32
    )


def test_listing_grants_at_any_time() -> None:
    grant = make_grant(not_before=NOW - 10 * DAY, expires=NOW - 5 * DAY, issued_at=NOW - 10 * DAY)
    cert = issue_enterprise_certificate(
        EIA,
        uscc=USCC,
        name="x",
        enterprise_jwk=ENTERPRISE.public_jwk(),
        lifetime_s=7 * DAY,
        now=NOW - 11 * DAY,
    )
    token = sign_grant(ENTERPRISE, cert, grant)
    with pytest.raises(ExpiredToken, match="certificate"):
        verify_grant(token, EIA_KEYS, now=NOW)  # its certificate has expired since
    assert verify_grant(token, EIA_KEYS, now=NOW, at_any_time=True) == grant
    with pytest.raises(GrantNotActive, match="expired"):
        verify_grant(token, EIA_KEYS, now=NOW - 5 * DAY + CLOCK_SKEW_S)


def test_grant_window_edges_allow_clock_skew() -> None:
    grant = make_grant(not_before=NOW, expires=NOW + 100, issued_at=NOW - 100)
    token = sign_grant(ENTERPRISE, CERT, grant)
    verify_grant(token, EIA_KEYS, now=NOW - CLOCK_SKEW_S)
    verify_grant(token, EIA_KEYS, now=NOW + 100 + CLOCK_SKEW_S - 1)
    with pytest.raises(GrantNotActive, match="not active"):
        verify_grant(token, EIA_KEYS, now=NOW - CLOCK_SKEW_S - 1)
    with pytest.raises(GrantNotActive, match="expired"):
        verify_grant(token, EIA_KEYS, now=NOW + 100 + CLOCK_SKEW_S)


# --- issuing refuses what verifiers would refuse ----------------------------------------


def test_issuers_refuse_bad_tokens() -> None:
    with pytest.raises(InvalidArgument, match="lifetime"):
        make_client_assertion(BANK, issuer="bank-1", audience=AUD, lifetime_s=301)
    with pytest.raises(InvalidArgument, match="jti"):
        make_client_assertion(BANK, issuer="bank-1", audience=AUD, jti="short")
    with pytest.raises(InvalidArgument, match="EIA cert"):
        make_client_assertion(ENTERPRISE, issuer=USCC, audience=AUD)
    with pytest.raises(InvalidArgument, match="not a valid USCC"):
        make_client_assertion(BANK, issuer="bank-1", audience=AUD, eia_certificate=CERT)
    with pytest.raises(InvalidArgument, match="certifies key"):
        make_client_assertion(BANK, issuer=USCC, audience=AUD, eia_certificate=CERT)
    with pytest.raises(InvalidArgument, match="exceeds 120"):
        issue_request_token(PLATFORM, make_claims(expires=NOW + 121))
    with pytest.raises(InvalidArgument, match="after the enterprise key certificate"):
        sign_grant(ENTERPRISE, CERT, make_grant(expires=NOW + 20 * 365 * DAY))
    with pytest.raises(InvalidArgument, match="is for"):
        sign_grant(ENTERPRISE, CERT, make_grant(uscc="91310000MA1FL5X86A"))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"purpose": "marketing"}, "financing purpose"),
        ({"uses": ("fetch", "sell")}, "use"),
        ({"uses": ()}, "uses"),
        ({"fields": ()}, "empty"),
        ({"fields": ("a", "a")}, "twice"),
        ({"fields": "samr_legal_rep"}, "list"),
        ({"grant_id": "not-a-uuid"}, "UUID"),
        ({"grant_id": "3F1C2A8E-5B7D-4E0F-9A6B-1C2D3E4F5A6B"}, "UUID"),
        ({"expires": NOW - 3600}, "after not_before"),
        ({"letter_sha256": "AB" * 32}, "SHA-256"),
        ({"not_before": 1.5}, "integer"),
        ({"uscc": "91110000MA01AB2C33"}, "check character"),
    ],
)
def test_invalid_grants_cannot_be_built(change: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        make_grant(**change)


def test_key_lookup_errors() -> None:
    token = make_client_assertion(BANK, issuer="bank-1", audience=AUD, now=NOW)

    def suspended(iss: str, kid: str) -> Any:
        raise PermissionDenied(f"institution {iss} is suspended")

    with pytest.raises(PermissionDenied, match="suspended"):
        verify_client_assertion(token, audience=AUD, institution_key=suspended, eia_keys=None)
    registry: dict[tuple[str, str], dict[str, str]] = {}
    with pytest.raises(UnknownKey, match="registered"):
        verify_client_assertion(
            token,
            audience=AUD,
            institution_key=lambda iss, kid: registry[(iss, kid)],
            eia_keys=None,
            now=NOW,
        )
    with pytest.raises(UnknownKey, match="not accepted"):
        verify_client_assertion(token, audience=AUD, institution_key=None, eia_keys=None, now=NOW)
    enterprise = make_client_assertion(
        ENTERPRISE, issuer=USCC, audience=AUD, now=NOW, eia_certificate=CERT
    )
    with pytest.raises(UnknownKey, match="not accepted"):
        verify_client_assertion(
            enterprise, audience=AUD, institution_key=bank_key, eia_keys=None, now=NOW
        )
    found: list[Any] = [BANK.public_key, BANK.verifying_key(), BANK.public_jwk()]
    assert peek_client_assertion(token) == ("bank-1", BANK.kid)
    for each in found:

        def lookup(iss: str, kid: str, each: Any = each) -> Any:
            return each

        got = verify_client_assertion(
            token, audience=AUD, institution_key=lookup, eia_keys=None, now=NOW
        )
        assert got.kid == BANK.kid


# --- keys -------------------------------------------------------------------------------


def test_signing_key_file_round_trip(tmp_path: Path) -> None:
    for alg in ("EdDSA", "ES256"):
        key = SigningKey.generate(alg, kid=f"custom-{alg}")
        path = tmp_path / f"{alg}.pem"
        key.save(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        loaded = SigningKey.load(path)
        assert (loaded.kid, loaded.alg) == (f"custom-{alg}", alg)
        assert loaded.public_jwk() == key.public_jwk()
        assert b"BEGIN PRIVATE KEY" in path.read_bytes()
        with pytest.raises(ConfigError, match="already exists"):
            key.save(path)
        SigningKey.generate(alg).save(path, overwrite=True)
        assert SigningKey.load(path).kid != key.kid
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_foreign_pkcs8_key_gets_thumbprint_kid(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    raw = ed_raw(9)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        raw.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    os.close(fd)
    assert SigningKey.load(path).kid == SigningKey(raw).kid == SigningKey(raw).thumbprint()
    path.write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="PEM"):
        SigningKey.load(path)
    with pytest.raises(ConfigError, match="No such file"):
        SigningKey.load(tmp_path / "missing.pem")


def test_signing_key_never_shows_or_serializes_material() -> None:
    key = SigningKey(ed_raw(7))
    secret = base64.urlsafe_b64encode(bytes([7]) * 32).rstrip(b"=").decode()
    assert repr(key) == f"SigningKey(kid={key.kid!r}, alg='EdDSA')"
    assert secret not in repr(key) and secret not in str(key.public_jwk())
    assert "d" not in key.public_jwk()
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(key)
    with pytest.raises(InvalidArgument):
        SigningKey.generate("HS256")
    with pytest.raises(InvalidJWK, match="P-256"):
        SigningKey(ec.generate_private_key(ec.SECP384R1()))


def test_key_set_jwks_round_trip() -> None:
    keys = KeySet.of(EIA, PLATFORM, ENTERPRISE, label="mixed")
    jwks = keys.to_jwks()
    again = KeySet.from_jwks(json.loads(json.dumps(jwks)), label="mixed")
    assert again.kids == keys.kids == (EIA.kid, PLATFORM.kid, ENTERPRISE.kid)
    assert again.get(ENTERPRISE.kid).same_key(ENTERPRISE.verifying_key())
    assert all(k["use"] == "sig" for k in jwks["keys"])
    with pytest.raises(UnknownKey, match="mixed: no key with kid 'nope'"):
        keys.get("nope")
    with pytest.raises(InvalidJWK, match="twice"):
        KeySet.from_jwks({"keys": [EIA.public_jwk(), EIA.public_jwk()]})
    with pytest.raises(InvalidJWK, match="no kid"):
        KeySet.from_jwks({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}]})
    with pytest.raises(InvalidJWK, match="does not match"):
        VerifyingKey.from_jwk({**EIA.public_jwk(), "alg": "ES256"})
    with pytest.raises(InvalidJWK, match="not allowed"):
        VerifyingKey.from_jwk({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"})
    with pytest.raises(InvalidJWK, match="use"):
        VerifyingKey.from_jwk({**EIA.public_jwk(), "use": "enc"})
    with pytest.raises(InvalidJWK, match="valid public key"):
        VerifyingKey.from_jwk({**ENTERPRISE.public_jwk(), "y": RFC8037_X})  # off the curve
