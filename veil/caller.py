"""The authenticated end caller (institution or enterprise), as the gateway forwards it.

The gateway verifies a caller's client assertion and forwards who it was in request
metadata; the platform accepts that metadata only from a peer whose certificate says
``veil://gateway/…``, and itself consumes the assertion's ``jti`` so that a replayed
assertion is refused even across several gateway replicas.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from veil.errors import Unauthenticated

CallerKind = Literal["institution", "enterprise"]
KINDS: tuple[CallerKind, ...] = ("institution", "enterprise")

KIND_KEY = "veil-caller-kind"
SUBJECT_KEY = "veil-caller-subject"
JTI_KEY = "veil-caller-jti"
EXPIRES_KEY = "veil-caller-exp"


@dataclass(frozen=True)
class Caller:
    kind: CallerKind
    subject: str  # institution id, or the enterprise's USCC
    jti: str
    expires: int  # Unix seconds; the assertion's exp

    @property
    def namespace(self) -> str:
        return f"{self.kind}:{self.subject}"

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            (KIND_KEY, self.kind),
            (SUBJECT_KEY, self.subject),
            (JTI_KEY, self.jti),
            (EXPIRES_KEY, str(self.expires)),
        )


current_caller: ContextVar[Caller | None] = ContextVar("veil_current_caller", default=None)


def caller_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller | None:
    """The forwarded caller, or None when the metadata carries none."""
    values = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in metadata or ()}
    if KIND_KEY not in values:
        return None
    kind = values[KIND_KEY]
    if kind not in KINDS:
        raise Unauthenticated(f"unknown caller kind {kind!r}")
    try:
        expires = int(values[EXPIRES_KEY])
        subject, jti = values[SUBJECT_KEY], values[JTI_KEY]
    except (KeyError, ValueError):
        raise Unauthenticated("incomplete caller metadata") from None
    if not subject or not jti:
        raise Unauthenticated("incomplete caller metadata")
    return Caller(kind=kind, subject=subject, jti=jti, expires=expires)


def forwarded_caller(kind: str, subject: str, jti: str, expires: int) -> Caller:
    """A caller the gateway forwarded in a message (a coalesced call's item), checked as
    :func:`caller_from_metadata` checks metadata."""
    values = {KIND_KEY: kind, SUBJECT_KEY: subject, JTI_KEY: jti, EXPIRES_KEY: str(expires)}
    caller = caller_from_metadata(values.items())
    assert caller is not None
    return caller
