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
    insert,
    select,
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

metadata = MetaData()
seen_requests = Table(
    "veil_provider_seen_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
revocations = Table(
    "veil_provider_revocations",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("grant_id", String(64), nullable=False),
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
        self._skipped_seq = 0  # relayed notices that failed verification are not re-fetched
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

    def last_revocation_seq(self) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(revocations.c.seq).order_by(revocations.c.seq.desc())
            ).first()
        return int(value[0]) if value else 0

    def store_revocation(self, notice: platform_pb2.RevocationNotice) -> None:
        """Keep a revocation only if the enterprise's own signature verifies."""
        revocation = verify_revocation(notice.revocation_jws, self.eia_keys, at_any_time=True)
        if (revocation.uscc, revocation.grant_id) != (notice.uscc, notice.grant_id):
            raise PermissionDenied("relayed revocation does not match its signed content")
        with self.engine.begin() as conn:
            conn.execute(
                insert(revocations).values(
                    seq=notice.seq,
                    uscc=revocation.uscc,
                    grant_id=revocation.grant_id,
                    revocation_jws=notice.revocation_jws,
                    received_at=dt.datetime.now(dt.UTC),
                )
            )

    async def poll_revocations(
        self, platform: platform_pb2_grpc.PlatformServiceAsyncStub, interval_s: float
    ) -> None:
        """Pull new revocations from the platform forever (every ``interval_s``)."""
        while True:
            try:
                after = max(self._skipped_seq, await asyncio.to_thread(self.last_revocation_seq))
                answer = await platform.ListRevocations(
                    platform_pb2.ListRevocationsRequest(after_seq=after),
                    timeout=PLATFORM_TIMEOUT_S,
                )
                for notice in answer.revocations:
                    try:
                        await asyncio.to_thread(self.store_revocation, notice)
                    except VeilError as exc:
                        self._skipped_seq = max(self._skipped_seq, notice.seq)
                        log.warning("ignored revocation %d: %s", notice.seq, exc.message)
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
