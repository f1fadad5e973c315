"""The one place tokens are signed and their signatures checked (with pyjwt).

Verification is a fixed pipeline, the same for every token kind:

1. size and shape (three base64url segments, at most ``MAX_TOKEN_CHARS``; an empty
   signature gets as far as the ``alg`` check, which refuses ``none``);
2. header: strict JSON (duplicate names refused, so no two parsers can read different
   values), ``alg`` ∈ {EdDSA, ES256}, ``typ`` exactly the expected kind, only the header
   parameters this kind uses (no ``jku``/``jwk``/``x5u``/``crit`` …), a well-formed ``kid``;
3. the caller resolves the key from what it trusts (never from the token);
4. the algorithm is the *key's*: a header ``alg`` that differs is refused before pyjwt
   runs, and pyjwt is told to accept that algorithm only;
5. pyjwt checks the signature; the payload is parsed with the same strict JSON.

Claims are checked afterwards by the caller, with messages naming the failed claim.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import jwt

from veil.errors import (
    BadSignature,
    DisallowedAlgorithm,
    ExpiredToken,
    InvalidToken,
    LifetimeTooLong,
    NotYetValid,
    WrongTokenType,
)
from veil.tokens.constants import (
    ALGORITHMS,
    CLOCK_SKEW_S,
    MAX_TOKEN_CHARS,
    TYP_CLIENT_ASSERTION,
    TYP_EIA_CERT,
    TYP_GRANT,
    TYP_REQUEST,
    TYP_RESULT,
    TYP_REVOCATION,
)
from veil.tokens.keys import KID_RE, SigningKey, VerifyingKey

KIND: dict[str, str] = {
    TYP_EIA_CERT: "enterprise key certificate",
    TYP_CLIENT_ASSERTION: "client assertion",
    TYP_GRANT: "grant",
    TYP_REVOCATION: "revocation",
    TYP_REQUEST: "request token",
    TYP_RESULT: "signed result",
}

_BASE_HEADER = frozenset({"alg", "typ", "kid"})
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]*")
_JWS = jwt.PyJWS(algorithms=list(ALGORITHMS))


def show(value: object, limit: int = 40) -> str:
    """A short, quoted rendering of an untrusted value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clock(now: float | None) -> float:
    """The verifier's time: ``now`` when the caller pins it, else the system clock."""
    return time.time() if now is None else float(now)


def issue_time(now: float | None) -> int:
    """An integer NumericDate for ``iat`` (the caller's ``now`` or the system clock)."""
    return int(time.time() if now is None else now)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate member {key[:40]!r}")
        out[key] = value
    return out


def strict_json(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object, refusing duplicate names, NaN/Infinity and non-objects."""
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_object,
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidToken(f"{what} is not valid JSON: {str(exc)[:80]}") from None
    if not isinstance(value, dict):
        raise InvalidToken(f"{what} is not a JSON object")
    return value


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def unverified_kid(token: str) -> str | None:
    """The ``kid`` string of a compact JWS's header, read before anything is checked (only
    to choose the key to verify it with), or ``None`` if it has none."""
    try:
        header = json.loads(b64decode(token.split(".", 1)[0]))
        kid = header["kid"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return kid if isinstance(kid, str) else None


def sign(
    key: SigningKey,
    typ: str,
    claims: Mapping[str, Any],
    extra_headers: Mapping[str, str] | None = None,
) -> str:
    """A compact JWS of ``claims`` with header ``alg`` (the key's), ``typ`` and ``kid``."""
    payload = json.dumps(dict(claims), separators=(",", ":"), ensure_ascii=False)
    headers = {"typ": typ, "kid": key.kid, **(extra_headers or {})}
    return _JWS.encode(
        payload.encode("utf-8"),
        key._private,
        algorithm=key.alg,
        headers=headers,
    )


def read_header(token: object, typ: str, *, extra: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Check shape, ``alg`` and ``typ``; return the (not yet verified) header.

    ``extra`` names header parameters this kind may carry beyond ``alg``/``typ``/``kid``.
    """
    kind = KIND[typ]
    if not isinstance(token, str):
        raise InvalidToken(f"{kind} must be a string")
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken(f"{kind} is longer than {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT_RE.fullmatch(p) for p in parts):
        raise InvalidToken(f"{kind} is not a compact JWS (three base64url segments)")
    try:
        header_bytes = b64decode(parts[0])
    except (binascii.Error, ValueError):
        raise InvalidToken(f"{kind} header is not base64url") from None
    header = strict_json(header_bytes, f"{kind} header")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise DisallowedAlgorithm(
            f"{kind} alg {show(alg)} is not allowed; only {' and '.join(ALGORITHMS)}"
        )
    if header.get("typ") != typ:
        got = header.get("typ")
        other = KIND.get(got) if isinstance(got, str) else None
        raise WrongTokenType(
            f"expected a {kind} (typ {typ!r}), got typ {show(got)}"
            + (f" (a {other})" if other else "")
        )
    unexpected = sorted(set(header) - _BASE_HEADER - extra)
    if unexpected:
        raise InvalidToken(f"{kind} header has unexpected parameters {show(unexpected, 80)}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not KID_RE.fullmatch(kid):
        raise InvalidToken(f"{kind} header kid is missing or malformed")
    return header


def verify_signature(
    token: str, header: Mapping[str, Any], key: VerifyingKey, typ: str
) -> dict[str, Any]:
    """Check the signature with ``key`` (and only its algorithm); return the claims."""
    kind = KIND[typ]
    if header["alg"] != key.alg:
        raise DisallowedAlgorithm(
            f"{kind} alg {show(header['alg'])} does not match key {key.kid!r} ({key.alg})"
        )
    try:
        decoded = _JWS.decode_complete(token, key.key, algorithms=[key.alg])
    except jwt.InvalidSignatureError:
        raise BadSignature(f"{kind} signature does not verify with key {key.kid!r}") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"{kind} is malformed: {str(exc)[:80]}") from None
    return strict_json(decoded["payload"], f"{kind} payload")


def claim_str(claims: Mapping[str, Any], name: str, typ: str, *, max_len: int = 256) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidToken(
            f"{KIND[typ]} claim {name!r} must be a non-empty string of at most {max_len} chars"
        )
    return value


def claim_int(claims: Mapping[str, Any], name: str, typ: str) -> int:
    """An integer NumericDate claim (booleans, floats and strings are refused)."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToken(f"{KIND[typ]} claim {name!r} must be an integer NumericDate")
    return value


def claim_str_list(claims: Mapping[str, Any], name: str, typ: str) -> tuple[str, ...]:
    value = claims.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidToken(f"{KIND[typ]} claim {name!r} must be a list of strings")
    return tuple(value)


def check_times(
    claims: Mapping[str, Any],
    typ: str,
    now: float | None,
    *,
    max_lifetime: int | None = None,
    subject: str = "",
) -> tuple[int, int]:
    """Check ``iat``/``exp`` (and ``nbf`` when present) at ``now``; return ``(iat, exp)``.

    ``now`` is None to skip the clock checks (the structural ones always run).  With
    ``CLOCK_SKEW_S`` = s: refused when ``iat > now + s`` or ``nbf > now + s`` (issued or
    valid only in the future) and when ``now >= exp + s`` (expired).
    """
    kind = KIND[typ] + (f" for {subject}" if subject else "")
    iat = claim_int(claims, "iat", typ)
    exp = claim_int(claims, "exp", typ)
    if exp <= iat:
        raise InvalidToken(f"{kind} exp ({exp}) is not after iat ({iat})")
    if max_lifetime is not None and exp - iat > max_lifetime:
        raise LifetimeTooLong(
            f"{kind} lifetime exp - iat = {exp - iat} s exceeds the maximum {max_lifetime} s"
        )
    if now is None:
        return iat, exp
    if iat > now + CLOCK_SKEW_S:
        raise NotYetValid(
            f"{kind} iat is {iat - now:.0f} s in the future, beyond the "
            f"{CLOCK_SKEW_S} s clock-skew allowance"
        )
    if "nbf" in claims:
        nbf = claim_int(claims, "nbf", typ)
        if nbf > now + CLOCK_SKEW_S:
            raise NotYetValid(f"{kind} is not valid before {nbf} (now {now:.0f})")
    if now >= exp + CLOCK_SKEW_S:
        raise ExpiredToken(f"{kind} expired at {exp} (now {now:.0f}, skew {CLOCK_SKEW_S} s)")
    return iat, exp


def unverified_claims(token: str, typ: str) -> dict[str, Any]:
    """The payload *before* its signature is checked, after :func:`read_header`.

    Only for choosing which key to verify with (a client assertion's issuer); nothing
    read here is trusted until :func:`verify_signature` returns the same claims.
    """
    try:
        data = b64decode(token.split(".")[1])
    except (binascii.Error, ValueError):
        raise InvalidToken(f"{KIND[typ]} payload is not base64url") from None
    return strict_json(data, f"{KIND[typ]} payload")
