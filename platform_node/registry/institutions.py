"""The registry of access institutions (接入机构): identity, keys, onboarding state, quotas.

An institution is admitted step by step, each step decided by a named person and kept in
its history::

    applied ──▶ assessed ──▶ active ◀──▶ suspended
       │           │           │            │
       └───────────┴───────────┴────────────┴──▶ revoked (terminal)

``assessed`` means the security assessment was passed; only ``active`` institutions may
call (:meth:`InstitutionRegistry.require_active`).  Institution ids look like DNS labels
and can never be a valid USCC: the gateway tells an institution's client assertion from
an enterprise's by whether ``iss`` is a USCC, so an institution id that is one would let
it pass for an enterprise (or the other way round).

Keys are public JWKs (EdDSA or ES256) with a ``kid`` unique per institution; one public
key belongs to one institution only (a shared key would let one institution speak for
another).  Private members are refused by :meth:`veil.tokens.VerifyingKey.from_jwk`.
"""

from __future__ import annotations

import builtins
import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from platform_node.registry import _checks, quota
from platform_node.registry.schema import (
    create_schema,
    institution_history,
    institution_keys,
    institutions,
    record_event,
    utc_now,
    write_tx,
)
from veil.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from veil.tokens import KeySet, VerifyingKey
from veil.uscc import is_valid_uscc

__all__ = [
    "INSTITUTION_TYPES",
    "STATES",
    "TRANSITIONS",
    "Institution",
    "InstitutionRegistry",
    "StateChange",
]

INSTITUTION_TYPES: Final = ("bank", "insurer", "guarantor", "credit_service")
STATES: Final = ("applied", "assessed", "active", "suspended", "revoked")
TRANSITIONS: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        ("applied", "assessed"),
        ("assessed", "active"),
        ("active", "suspended"),
        ("suspended", "active"),
    }
    | {(s, "revoked") for s in STATES if s != "revoked"}
)
"""Allowed (from, to) state changes; anything else is refused."""

JWKS = dict[str, list[dict[str, str]]]
"""A published key set ``{"keys": [public JWK, ...]}``."""

ID_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])")
"""A DNS label of 2-63 characters: lower-case letters, digits, inner hyphens."""


@dataclass(frozen=True)
class Institution:
    id: str
    name: str
    type: str
    state: str
    purposes: tuple[str, ...]
    daily_quota: int
    keys: tuple[dict[str, str], ...]
    created_at: dt.datetime

    def jwks(self) -> JWKS:
        return {"keys": [dict(k) for k in self.keys]}


@dataclass(frozen=True)
class StateChange:
    """One step of an institution's history (``from_state`` None for registration)."""

    institution: str
    from_state: str | None
    to_state: str
    decided_by: str
    reason: str
    at: dt.datetime


def check_institution_id(value: object) -> str:
    """A well-formed institution id that is not a USCC, or :class:`InvalidArgument`."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise InvalidArgument(
            "institution id must be 2-63 characters a-z 0-9 '-', not starting or ending "
            "with '-' (a DNS label)"
        )
    if is_valid_uscc(value) or is_valid_uscc(value.upper()):
        raise InvalidArgument(
            f"institution id {value!r} is a valid USCC; institution ids must never be "
            "mistakable for an enterprise"
        )
    return value


def _purposes(value: object) -> tuple[str, ...]:
    out = _checks.names(value, "purposes")
    if not out:
        raise InvalidArgument("purposes must not be empty")
    for p in out:
        _checks.purpose(p)
    return out


class InstitutionRegistry:
    """Access institutions in the database behind ``engine`` (tables created if missing)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine)

    # --- reads ---

    def get(self, institution_id: str) -> Institution:
        """The institution, or :class:`~veil.errors.NotFound` naming the id."""
        with self.engine.connect() as conn:
            return self._load(conn, institution_id)

    def list(self) -> list[Institution]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(institutions).order_by(institutions.c.id)).all()
            keys = self._keys(conn, None)
        return [self._build(r, keys.get(r.id, ())) for r in rows]

    def jwks(self, institution_id: str) -> JWKS:
        """The institution's public keys as a JWKS ``{"keys": [...]}``."""
        return self.get(institution_id).jwks()

    def keyset(self, institution_id: str) -> KeySet:
        """The institution's public keys, ready for a verifier."""
        return KeySet.from_jwks(self.jwks(institution_id), label=f"keys of {institution_id}")

    def history(self, institution_id: str) -> builtins.list[StateChange]:
        """Every state change of the institution, oldest first (registration included)."""
        with self.engine.connect() as conn:
            self._row(conn, institution_id)
            rows = conn.execute(
                select(institution_history)
                .where(institution_history.c.institution_id == institution_id)
                .order_by(institution_history.c.seq)
            ).all()
        return [
            StateChange(
                institution=r.institution_id,
                from_state=r.from_state,
                to_state=r.to_state,
                decided_by=r.decided_by,
                reason=r.reason,
                at=r.at,
            )
            for r in rows
        ]

    def require_active(self, institution_id: str, purpose: str | None = None) -> None:
        """Return if the institution may call now (for ``purpose``, when given).

        :class:`~veil.errors.PermissionDenied` naming the state when it is not active, or
        naming the purpose when that is not among the institution's allowed purposes;
        :class:`~veil.errors.NotFound` when there is no such institution.  Runs on every
        forwarded call, so it reads the one row and not the keys.
        """
        with self.engine.connect() as conn:
            row = self._row(conn, institution_id)
        if row.state != "active":
            raise PermissionDenied(
                f"institution {row.id!r} is {row.state}, not active",
                details={"institution": row.id, "state": row.state},
            )
        if purpose is not None and purpose not in row.purposes:
            raise PermissionDenied(
                f"purpose {str(purpose)[:40]!r} is not allowed for institution {row.id!r} "
                f"(allowed: {', '.join(row.purposes)})",
                details={"institution": row.id, "purpose": str(purpose)[:64]},
            )

    # --- mutations ---

    def register(
        self,
        id: str,
        name: str,
        type: str,
        purposes: Sequence[str],
        daily_quota: int,
        decided_by: str,
        now: dt.datetime | None = None,
        reason: str = "registered",
    ) -> Institution:
        """Register an institution in state ``applied``; AlreadyExists if the id is taken."""
        check_institution_id(id)
        _checks.text(name, "institution name")
        if type not in INSTITUTION_TYPES:
            raise InvalidArgument(
                f"institution type {str(type)[:32]!r} is not one of {', '.join(INSTITUTION_TYPES)}"
            )
        chosen = _purposes(purposes)
        _checks.positive_int(daily_quota, "daily_quota", minimum=0)
        _checks.text(decided_by, "decided_by")
        _checks.text(reason, "reason")
        at = utc_now(now)
        try:
            with write_tx(self.engine) as conn:
                if conn.execute(select(institutions.c.id).where(institutions.c.id == id)).first():
                    raise AlreadyExists(f"institution {id!r} is already registered")
                conn.execute(
                    insert(institutions).values(
                        id=id,
                        name=name,
                        type=type,
                        state="applied",
                        purposes=list(chosen),
                        daily_quota=daily_quota,
                        created_at=at,
                        updated_at=at,
                    )
                )
                self._history(conn, id, None, "applied", decided_by, reason, at)
                record_event(
                    conn,
                    at=at,
                    actor=decided_by,
                    action="institution.register",
                    object_type="institution",
                    object_id=id,
                    detail={
                        "name": name,
                        "type": type,
                        "purposes": list(chosen),
                        "daily_quota": daily_quota,
                    },
                )
                return self._load(conn, id)
        except IntegrityError:  # a concurrent registration of the same id won
            raise AlreadyExists(f"institution {id!r} is already registered") from None

    def set_state(
        self,
        id: str,
        new_state: str,
        decided_by: str,
        reason: str,
        now: dt.datetime | None = None,
    ) -> Institution:
        """Move the institution to ``new_state`` if :data:`TRANSITIONS` allows it.

        :class:`~veil.errors.FailedPrecondition` naming from and to otherwise (also for
        a change to the current state, and for anything after ``revoked``).
        """
        if new_state not in STATES:
            raise InvalidArgument(
                f"state {str(new_state)[:32]!r} is not one of {', '.join(STATES)}"
            )
        _checks.text(decided_by, "decided_by")
        _checks.text(reason, "reason", max_len=2000)
        at = utc_now(now)
        with write_tx(self.engine) as conn:
            current = self._row(conn, id, lock=True).state
            if (current, new_state) not in TRANSITIONS:
                raise FailedPrecondition(
                    f"institution {id!r} cannot go from {current} to {new_state}",
                    details={"institution": id, "from": current, "to": new_state},
                )
            conn.execute(
                update(institutions)
                .where(institutions.c.id == id)
                .values(state=new_state, updated_at=at)
            )
            self._history(conn, id, current, new_state, decided_by, reason, at)
            record_event(
                conn,
                at=at,
                actor=decided_by,
                action="institution.state",
                object_type="institution",
                object_id=id,
                detail={"from": current, "to": new_state, "reason": reason},
            )
            return self._load(conn, id)

    def update(
        self,
        id: str,
        *,
        decided_by: str,
        name: str | None = None,
        purposes: Sequence[str] | None = None,
        daily_quota: int | None = None,
        now: dt.datetime | None = None,
        reason: str | None = None,
    ) -> Institution:
        """Change the name, allowed purposes or daily quota (the state has its own path).

        Recorded (who, when, each value before and after, and ``reason`` when given).
        """
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = _checks.text(name, "institution name")
        if purposes is not None:
            changes["purposes"] = list(_purposes(purposes))
        if daily_quota is not None:
            changes["daily_quota"] = _checks.positive_int(daily_quota, "daily_quota", minimum=0)
        if not changes:
            raise InvalidArgument("nothing to update: give name, purposes or daily_quota")
        _checks.text(decided_by, "decided_by")
        if reason is not None:
            _checks.text(reason, "reason")
        at = utc_now(now)
        with write_tx(self.engine) as conn:
            before = self._row(conn, id, lock=True)
            if before.state == "revoked":
                raise FailedPrecondition(f"institution {id!r} is revoked; it cannot change")
            conn.execute(
                update(institutions).where(institutions.c.id == id).values(**changes, updated_at=at)
            )
            record_event(
                conn,
                at=at,
                actor=decided_by,
                action="institution.update",
                object_type="institution",
                object_id=id,
                detail={
                    **{k: {"from": getattr(before, k), "to": v} for k, v in changes.items()},
                    **({"reason": reason} if reason is not None else {}),
                },
            )
            return self._load(conn, id)

    def add_key(
        self,
        id: str,
        jwk: Mapping[str, Any],
        decided_by: str,
        now: dt.datetime | None = None,
    ) -> Institution:
        """Add a public signing key (EdDSA or ES256, with a ``kid`` new to the institution).

        Refused: private members, other key types, a missing ``kid``
        (:class:`~veil.errors.InvalidJWK`); a ``kid`` the institution already has, or a
        key already registered to any institution (:class:`~veil.errors.AlreadyExists`);
        a revoked institution (:class:`~veil.errors.FailedPrecondition`).
        """
        key = VerifyingKey.from_jwk(jwk)  # InvalidJWK for private/unsupported/kid-less keys
        public = key.to_jwk()
        thumbprint = key.thumbprint()
        _checks.text(decided_by, "decided_by")
        at = utc_now(now)
        try:
            with write_tx(self.engine) as conn:
                if self._row(conn, id, lock=True).state == "revoked":
                    raise FailedPrecondition(f"institution {id!r} is revoked; no keys can be added")
                self._check_new_key(conn, id, key.kid, thumbprint)
                conn.execute(
                    insert(institution_keys).values(
                        institution_id=id,
                        kid=key.kid,
                        thumbprint=thumbprint,
                        jwk=public,
                        added_at=at,
                    )
                )
                record_event(
                    conn,
                    at=at,
                    actor=decided_by,
                    action="institution.key.add",
                    object_type="institution",
                    object_id=id,
                    detail={"kid": key.kid, "alg": key.alg, "thumbprint": thumbprint},
                )
                return self._load(conn, id)
        except IntegrityError:  # a concurrent add of the same kid or key won
            raise AlreadyExists(
                f"institution {id!r} already has key {key.kid!r}, or the key is registered"
            ) from None

    def remove_key(
        self, id: str, kid: str, decided_by: str, now: dt.datetime | None = None
    ) -> Institution:
        """Remove key ``kid``; :class:`~veil.errors.NotFound` if the institution lacks it."""
        _checks.text(decided_by, "decided_by")
        at = utc_now(now)
        with write_tx(self.engine) as conn:
            self._row(conn, id, lock=True)
            result = conn.execute(
                delete(institution_keys).where(
                    institution_keys.c.institution_id == id, institution_keys.c.kid == kid
                )
            )
            if result.rowcount != 1:
                raise NotFound(f"institution {id!r} has no key {str(kid)[:128]!r}")
            record_event(
                conn,
                at=at,
                actor=decided_by,
                action="institution.key.remove",
                object_type="institution",
                object_id=id,
                detail={"kid": kid},
            )
            return self._load(conn, id)

    # --- quotas ---

    def consume_quota(
        self,
        institution_id: str,
        now: dt.datetime | None = None,
        cost: int = 1,
        conn: Connection | None = None,
    ) -> int:
        """Consume ``cost`` of the institution's quota for the UTC day of ``now``, in a
        transaction of its own or in a savepoint on ``conn`` (a refusal then leaves the
        caller's transaction usable).

        Returns what remains today.  :class:`~veil.errors.ResourceExhausted` (details
        ``institution``, ``limit``, ``day``) when it would exceed the quota; nothing is
        consumed then.  Atomic under any concurrency (see :mod:`.quota`).
        """
        _checks.positive_int(cost, "cost")
        at = utc_now(now)
        if conn is None:
            with write_tx(self.engine) as own:
                return quota.consume(own, institution_id, at, cost)
        with conn.begin_nested():
            return quota.consume(conn, institution_id, at, cost)

    def quota_remaining(self, institution_id: str, now: dt.datetime | None = None) -> int:
        """What remains of the institution's quota for the UTC day of ``now``."""
        at = utc_now(now)
        with self.engine.connect() as conn:
            limit = self._row(conn, institution_id).daily_quota
            return max(0, int(limit) - quota.used_on(conn, institution_id, at.date()))

    # --- internals ---

    def _row(self, conn: Connection, institution_id: str, *, lock: bool = False) -> Row[Any]:
        row = conn.execute(_ROW_LOCKED if lock else _ROW, {"i_id": institution_id}).first()
        if row is None:
            raise NotFound(f"no institution {str(institution_id)[:63]!r}")
        return row

    def _keys(
        self, conn: Connection, institution_id: str | None
    ) -> dict[str, tuple[dict[str, str], ...]]:
        query = select(institution_keys).order_by(
            institution_keys.c.institution_id, institution_keys.c.added_at, institution_keys.c.kid
        )
        if institution_id is not None:
            query = query.where(institution_keys.c.institution_id == institution_id)
        out: dict[str, list[dict[str, str]]] = {}
        for r in conn.execute(query):
            out.setdefault(r.institution_id, []).append(dict(r.jwk))
        return {k: tuple(v) for k, v in out.items()}

    def _load(self, conn: Connection, institution_id: str) -> Institution:
        row = self._row(conn, institution_id)
        return self._build(row, self._keys(conn, institution_id).get(institution_id, ()))

    @staticmethod
    def _build(row: Row[Any], keys: tuple[dict[str, str], ...]) -> Institution:
        return Institution(
            id=row.id,
            name=row.name,
            type=row.type,
            state=row.state,
            purposes=tuple(row.purposes),
            daily_quota=int(row.daily_quota),
            keys=keys,
            created_at=row.created_at,
        )

    @staticmethod
    def _check_new_key(conn: Connection, id: str, kid: str, thumbprint: str) -> None:
        same_kid = conn.execute(
            select(institution_keys.c.kid).where(
                institution_keys.c.institution_id == id, institution_keys.c.kid == kid
            )
        ).first()
        if same_kid:
            raise AlreadyExists(f"institution {id!r} already has a key with kid {kid!r}")
        owner = conn.execute(
            select(institution_keys.c.institution_id).where(
                institution_keys.c.thumbprint == thumbprint
            )
        ).scalar_one_or_none()
        if owner is not None:
            whose = "this institution" if owner == id else "another institution"
            raise AlreadyExists(f"key {kid!r} is already registered to {whose}")

    @staticmethod
    def _history(
        conn: Connection,
        id: str,
        from_state: str | None,
        to_state: str,
        decided_by: str,
        reason: str,
        at: dt.datetime,
    ) -> None:
        conn.execute(
            insert(institution_history).values(
                institution_id=id,
                from_state=from_state,
                to_state=to_state,
                decided_by=decided_by,
                reason=reason,
                at=at,
            )
        )


# Built once (SQLAlchemy reuses the compiled form): the row is read on every request.
_ROW = select(institutions).where(institutions.c.id == bindparam("i_id"))
# FOR NO KEY UPDATE: still lets grants and letters reference the row meanwhile.
_ROW_LOCKED = _ROW.with_for_update(key_share=True)
