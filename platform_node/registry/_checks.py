"""Argument checks shared by the registries (each raises ``InvalidArgument`` naming the value).

Lengths match the column sizes in :mod:`.schema`, so a value that passes is never cut or
refused by the database (PostgreSQL enforces ``VARCHAR(n)``, SQLite would not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from veil.catalog import Classification, load_catalog
from veil.errors import InvalidArgument
from veil.tokens import PURPOSES, USES
from veil.uscc import validate_uscc

SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def text(value: object, what: str, *, max_len: int = 256) -> str:
    """A non-empty printable string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value or len(value) > max_len or not value.isprintable():
        raise InvalidArgument(f"{what} must be a non-empty printable string of ≤ {max_len} chars")
    return value


def uscc(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument("uscc must be a string")
    validate_uscc(value)
    return value


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


def names(value: object, what: str, *, max_len: int = 128) -> tuple[str, ...]:
    """A list of distinct short strings (possibly empty)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{what} must be a list, not a single string")
    out = tuple(value)
    for item in out:
        text(item, f"each of {what}", max_len=max_len)
    if len(set(out)) != len(out):
        raise InvalidArgument(f"{what} lists an entry twice")
    return out


def catalog_fields(value: object, what: str = "fields") -> tuple[str, ...]:
    """A non-empty list of distinct, known catalog field ids."""
    out = names(value, what)
    if not out:
        raise InvalidArgument(f"{what} must not be empty")
    catalog = load_catalog()
    for field_id in out:
        catalog.field(field_id)  # InvalidArgument naming an unknown field
    return out


def verification_only(fields: Sequence[str]) -> list[str]:
    """The fields among ``fields`` whose values may never leave a provider."""
    catalog = load_catalog()
    return sorted(
        f for f in fields if catalog.field(f).classification is Classification.VERIFICATION_ONLY
    )


def sha256_hex(value: object, what: str) -> str:
    """64 hex digits, returned lower-case (the spelling grants carry)."""
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise InvalidArgument(f"{what} must be 64 hex digits (SHA-256)")
    return value.lower()


def positive_int(value: object, what: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{what} must be an integer ≥ {minimum}")
    return value
