"""The token library shared by the gateway, the platform and the providers.

Safe recipes, one per token kind of ``docs/authorization.md``; every signature is made and
checked by pyjwt with ``cryptography`` keys.  Verifiers take ``now`` (Unix seconds) so that
tests are deterministic; they raise :class:`~veil.errors.TokenError` subclasses
(UNAUTHENTICATED) for bad credentials and :class:`~veil.errors.AuthorizationError`
subclasses (PERMISSION_DENIED) for valid credentials asking too much.

Why it is built this way:

* **Algorithm from the key, not the token.**  Only EdDSA (Ed25519) and ES256 (P-256)
  exist; the verifier derives the algorithm from the key it trusts and refuses any other
  header ``alg``.  ``none`` and HS256-with-the-public-key-as-secret (key confusion) fail
  before a signature is even computed.
* **``typ`` separates token kinds.**  Certificates, client assertions, grants,
  revocations and request tokens are all compact JWS signed by overlapping sets of keys
  (an enterprise key signs assertions, grants and revocations).  Each verifier requires
  its own exact ``typ``, so a grant can never be replayed as a client assertion, nor a
  request token as a grant.
* **The EIA is not the platform.**  Enterprise keys are certified by the enterprise
  identity authority, whose key providers configure independently.  A compromised
  platform can sign request tokens but cannot mint an enterprise or forge its grant, and
  every provider checks the grant itself (:func:`check_request_against_grant`).
* **Exact field match.**  A provider serves exactly the fields in the request token —
  never more (the platform did not authorize them), never fewer (the platform's record of
  uses must equal what was read).
* **Stateless.**  Replay of ``jti``/request ids and revocation of grants are state; the
  callers' stores decide them.  Never key a replay store on the token string: ECDSA
  signatures are malleable, ``jti`` is not.  The one cache is opt-in and holds no state:
  :class:`GrantVerifier` remembers that the *signatures* of an exact grant token verified
  (keyed by the token's SHA-256) and re-runs every clock-dependent check on each call.
"""

from __future__ import annotations

from veil.tokens._jws import unverified_kid
from veil.tokens.assertions import (
    ClientAssertion,
    make_client_assertion,
    peek_client_assertion,
    verify_client_assertion,
)
from veil.tokens.cache import GrantVerifier
from veil.tokens.checks import check_request_against_grant
from veil.tokens.constants import (
    ALGORITHMS,
    CLOCK_SKEW_S,
    DEFAULT_ASSERTION_LIFETIME_S,
    DEFAULT_CERTIFICATE_LIFETIME_S,
    DEFAULT_EIA_ISSUER,
    MAX_ASSERTION_LIFETIME_S,
    MAX_REQUEST_TOKEN_LIFETIME_S,
    MAX_TOKEN_CHARS,
    MIN_JTI_CHARS,
    PLATFORM_ISSUER,
    PURPOSES,
    REVOCATION_LIFETIME_S,
    TYP_CLIENT_ASSERTION,
    TYP_EIA_CERT,
    TYP_GRANT,
    TYP_REQUEST,
    TYP_REVOCATION,
    USES,
    gateway_audience,
)
from veil.tokens.eia import (
    EnterpriseCertificate,
    issue_enterprise_certificate,
    verify_enterprise_certificate,
)
from veil.tokens.grants import (
    Grant,
    Revocation,
    sign_grant,
    sign_revocation,
    verify_grant,
    verify_revocation,
)
from veil.tokens.keys import KeySet, SigningKey, VerifyingKey, jwk_thumbprint
from veil.tokens.request_tokens import RequestClaims, issue_request_token, verify_request_token
from veil.tokens.results import sign_result, verify_result

__all__ = [
    "ALGORITHMS",
    "CLOCK_SKEW_S",
    "DEFAULT_ASSERTION_LIFETIME_S",
    "DEFAULT_CERTIFICATE_LIFETIME_S",
    "DEFAULT_EIA_ISSUER",
    "MAX_ASSERTION_LIFETIME_S",
    "MAX_REQUEST_TOKEN_LIFETIME_S",
    "MAX_TOKEN_CHARS",
    "MIN_JTI_CHARS",
    "PLATFORM_ISSUER",
    "PURPOSES",
    "REVOCATION_LIFETIME_S",
    "TYP_CLIENT_ASSERTION",
    "TYP_EIA_CERT",
    "TYP_GRANT",
    "TYP_REQUEST",
    "TYP_REVOCATION",
    "USES",
    "ClientAssertion",
    "EnterpriseCertificate",
    "Grant",
    "GrantVerifier",
    "KeySet",
    "RequestClaims",
    "Revocation",
    "SigningKey",
    "VerifyingKey",
    "check_request_against_grant",
    "gateway_audience",
    "issue_enterprise_certificate",
    "issue_request_token",
    "jwk_thumbprint",
    "make_client_assertion",
    "peek_client_assertion",
    "sign_grant",
    "sign_result",
    "sign_revocation",
    "unverified_kid",
    "verify_client_assertion",
    "verify_enterprise_certificate",
    "verify_grant",
    "verify_request_token",
    "verify_result",
    "verify_revocation",
]
