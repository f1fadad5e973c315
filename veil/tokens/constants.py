"""Named constants of the token formats (docs/authorization.md).

Every limit a verifier applies is a named constant here so that the gateway, the platform
and the providers apply the same numbers and tests can refer to them.
"""

from __future__ import annotations

from typing import Final

CLOCK_SKEW_S: Final = 30
"""Allowance, in seconds, between the issuer's and the verifier's clocks.

``iat``/``nbf`` may lie at most this far in the future, and a token is still accepted
until ``exp + CLOCK_SKEW_S``.  It is small compared with every lifetime below, so it
widens no window materially."""

MAX_ASSERTION_LIFETIME_S: Final = 300
"""Longest ``exp - iat`` of a client assertion (5 minutes): a stolen assertion is useless
soon, and the gateway keeps each ``jti`` only this long (plus skew) to refuse replays."""

DEFAULT_ASSERTION_LIFETIME_S: Final = 120

MAX_REQUEST_TOKEN_LIFETIME_S: Final = 120
"""Longest ``exp - iat`` of a platform request token (2 minutes): it authorizes one
request to one provider, so it only has to outlive the round trip."""

DEFAULT_CERTIFICATE_LIFETIME_S: Final = 365 * 24 * 3600
"""Default validity of an EIA enterprise key certificate (one year, like a licence)."""

REVOCATION_LIFETIME_S: Final = 300
"""``exp - iat`` of a revocation: the short freshness window in which it is pushed."""

MIN_JTI_CHARS: Final = 16
"""A ``jti`` (or request id) shorter than this cannot carry enough randomness to be unique."""

MAX_TOKEN_CHARS: Final = 16 * 1024
"""Any longer token is refused before it is parsed (a certificate header included, real
tokens stay below 2 KiB)."""

ALGORITHMS: Final = ("EdDSA", "ES256")
"""The only JWS algorithms: Ed25519 and ECDSA P-256 with SHA-256.  Never ``none``, never
HMAC (a public key used as an HMAC secret forges anything), never RSA."""

TYP_EIA_CERT: Final = "veil-eia-cert+jwt"
TYP_CLIENT_ASSERTION: Final = "veil-client+jwt"
TYP_GRANT: Final = "veil-grant+jwt"
TYP_REVOCATION: Final = "veil-revocation+jwt"
TYP_REQUEST: Final = "veil-request+jwt"
TYP_RESULT: Final = "veil-result+jwt"
RESULT_KINDS: Final = ("verification", "score")

PLATFORM_ISSUER: Final = "veil-platform"
"""``iss`` of every request token."""

DEFAULT_EIA_ISSUER: Final = "veil-eia"

PURPOSES: Final = (
    "loan_origination",
    "post_loan_monitoring",
    "credit_guarantee",
    "credit_insurance",
    "credit_service",
)
"""Financing purposes only (国办发〔2021〕52号: what institutions obtain may be used only for
financing): 贷前审查, 贷后管理, 融资担保, 信用保险, 征信/信用服务."""

USES: Final = ("fetch", "verify", "score")
"""What a grant may allow: read values, verify a claimed value, or feed a score."""


def gateway_audience(name: str) -> str:
    """The ``aud`` of client assertions for the gateway called ``name``."""
    return f"veil://gateway/{name}"
