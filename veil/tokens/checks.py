"""The provider's decisive check: does this request token fall within this grant?

Both inputs must already be verified (:func:`verify_request_token`,
:func:`verify_grant`).  The request token is only the platform's word; the grant is the
enterprise's signature.  A compromised platform can sign any request token, so every
property the enterprise decided is re-checked here against the grant:

* the fields asked of the provider are *exactly* the token's fields — not a subset, not a
  superset.  A superset would read fields the platform never authorized; a subset would
  let one token be reused for a different query than the one the platform checked and
  recorded, so the platform's record of uses would no longer match what was read;
* the token's fields ⊆ the grant's fields, its use ∈ the grant's uses;
* the same purpose and loan reference (purpose limitation);
* the same grant id, enterprise and institution (a grant for another pair proves nothing);
* the grant window contains now.

Not checked here, because it is state: whether the grant was revoked (the provider's
revocation store, keyed by ``(uscc, grant_id)``) and whether ``request_id`` was seen
before (its replay store).  Catalog classification (``verification_only`` fields never
leave as values, public fields need no grant) is the provider's catalog logic.
"""

from __future__ import annotations

from collections.abc import Iterable

from veil.errors import (
    GrantMismatch,
    InvalidArgument,
    PurposeMismatch,
    RequestFieldsMismatch,
    ScopeExceeded,
    UseNotGranted,
)
from veil.tokens.grants import Grant
from veil.tokens.request_tokens import RequestClaims

__all__ = ["check_request_against_grant"]


def _names(fields: Iterable[str]) -> str:
    return ", ".join(sorted(fields))


def check_request_against_grant(
    claims: RequestClaims,
    grant: Grant,
    *,
    requested_fields: Iterable[str],
    now: float | None = None,
) -> None:
    """Raise the specific :class:`~veil.errors.AuthorizationError` for the first mismatch.

    ``requested_fields`` are the fields the incoming request actually asks for.
    """
    if isinstance(requested_fields, str):
        raise InvalidArgument("requested_fields must be a collection of field ids, not a string")
    asked = set(requested_fields)
    in_token = set(claims.fields)
    if asked != in_token:
        parts = []
        if asked - in_token:
            parts.append(f"asked but not in the request token: {_names(asked - in_token)}")
        if in_token - asked:
            parts.append(f"in the request token but not asked: {_names(in_token - asked)}")
        raise RequestFieldsMismatch("; ".join(parts))
    if claims.grant_id is None:
        raise GrantMismatch("request token names no grant")
    if claims.grant_id != grant.grant_id:
        raise GrantMismatch(
            f"request token is for grant {claims.grant_id}, not grant {grant.grant_id}"
        )
    if claims.uscc != grant.uscc:
        raise GrantMismatch(
            f"request token is for enterprise {claims.uscc}, grant {grant.grant_id} "
            f"is from {grant.uscc}"
        )
    if claims.institution != grant.institution:
        raise GrantMismatch(
            f"request token is for institution {claims.institution!r}, grant "
            f"{grant.grant_id} is to {grant.institution!r}"
        )
    grant.check_active(now)
    not_granted = in_token - set(grant.fields)
    if not_granted:
        raise ScopeExceeded(f"grant {grant.grant_id} does not cover {_names(not_granted)}")
    if claims.use not in grant.uses:
        raise UseNotGranted(
            f"use {claims.use!r} is not granted by {grant.grant_id} "
            f"(granted: {', '.join(grant.uses)})"
        )
    if claims.purpose != grant.purpose:
        raise PurposeMismatch(
            f"purpose {claims.purpose!r} is not grant {grant.grant_id}'s {grant.purpose!r}"
        )
    if claims.loan_ref != grant.loan_ref:
        raise PurposeMismatch(
            f"loan_ref {claims.loan_ref!r} is not grant {grant.grant_id}'s {grant.loan_ref!r}"
        )
