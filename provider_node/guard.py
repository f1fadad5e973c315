"""The provider's own authorization check, made before any record is read.

A request for authorized detail carries two signatures: the platform's request token
(which provider, which enterprise, which fields, for whom, why, until when) and the
enterprise's own grant.  The provider verifies both itself:

* the token against the platform's published keys (fetched over mTLS, cached by kid);
* that the token was meant for this unit, is fresh, and its request id was never seen;
* the grant against the enterprise identity authority's keys, configured here and not
  obtained from the platform — so a compromised platform cannot forge a grant;
* that the token asks for exactly the fields of the request, all inside the grant, for
  the grant's institution, purpose and loan reference, within its window;
* that the enterprise has not revoked the grant (revocations carry the enterprise's
  signature and are checked again here; the platform only relays them).

Cost per request: the grant's signatures (EIA certificate and enterprise key) are
verified once per distinct grant token (:class:`~veil.tokens.GrantVerifier`, keyed by the
token's SHA-256); its window, the certificate's validity, the scope checks, revocation
and replay run on every request.  The revocation look-up and the replay claim share one
worker-thread hop and one transaction — the same transaction as the handler's ledger row
when the handler answers inside :meth:`Guard.claimed`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    select,
    update,
)

from veil.errors import (
    PermissionDenied,
    Replayed,
    Unauthenticated,
    UnknownKey,
    VeilError,
    from_rpc_error,
)
from veil.store import insert_if_new, write_transaction
from veil.tokens import (
    MAX_REQUEST_TOKEN_LIFETIME_S,
    GrantVerifier,
    KeySet,
    RequestClaims,
    check_request_against_grant,
    unverified_kid,
    verify_request_token,
    verify_revocation,
)
from veil.tokens.grants import Grant
from veil.v1 import platform_pb2, platform_pb2_grpc

log = logging.getLogger("veil.provider.guard")

JWKS_REFRESH_MIN_S = 5.0
REVOCATION_POLL_S = 2.0
PLATFORM_TIMEOUT_S = 5.0
_START = (0, "")  # the position before the platform's first revocation

metadata = MetaData()
seen_requests = Table(
    "veil_provider_seen_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
# One row per revoked grant, kept for good: a revocation is the enterprise's signed
# word, not the platform's.  ``seq`` is the platform's number for it when last read,
# which only says how far this provider has followed the platform's list (0: not on
# the list the platform serves now).
revocations = Table(
    "veil_provider_revocations",
    metadata,
    Column("uscc", String(18), primary_key=True),
    Column("grant_id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False, index=True),
    Column("revocation_jws", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


class GrantRevoked(PermissionDenied):
    """The enterprise revoked the grant."""


class PlatformKeys:
    """The platform's request-token keys, fetched over mTLS and cached by ``kid``."""

    def __init__(self, platform: platform_pb2_grpc.PlatformServiceAsyncStub) -> None:
        self.platform = platform
        self.keys: KeySet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def for_kid(self, kid: str) -> KeySet:
        async with self._lock:
            stale = self.keys is None or kid not in self.keys.kids
            if stale and time.monotonic() - self._fetched_at >= JWKS_REFRESH_MIN_S:
                await self._fetch()
            if self.keys is None:
                raise UnknownKey("the platform's keys could not be fetched")
            return self.keys

    async def _fetch(self) -> None:
        try:
            answer = await self.platform.GetJwks(
                platform_pb2.GetJwksRequest(), timeout=PLATFORM_TIMEOUT_S, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as err:
            log.warning("cannot fetch the platform's JWKS: %s", from_rpc_error(err).message)
            return
        self._fetched_at = time.monotonic()  # rate-limit refreshes only after a success
        self.keys = KeySet.from_jwks(json.loads(answer.jwks_json), label="platform")


class Guard:
    def __init__(
        self,
        *,
        unit: str,
        engine: Engine,
        eia_keys: KeySet,
        platform_keys: PlatformKeys,
    ) -> None:
        self.unit = unit
        self.engine = engine
        self.eia_keys = eia_keys
        self.grants = GrantVerifier(eia_keys)
        self.platform_keys = platform_keys
        # how far the platform's list has been read: (seq, grant id) of the last notice
        # handled, stored or refused; _START to read from the start; None until the
        # first read looks it up in the store
        self._cursor: tuple[int, str] | None = None
        metadata.create_all(engine)

    async def authenticate(
        self,
        *,
        request_id: str,
        uscc: str,
        fields: Sequence[str],
        request_token: str,
        grant_jws: str,
        now: float | None = None,
    ) -> tuple[RequestClaims, Grant]:
        """Every check that needs no state: the request token (signature, audience,
        freshness), the grant (signatures — cached by token hash — and window) and the
        request against the grant.  Replay and revocation are *not* checked yet: the
        caller must read and answer only inside :meth:`claimed`."""
        kid = unverified_kid(request_token)
        if kid is None:
            raise Unauthenticated("request token is not a compact JWS with a kid")
        keys = await self.platform_keys.for_kid(kid)
        claims = verify_request_token(request_token, keys, audience=self.unit, now=now)
        if claims.request_id != request_id:
            raise Unauthenticated("request id differs from the request token's jti")
        if claims.uscc != uscc:
            raise PermissionDenied("enterprise differs from the request token's subject")
        if not grant_jws:
            raise PermissionDenied("no enterprise grant accompanies the request")
        grant = self.grants.verify(grant_jws, now=now)
        check_request_against_grant(claims, grant, requested_fields=fields, now=now)
        return claims, grant

    @contextmanager
    def claimed(self, claims: RequestClaims, grant: Grant) -> Iterator[Connection]:
        """A write transaction on the ledger's database that first checks that the grant
        is not revoked (:class:`GrantRevoked`) and claims the request id
        (:class:`Replayed` if it was seen), before the block runs.  Blocking: call it in a worker
        thread.  The block reads and computes the answer and writes its ledger row on the
        connection; all of it commits at once when the block ends, before the answer
        leaves.  Any exception rolls it all back (the request id stays unclaimed: nothing
        was answered) — record the refusal in a transaction of its own.
        """
        with write_transaction(self.engine) as conn:
            self.claim_on(conn, claims, grant)
            yield conn

    def claim_on(self, conn: Connection, claims: RequestClaims, grant: Grant) -> None:
        """:meth:`claimed`'s checks on a transaction of the caller's
        (:func:`veil.store.write_transaction`): :meth:`refuse_revoked`, then
        :meth:`claim`.  Writes only when it returns."""
        self.refuse_revoked(conn, grant)
        self.claim(conn, claims)

    def refuse_revoked(self, conn: Connection, grant: Grant) -> None:
        """:class:`GrantRevoked` if the enterprise revoked ``grant`` (a read)."""
        if _revoked(conn, grant.uscc, grant.grant_id):
            raise GrantRevoked(f"grant {grant.grant_id} was revoked by the enterprise")

    def claim(self, conn: Connection, claims: RequestClaims) -> None:
        """Claim the request id: :class:`Replayed` (writing nothing) if it was seen.

        A batch answers each item with :meth:`refuse_revoked` first and this claim last,
        after every step that can refuse: a refused item then wrote nothing and needs
        no savepoint of its own in the batch's one transaction."""
        expires_at = dt.datetime.fromtimestamp(
            claims.expires + MAX_REQUEST_TOKEN_LIFETIME_S, dt.UTC
        )
        claim = {"request_id": claims.request_id, "expires_at": expires_at}
        if not insert_if_new(conn, seen_requests, claim):
            raise Replayed(f"request {claims.request_id} was already presented to {self.unit}")

    def is_revoked(self, uscc: str, grant_id: str) -> bool:
        with self.engine.connect() as conn:
            return _revoked(conn, uscc, grant_id)

    def last_stored_revocation(self) -> tuple[int, str]:
        """(seq, grant id) of the stored revocation with the highest platform number, or
        :data:`_START` when none is on the platform's list."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(revocations.c.seq, revocations.c.grant_id)
                .where(revocations.c.seq > 0)
                .order_by(revocations.c.seq.desc())
                .limit(1)
            ).first()
        return (int(row.seq), str(row.grant_id)) if row else _START

    def _forget_positions(self) -> None:
        """Every kept revocation is off the platform's list until read on it again."""
        with write_transaction(self.engine) as conn:
            conn.execute(update(revocations).values(seq=0))

    def store_revocation(self, notice: platform_pb2.RevocationNotice) -> None:
        """Keep a revocation only if the enterprise's own signature verifies; one already
        kept only takes the platform's current number for it."""
        revocation = verify_revocation(notice.revocation_jws, self.eia_keys, at_any_time=True)
        if (revocation.uscc, revocation.grant_id) != (notice.uscc, notice.grant_id):
            raise PermissionDenied("relayed revocation does not match its signed content")
        row = {
            "uscc": revocation.uscc,
            "grant_id": revocation.grant_id,
            "seq": notice.seq,
            "revocation_jws": notice.revocation_jws,
            "received_at": dt.datetime.now(dt.UTC),
        }
        with write_transaction(self.engine) as conn:
            if not insert_if_new(conn, revocations, row):
                conn.execute(
                    update(revocations)
                    .where(
                        revocations.c.uscc == revocation.uscc,
                        revocations.c.grant_id == revocation.grant_id,
                    )
                    .values(seq=notice.seq)
                )

    async def follow_revocations(self, platform: platform_pb2_grpc.PlatformServiceAsyncStub) -> int:
        """One read of the platform's revocations after the last one handled; returns how
        many notices it handled.

        The read starts *at* the last notice handled, not after it, and that notice must
        come back unchanged.  If it does not, the platform's list is not the one this
        provider followed: its database was restored from a backup, and numbers this
        provider has already passed now name other revocations.  Then the whole list is
        read again (what is already kept stays kept: the enterprise revoked it)."""
        if self._cursor is None:
            self._cursor = await asyncio.to_thread(self.last_stored_revocation)
        cursor = self._cursor
        if cursor == _START:
            notices = await self._list_revocations(platform, 0)
        else:
            notices = await self._list_revocations(platform, cursor[0] - 1)
            first = notices[0] if notices else None
            if first is None or (first.seq, first.grant_id) != cursor:
                log.warning(
                    "the platform's revocation list no longer holds #%d (grant %s) where "
                    "this provider read it: was the platform restored from a backup? "
                    "Reading every revocation again; those kept stay revoked",
                    cursor[0],
                    cursor[1],
                )
                await asyncio.to_thread(self._forget_positions)
                self._cursor = _START
                notices = await self._list_revocations(platform, 0)
            else:
                notices = notices[1:]
        for notice in notices:
            try:
                await asyncio.to_thread(self.store_revocation, notice)
            except VeilError as exc:  # not re-fetched: the cursor moves past it
                log.warning("ignored revocation %d: %s", notice.seq, exc.message)
            self._cursor = (notice.seq, notice.grant_id)
        return len(notices)

    @staticmethod
    async def _list_revocations(
        platform: platform_pb2_grpc.PlatformServiceAsyncStub, after: int
    ) -> list[platform_pb2.RevocationNotice]:
        answer = await platform.ListRevocations(
            platform_pb2.ListRevocationsRequest(after_seq=after), timeout=PLATFORM_TIMEOUT_S
        )
        return list(answer.revocations)

    async def poll_revocations(
        self, platform: platform_pb2_grpc.PlatformServiceAsyncStub, interval_s: float
    ) -> None:
        """Follow the platform's revocations forever (every ``interval_s``)."""
        while True:
            try:
                await self.follow_revocations(platform)
            except grpc.aio.AioRpcError as err:
                log.debug("revocation poll failed: %s", err.code().name)
            await asyncio.sleep(interval_s)


# Built once with bind parameters (SQLAlchemy reuses the compiled form per request).
_REVOKED = (
    select(revocations.c.seq)
    .where(revocations.c.uscc == bindparam("uscc"), revocations.c.grant_id == bindparam("gid"))
    .limit(1)
)


def _revoked(conn: Connection, uscc: str, grant_id: str) -> bool:
    return conn.execute(_REVOKED, {"uscc": uscc, "gid": grant_id}).first() is not None
