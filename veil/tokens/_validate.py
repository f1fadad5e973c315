"""Validation of the values that go into tokens (raising ``InvalidArgument``).

The dataclasses call these in ``__post_init__``, so an invalid grant or request cannot be
built, signed or returned by a verifier (which turns the error into ``InvalidToken``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from veil.errors import InvalidArgument
from veil.tokens.constants import MIN_JTI_CHARS, PURPOSES, USES
from veil.uscc import validate_uscc

FIELD_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")


def text(value: object, what: str, *, max_len: int = 256) -> str:
    """A non-empty printable string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise InvalidArgument(f"{what} must be a non-empty printable string of ≤ {max_len} chars")
    return value


def uscc(value: object, what: str = "uscc") -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string")
    validate_uscc(value)
    return value


def token_id(value: object, what: str) -> str:
    """A unique id (``jti``, request id): at least ``MIN_JTI_CHARS`` characters."""
    if not isinstance(value, str) or len(value) < MIN_JTI_CHARS:
        raise InvalidArgument(f"{what} must be a string of at least {MIN_JTI_CHARS} chars")
    return text(value, what)


def grant_id(value: object, what: str = "grant_id") -> str:
    """A UUID in canonical form (lower-case, hyphenated): one spelling per grant."""
    try:
        canonical = str(uuid.UUID(value)) if isinstance(value, str) else None
    except ValueError:
        canonical = None
    if canonical is None or canonical != value:
        raise InvalidArgument(f"{what} must be a canonical lower-case UUID")
    return value


def numeric_date(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{what} must be a non-negative integer (Unix seconds)")
    return value


def fields(value: object, what: str = "fields") -> tuple[str, ...]:
    """A non-empty tuple of distinct catalog field ids."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{what} must be a list of field ids")
    out = tuple(value)
    if not out:
        raise InvalidArgument(f"{what} must not be empty")
    for item in out:
        if not isinstance(item, str) or not FIELD_RE.fullmatch(item):
            raise InvalidArgument(f"{what} holds a malformed field id {str(item)[:40]!r}")
    if len(set(out)) != len(out):
        raise InvalidArgument(f"{what} lists a field twice")
    return out


def purpose(value: object) -> str:
    if value not in PURPOSES:
        raise InvalidArgument(
            f"purpose {str(value)[:40]!r} is not a financing purpose ({', '.join(PURPOSES)})"
        )
    return str(value)


def use(value: object) -> str:
    if value not in USES:
        raise InvalidArgument(f"use {str(value)[:40]!r} is not one of {', '.join(USES)}")
    return str(value)


def uses(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidArgument("uses must be a list")
    out = tuple(use(u) for u in value)
    if not out or len(set(out)) != len(out):
        raise InvalidArgument(f"uses must be a non-empty list of distinct {', '.join(USES)}")
    return out


def sha256_hex(value: object, what: str) -> str:
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise InvalidArgument(f"{what} must be 64 lower-case hex digits (SHA-256)")
    return value
