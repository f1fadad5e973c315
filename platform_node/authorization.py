"""AuthorizationService at the platform: grants, revocations, letters, uses.

Only the gateway calls it, forwarding the authenticated caller.  Enterprises create and
revoke grants with their own signatures (verified here and again by every provider);
institutions see grants made to them and register written letters; an enterprise sees
every use made under its grants.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from platform_node.audit import AuditLog
from platform_node.callers import CallerCheck
from platform_node.registry import GrantRecord, GrantRegistry, Letter
from veil.audit.entry import AuditEvent, EventType
from veil.caller import Caller
from veil.errors import InvalidArgument, NotFound
from veil.v1 import authorization_pb2 as pb
from veil.v1 import authorization_pb2_grpc

_STATES = {
    "active": pb.GRANT_STATE_ACTIVE,
    "pending": pb.GRANT_STATE_NOT_YET_VALID,
    "expired": pb.GRANT_STATE_EXPIRED,
    "revoked": pb.GRANT_STATE_REVOKED,
}


def _iso_unix(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


def grant_info(record: GrantRecord, log_index: int = 0) -> pb.GrantInfo:
    return pb.GrantInfo(
        grant_id=record.grant_id,
        uscc=record.uscc,
        institution=record.institution,
        fields=list(record.fields),
        uses=list(record.uses),
        purpose=record.purpose,
        loan_ref=record.loan_ref,
        not_before=_iso_unix(record.not_before),
        expires=_iso_unix(record.expires),
        state=_STATES.get(record.state, pb.GRANT_STATE_UNSPECIFIED),
        letter_sha256=record.letter_sha256 or "",
        created_at=record.created_at.isoformat(),
        revoked_at=record.revoked_at.isoformat() if record.revoked_at else "",
        grant_jws=record.jws,
        log_index=log_index,
    )


def letter_info(letter: Letter) -> pb.LetterInfo:
    return pb.LetterInfo(
        letter_id=letter.sha256,
        institution=letter.institution,
        uscc=letter.uscc,
        sha256=letter.sha256,
        title=letter.title,
        signed_on=letter.signed_on.isoformat(),
        purpose=letter.purpose,
        loan_ref=letter.loan_ref,
        fields=list(letter.fields),
        state=letter.state,
        uploaded_at=letter.uploaded_at.isoformat(),
        grant_id=letter.grant_id or "",
    )


class AuthorizationServicer(authorization_pb2_grpc.AuthorizationServiceServicer):
    def __init__(self, grants: GrantRegistry, callers: CallerCheck, audit: AuditLog) -> None:
        self.grants = grants
        self.callers = callers
        self.audit = audit

    async def _log(self, event: str, caller: Caller, record: GrantRecord) -> int:
        return await self.audit.record(
            AuditEvent(
                type=event,
                actor=f"enterprise/{caller.subject}",
                enterprise=record.uscc,
                grant=record.grant_id,
                purpose=record.purpose,
                detail={
                    "institution": record.institution,
                    "uses": ",".join(record.uses),
                    "fields": ",".join(record.fields),
                    "loan_ref": record.loan_ref,
                },
            )
        )

    async def CreateGrant(self, request: pb.CreateGrantRequest, context: Any) -> pb.GrantInfo:
        caller = await self.callers.require(context, {"enterprise"})
        record = await asyncio.to_thread(
            self.grants.create, request.grant_jws, by_enterprise=caller.subject
        )
        index = await self._log(EventType.GRANT_CREATED, caller, record)
        return grant_info(record, index)

    async def RevokeGrant(self, request: pb.RevokeGrantRequest, context: Any) -> pb.GrantInfo:
        caller = await self.callers.require(context, {"enterprise"})
        record = await asyncio.to_thread(
            self.grants.revoke, request.revocation_jws, by_enterprise=caller.subject
        )
        index = await self._log(EventType.GRANT_REVOKED, caller, record)
        return grant_info(record, index)

    async def ListGrants(
        self, request: pb.ListGrantsRequest, context: Any
    ) -> pb.ListGrantsResponse:
        caller = await self.callers.require(context, {"enterprise", "institution"})
        if caller.kind == "enterprise":
            records = await asyncio.to_thread(self.grants.for_enterprise, caller.subject)
        else:
            records = await asyncio.to_thread(self.grants.for_institution, caller.subject)
        return pb.ListGrantsResponse(grants=[grant_info(r) for r in records])

    async def ListGrantUses(
        self, request: pb.ListGrantUsesRequest, context: Any
    ) -> pb.ListGrantUsesResponse:
        caller = await self.callers.require(context, {"enterprise", "institution"})
        if not request.grant_id:
            raise InvalidArgument("grant_id is required")
        record = await asyncio.to_thread(self.grants.get, request.grant_id)
        owner = record.uscc if caller.kind == "enterprise" else record.institution
        if owner != caller.subject:
            # Same answer as for a grant that does not exist: ids of others' grants leak nothing.
            raise NotFound(f"grant {request.grant_id} not found")
        uses = await asyncio.to_thread(self.grants.uses, request.grant_id)
        out = pb.ListGrantUsesResponse()
        for use in uses:
            out.uses.add(
                request_id=use.request_id,
                at=use.at.isoformat(),
                institution=use.institution,
                fields=list(use.fields),
                use=use.use,
                outcome=use.outcome,
                providers=list(use.providers),
            )
        return out

    async def UploadLetter(self, request: pb.UploadLetterRequest, context: Any) -> pb.LetterInfo:
        caller = await self.callers.require(context, {"institution"})
        try:
            signed_on = dt.date.fromisoformat(request.signed_on)
        except ValueError:
            raise InvalidArgument("signed_on must be a date, YYYY-MM-DD") from None
        letter = await asyncio.to_thread(
            self.grants.upload_letter,
            institution=caller.subject,
            uscc=request.uscc,
            sha256_hex=request.sha256,
            title=request.title,
            signed_on=signed_on,
            purpose=request.purpose,
            loan_ref=request.loan_ref,
            fields=list(request.fields),
        )
        return letter_info(letter)

    async def ListLetters(
        self, request: pb.ListLettersRequest, context: Any
    ) -> pb.ListLettersResponse:
        caller = await self.callers.require(context, {"enterprise", "institution"})
        if caller.kind == "enterprise":
            letters = await asyncio.to_thread(self.grants.letters_for_enterprise, caller.subject)
        else:
            letters = await asyncio.to_thread(self.grants.letters_for_institution, caller.subject)
        return pb.ListLettersResponse(letters=[letter_info(x) for x in letters])
