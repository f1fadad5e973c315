"""Grants (经企业授权), their uses and revocations, and the written letters they confirm.

The platform keeps every grant as the enterprise signed it (the compact JWS, verbatim):
providers re-verify that signature themselves, so the stored token — not the platform's
copy of its claims — is what ultimately authorizes anything.  The columns beside it are
the verified claims, for look-ups and for the platform's own check
(:meth:`GrantRegistry.authorize`), which mirrors the provider's
:func:`veil.tokens.check_request_against_grant` so that a request the platform lets
through is one the providers will accept.

Revocations are matched on (enterprise, grant id), never on the grant id alone: a grant
id is chosen by the enterprise that signs the grant, so another enterprise could sign a
revocation naming the same id.  Each revocation gets the next number of a counter that
is locked until the revocation commits, so numbers become visible in order and providers
can poll :meth:`GrantRegistry.revocations_after` with the last number they applied
without ever skipping one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jwt
from sqlalchemy import Connection, Engine, Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from platform_node.registry import _checks
from platform_node.registry.institutions import InstitutionRegistry
from platform_node.registry.letters import Letter, confirm_letter, letter_from_row
from platform_node.registry.schema import (
    COUNTER_REVOCATION,
    grant_uses,
    grants,
    letters,
    next_counter,
    record_event,
    utc_now,
    write_tx,
)
from platform_node.registry.schema import (
    institutions as institution_table,
)
from veil.errors import (
    AlreadyExists,
    FailedPrecondition,
    GrantMismatch,
    GrantNotActive,
    InvalidArgument,
    NotFound,
    PurposeMismatch,
    ScopeExceeded,
    UseNotGranted,
    VeilError,
)
from veil.store import insert_if_new
from veil.tokens import (
    CLOCK_SKEW_S,
    Grant,
    KeySet,
    verify_enterprise_certificate,
    verify_grant,
    verify_revocation,
)

__all__ = ["GrantRecord", "GrantRegistry", "GrantUse", "Letter", "RevocationEntry"]

GRANTEES_KEPT = 65_536  # grants whose institution is remembered (then forgotten at once)


@dataclass(frozen=True)
class GrantRecord:
    """A stored grant: the verified claims, its state at the time asked, and the JWS.

    ``state`` is ``revoked``, ``expired`` (now ≥ ``expires``), ``pending`` (now <
    ``not_before``) or ``active``.  Times of the window are Unix seconds, as signed.
    """

    grant_id: str
    uscc: str
    institution: str
    fields: tuple[str, ...]
    uses: tuple[str, ...]
    purpose: str
    loan_ref: str
    not_before: int
    expires: int
    issued_at: int
    letter_sha256: str | None
    state: str
    jws: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    revocation_seq: int | None

    def as_grant(self) -> Grant:
        """The claims as a :class:`veil.tokens.Grant` (for the shared checks)."""
        return Grant(
            grant_id=self.grant_id,
            uscc=self.uscc,
            institution=self.institution,
            fields=self.fields,
            uses=self.uses,
            purpose=self.purpose,
            loan_ref=self.loan_ref,
            not_before=self.not_before,
            expires=self.expires,
            issued_at=self.issued_at,
            letter_sha256=self.letter_sha256,
        )


@dataclass(frozen=True)
class GrantUse:
    """One request made under a grant, as the platform recorded it."""

    grant_id: str
    request_id: str
    institution: str
    fields: tuple[str, ...]
    use: str
    outcome: str
    providers: tuple[str, ...]
    at: dt.datetime


class RevocationEntry(NamedTuple):
    """One revocation for providers to apply: verify ``revocation_jws`` (it carries the
    enterprise's signature) and match it on (``uscc``, ``grant_id``)."""

    seq: int
    uscc: str
    grant_id: str
    revocation_jws: str


def _state(row: Row[Any], t: float) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if t < row.not_before:
        return "pending"
    if t >= row.expires:
        return "expired"
    return "active"


def _record(row: Row[Any], now: dt.datetime) -> GrantRecord:
    return GrantRecord(
        grant_id=row.grant_id,
        uscc=row.uscc,
        institution=row.institution_id,
        fields=tuple(row.fields),
        uses=tuple(row.uses),
        purpose=row.purpose,
        loan_ref=row.loan_ref,
        not_before=int(row.not_before),
        expires=int(row.expires),
        issued_at=int(row.issued_at),
        letter_sha256=row.letter_sha256,
        state=_state(row, now.timestamp()),
        jws=row.jws,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revocation_seq=None if row.revocation_seq is None else int(row.revocation_seq),
    )


class GrantRegistry:
    """Grants, uses, revocations and letters in the database behind ``engine``.

    ``eia_keys`` are the enterprise identity authority's public keys: every grant and
    revocation must be signed by an enterprise key they certified.  ``institutions`` is
    the institution registry on the same database (made from ``engine`` when omitted).
    """

    def __init__(
        self,
        engine: Engine,
        eia_keys: KeySet,
        institutions: InstitutionRegistry | None = None,
    ) -> None:
        self.engine = engine
        self.eia_keys = eia_keys
        # The institution registry on the same database (it creates the schema).
        self.institutions = institutions or InstitutionRegistry(engine)
        # grant id -> its institution, as authorize() read them: a grant is never deleted
        # and its grantee never changes, so a use is recorded without reading it again.
        self._grantees: dict[str, str] = {}

    # --- grants ---

    def create(
        self, grant_jws: str, *, by_enterprise: str, now: dt.datetime | None = None
    ) -> GrantRecord:
        """Verify and store a grant signed by enterprise ``by_enterprise``.

        Checks, in order: the enterprise signature under a currently valid EIA
        certificate, ``iat`` not in the future, not expired (a grant whose window starts
        later is accepted and is ``pending`` until then) — token errors, UNAUTHENTICATED
        or :class:`~veil.errors.GrantNotActive`; signed by ``by_enterprise``
        (:class:`~veil.errors.GrantMismatch`); the institution exists
        (:class:`~veil.errors.NotFound`) and is not revoked; fields known to the catalog,
        and none ``verification_only`` when ``fetch`` is granted
        (:class:`~veil.errors.InvalidArgument`); the grant id is new
        (:class:`~veil.errors.AlreadyExists`); a ``letter_sha256`` names a pending letter
        of this institution for this enterprise that the grant agrees with
        (:class:`~veil.errors.FailedPrecondition`).  All or nothing.
        """
        at = utc_now(now)
        grant = self._verify_new(grant_jws, at.timestamp())
        if grant.uscc != by_enterprise:
            raise GrantMismatch(
                f"grant {grant.grant_id} is signed by enterprise {grant.uscc}, "
                f"not by the caller {str(by_enterprise)[:18]}"
            )
        _checks.catalog_fields(grant.fields)
        if "fetch" in grant.uses:
            secret = _checks.verification_only(grant.fields)
            if secret:
                raise InvalidArgument(
                    f"grant {grant.grant_id} allows fetch of verification-only fields "
                    f"{', '.join(secret)}: their values never leave a provider; grant "
                    "verify or score for them instead"
                )
        actor = f"enterprise:{grant.uscc}"
        try:
            with write_tx(self.engine) as conn:
                self._check_institution(conn, grant.institution)
                if self._row(conn, grant.grant_id) is not None:
                    raise AlreadyExists(f"grant {grant.grant_id} already exists")
                if grant.letter_sha256 is not None:
                    confirm_letter(conn, grant, at)
                    record_event(
                        conn,
                        at=at,
                        actor=actor,
                        action="letter.confirm",
                        object_type="letter",
                        object_id=grant.letter_sha256,
                        detail={
                            "institution": grant.institution,
                            "uscc": grant.uscc,
                            "grant_id": grant.grant_id,
                        },
                    )
                conn.execute(
                    insert(grants).values(
                        grant_id=grant.grant_id,
                        uscc=grant.uscc,
                        institution_id=grant.institution,
                        fields=list(grant.fields),
                        uses=list(grant.uses),
                        purpose=grant.purpose,
                        loan_ref=grant.loan_ref,
                        not_before=grant.not_before,
                        expires=grant.expires,
                        issued_at=grant.issued_at,
                        letter_sha256=grant.letter_sha256,
                        jws=grant_jws,
                        created_at=at,
                    )
                )
                record_event(
                    conn,
                    at=at,
                    actor=actor,
                    action="grant.create",
                    object_type="grant",
                    object_id=grant.grant_id,
                    detail={
                        "uscc": grant.uscc,
                        "institution": grant.institution,
                        "fields": list(grant.fields),
                        "uses": list(grant.uses),
                        "purpose": grant.purpose,
                        "loan_ref": grant.loan_ref,
                        "not_before": grant.not_before,
                        "expires": grant.expires,
                        "letter_sha256": grant.letter_sha256,
                    },
                )
                return self._get(conn, grant.grant_id, at)
        except IntegrityError:  # a concurrent create of the same grant id won
            raise AlreadyExists(f"grant {grant.grant_id} already exists") from None

    def revoke(
        self, revocation_jws: str, *, by_enterprise: str, now: dt.datetime | None = None
    ) -> GrantRecord:
        """Apply an enterprise-signed revocation (fresh, ``at_any_time=False``).

        The grant is found by (the revocation's enterprise, grant id): a revocation of
        another enterprise's grant id finds nothing (:class:`~veil.errors.NotFound`,
        the same answer as for an id that does not exist).  Revoking a revoked grant
        returns it unchanged.
        """
        at = utc_now(now)
        rev = verify_revocation(revocation_jws, self.eia_keys, now=at.timestamp())
        if rev.uscc != by_enterprise:
            raise GrantMismatch(
                f"revocation is signed by enterprise {rev.uscc}, "
                f"not by the caller {str(by_enterprise)[:18]}"
            )
        with write_tx(self.engine) as conn:
            row = conn.execute(
                select(grants)
                .where(grants.c.grant_id == rev.grant_id, grants.c.uscc == rev.uscc)
                .with_for_update(key_share=True)
            ).first()
            if row is None:
                raise NotFound(f"enterprise {rev.uscc} has no grant {rev.grant_id}")
            if row.revoked_at is not None:
                return _record(row, at)
            seq = next_counter(conn, COUNTER_REVOCATION)
            conn.execute(
                update(grants)
                .where(grants.c.grant_id == rev.grant_id)
                .values(revoked_at=at, revocation_seq=seq, revocation_jws=revocation_jws)
            )
            record_event(
                conn,
                at=at,
                actor=f"enterprise:{rev.uscc}",
                action="grant.revoke",
                object_type="grant",
                object_id=rev.grant_id,
                detail={"uscc": rev.uscc, "institution": row.institution_id, "seq": seq},
            )
            return self._get(conn, rev.grant_id, at)

    def revocations_after(self, seq: int, limit: int = 1000) -> list[RevocationEntry]:
        """Revocations numbered above ``seq``, in order, at most ``limit``."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise InvalidArgument("seq must be a non-negative integer")
        _checks.positive_int(limit, "limit")
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    grants.c.revocation_seq,
                    grants.c.uscc,
                    grants.c.grant_id,
                    grants.c.revocation_jws,
                )
                .where(grants.c.revocation_seq > seq)
                .order_by(grants.c.revocation_seq)
                .limit(limit)
            ).all()
        return [RevocationEntry(int(r[0]), r[1], r[2], r[3]) for r in rows]

    def get(self, grant_id: str, now: dt.datetime | None = None) -> GrantRecord:
        """The grant, or :class:`~veil.errors.NotFound`."""
        at = utc_now(now)
        with self.engine.connect() as conn:
            return self._get(conn, grant_id, at)

    def for_enterprise(self, uscc: str, now: dt.datetime | None = None) -> list[GrantRecord]:
        """Every grant the enterprise made, oldest first."""
        return self._list(grants.c.uscc == uscc, now)

    def for_institution(
        self, institution_id: str, now: dt.datetime | None = None
    ) -> list[GrantRecord]:
        """Every grant made to the institution, oldest first."""
        return self._list(grants.c.institution_id == institution_id, now)

    def authorize(
        self,
        *,
        grant_id: str,
        uscc: str,
        institution: str,
        fields: Sequence[str],
        use: str,
        purpose: str,
        loan_ref: str,
        now: dt.datetime | None = None,
    ) -> GrantRecord:
        """The platform's check of one request against its grant; the grant if it passes.

        Raises, for the first failing check: :class:`~veil.errors.NotFound` (no such
        grant); :class:`~veil.errors.GrantMismatch` (another enterprise or institution);
        :class:`~veil.errors.GrantNotActive` (revoked, or outside its window with the
        providers' clock-skew allowance); :class:`~veil.errors.ScopeExceeded` naming the
        fields the grant does not cover (or verification-only fields asked for fetch);
        :class:`~veil.errors.UseNotGranted`; :class:`~veil.errors.PurposeMismatch`
        (purpose or loan reference).
        """
        asked = _checks.catalog_fields(fields)
        _checks.use(use)
        at = utc_now(now)
        record = self.get(grant_id, at)
        if len(self._grantees) >= GRANTEES_KEPT:
            self._grantees.clear()
        self._grantees[record.grant_id] = record.institution
        if record.uscc != uscc:
            raise GrantMismatch(f"grant {grant_id} is not from enterprise {str(uscc)[:18]}")
        if record.institution != institution:
            raise GrantMismatch(f"grant {grant_id} is not to institution {str(institution)[:63]!r}")
        if record.revoked_at is not None:
            raise GrantNotActive(
                f"grant {grant_id} was revoked at {record.revoked_at.isoformat()}",
                details={"grant_id": grant_id, "state": "revoked"},
            )
        record.as_grant().check_active(at.timestamp())
        extra = sorted(set(asked) - set(record.fields))
        if extra:
            raise ScopeExceeded(f"grant {grant_id} does not cover {', '.join(extra)}")
        if use not in record.uses:
            raise UseNotGranted(
                f"use {use!r} is not granted by {grant_id} (granted: {', '.join(record.uses)})"
            )
        if use == "fetch":
            secret = _checks.verification_only(asked)
            if secret:
                raise ScopeExceeded(
                    f"verification-only fields {', '.join(secret)} can never be fetched"
                )
        if purpose != record.purpose:
            raise PurposeMismatch(
                f"purpose {str(purpose)[:40]!r} is not grant {grant_id}'s {record.purpose!r}"
            )
        if loan_ref != record.loan_ref:
            raise PurposeMismatch(
                f"loan_ref {str(loan_ref)[:64]!r} is not grant {grant_id}'s {record.loan_ref!r}"
            )
        return record

    # --- uses ---

    def record_use(
        self,
        grant_id: str,
        *,
        request_id: str,
        institution: str,
        fields: Sequence[str],
        use: str,
        outcome: str,
        providers: Sequence[str],
        now: dt.datetime | None = None,
        conn: Connection | None = None,
    ) -> GrantUse:
        """Record one request made under ``grant_id`` (whatever its outcome), in a
        transaction of its own or on ``conn`` (rolled back with it if this raises).

        :class:`~veil.errors.NotFound` for an unknown grant,
        :class:`~veil.errors.GrantMismatch` when ``institution`` is not the grantee,
        :class:`~veil.errors.AlreadyExists` when ``request_id`` was already recorded.
        """
        _checks.text(request_id, "request_id", max_len=128)
        asked = _checks.names(fields, "fields")
        _checks.use(use)
        _checks.text(outcome, "outcome", max_len=64)
        called = _checks.names(providers, "providers", max_len=64)
        used = GrantUse(
            grant_id=grant_id,
            request_id=request_id,
            institution=institution,
            fields=asked,
            use=use,
            outcome=outcome,
            providers=called,
            at=utc_now(now),
        )
        if conn is None:
            with write_tx(self.engine) as own:
                self._insert_use(own, used)
        else:
            self._insert_use(conn, used)
        return used

    def _insert_use(self, conn: Connection, used: GrantUse) -> None:
        grantee = self._grantees.get(used.grant_id)
        if grantee is None:
            row = self._row(conn, used.grant_id)
            if row is None:
                raise NotFound(f"no grant {str(used.grant_id)[:36]}")
            grantee = row.institution_id
        if grantee != used.institution:
            raise GrantMismatch(
                f"grant {used.grant_id} is not to institution {str(used.institution)[:63]!r}"
            )
        values = {
            "grant_id": used.grant_id,
            "request_id": used.request_id,
            "institution_id": used.institution,
            "fields": list(used.fields),
            "use": used.use,
            "outcome": used.outcome,
            "providers": list(used.providers),
            "at": used.at,
        }
        if not insert_if_new(conn, grant_uses, values):  # one statement that never fails
            raise AlreadyExists(
                f"request {used.request_id[:128]} is already recorded under grant {used.grant_id}"
            )
        record_event(
            conn,
            at=used.at,
            actor=f"institution:{used.institution}",
            action="grant.use",
            object_type="grant",
            object_id=used.grant_id,
            detail={k: v for k, v in values.items() if k not in ("grant_id", "at")},
        )

    def use_along(
        self,
        grant_id: str,
        *,
        request_id: str,
        institution: str,
        fields: Sequence[str],
        use: str,
        outcome: str,
        providers: Sequence[str],
    ) -> Callable[[Connection], None] | None:
        """:meth:`record_use` as a write to run along a log entry (``AuditLog.record(
        event, along=…)``: one commit for both), where there is a grant to attach it
        to — none without a grant id; an unknown grant, another institution's grant or
        a request id already recorded leave the grant's record alone (refused before
        anything is written, and by no failed statement: the log's transaction goes
        on).  The log entry records the use either way."""
        if not grant_id:
            return None
        at = utc_now(None)

        def along(conn: Connection) -> None:
            with contextlib.suppress(VeilError):
                self.record_use(
                    grant_id,
                    request_id=request_id,
                    institution=institution,
                    fields=fields,
                    use=use,
                    outcome=outcome,
                    providers=providers,
                    now=at,
                    conn=conn,
                )

        return along

    def uses(self, grant_id: str) -> list[GrantUse]:
        """Every recorded use of the grant, oldest first (NotFound for an unknown grant)."""
        with self.engine.connect() as conn:
            if self._row(conn, grant_id) is None:
                raise NotFound(f"no grant {str(grant_id)[:36]}")
            rows = conn.execute(
                select(grant_uses)
                .where(grant_uses.c.grant_id == grant_id)
                .order_by(grant_uses.c.id)
            ).all()
        return [
            GrantUse(
                grant_id=r.grant_id,
                request_id=r.request_id,
                institution=r.institution_id,
                fields=tuple(r.fields),
                use=r.use,
                outcome=r.outcome,
                providers=tuple(r.providers),
                at=r.at,
            )
            for r in rows
        ]

    # --- letters ---

    def upload_letter(
        self,
        *,
        institution: str,
        uscc: str,
        sha256_hex: str,
        title: str,
        signed_on: dt.date,
        purpose: str,
        loan_ref: str,
        fields: Sequence[str],
        now: dt.datetime | None = None,
    ) -> Letter:
        """Record a signed letter (its hash and metadata) awaiting the enterprise's grant.

        :class:`~veil.errors.AlreadyExists` when the institution already uploaded this
        document for this enterprise.
        """
        _checks.uscc(uscc)
        digest = _checks.sha256_hex(sha256_hex, "sha256")
        _checks.text(title, "title")
        if not isinstance(signed_on, dt.date) or isinstance(signed_on, dt.datetime):
            raise InvalidArgument("signed_on must be a date")
        _checks.purpose(purpose)
        _checks.text(loan_ref, "loan_ref")
        named = _checks.catalog_fields(fields)
        at = utc_now(now)
        try:
            with write_tx(self.engine) as conn:
                self._check_institution(conn, institution)
                conn.execute(
                    insert(letters).values(
                        institution_id=institution,
                        uscc=uscc,
                        sha256=digest,
                        title=title,
                        signed_on=signed_on,
                        purpose=purpose,
                        loan_ref=loan_ref,
                        fields=list(named),
                        state="pending",
                        uploaded_at=at,
                    )
                )
                record_event(
                    conn,
                    at=at,
                    actor=f"institution:{institution}",
                    action="letter.upload",
                    object_type="letter",
                    object_id=digest,
                    detail={
                        "institution": institution,
                        "uscc": uscc,
                        "title": title,
                        "signed_on": signed_on.isoformat(),
                        "purpose": purpose,
                        "loan_ref": loan_ref,
                        "fields": list(named),
                    },
                )
        except IntegrityError:
            raise AlreadyExists(
                f"institution {institution!r} already uploaded letter {digest[:16]}… "
                f"for enterprise {uscc}"
            ) from None
        return self._letters(
            (letters.c.institution_id == institution)
            & (letters.c.uscc == uscc)
            & (letters.c.sha256 == digest)
        )[0]

    def letters_for_enterprise(self, uscc: str) -> list[Letter]:
        return self._letters(letters.c.uscc == uscc)

    def letters_for_institution(self, institution_id: str) -> list[Letter]:
        return self._letters(letters.c.institution_id == institution_id)

    # --- internals ---

    def _verify_new(self, grant_jws: str, t: float) -> Grant:
        """Verify a grant for storing: like ``verify_grant(now=t)`` except that a window
        starting in the future is accepted (the grant is stored as ``pending``).

        ``at_any_time=True`` checks the signature, the claims, ``iat`` not in the future
        and the certificate at ``iat``; the certificate must also be valid now, and the
        grant not already expired.
        """
        grant = verify_grant(grant_jws, self.eia_keys, now=t, at_any_time=True)
        certificate = jwt.get_unverified_header(grant_jws)["eia"]  # signature verified above
        verify_enterprise_certificate(certificate, self.eia_keys, now=t)
        if t >= grant.expires + CLOCK_SKEW_S:
            raise GrantNotActive(f"grant {grant.grant_id} expired at {grant.expires}")
        return grant

    @staticmethod
    def _check_institution(conn: Connection, institution_id: str) -> None:
        state = conn.execute(
            select(institution_table.c.state).where(institution_table.c.id == institution_id)
        ).scalar_one_or_none()
        if state is None:
            raise NotFound(f"no institution {str(institution_id)[:63]!r}")
        if state == "revoked":
            raise FailedPrecondition(f"institution {institution_id!r} is revoked")

    @staticmethod
    def _row(conn: Connection, grant_id: str) -> Row[Any] | None:
        return conn.execute(_GRANT_ROW, {"g_id": grant_id}).first()

    def _get(self, conn: Connection, grant_id: str, at: dt.datetime) -> GrantRecord:
        row = self._row(conn, grant_id)
        if row is None:
            raise NotFound(f"no grant {str(grant_id)[:36]}")
        return _record(row, at)

    def _list(self, where: Any, now: dt.datetime | None) -> list[GrantRecord]:
        at = utc_now(now)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(grants).where(where).order_by(grants.c.created_at, grants.c.grant_id)
            ).all()
        return [_record(r, at) for r in rows]

    def _letters(self, where: Any) -> list[Letter]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(letters).where(where).order_by(letters.c.id)).all()
        return [letter_from_row(r) for r in rows]


# Built once (SQLAlchemy reuses the compiled form): they run on every authorized request.
_GRANT_ROW = select(grants).where(grants.c.grant_id == bindparam("g_id"))
