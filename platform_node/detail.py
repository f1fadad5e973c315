"""Authorized detail (接口调用, 经企业授权): one institution's request under one grant.

The platform checks what it can (the caller, the institution's state and purpose, the
grant's scope and window, the daily quota), then asks each provider holding a requested
field with a request token naming exactly that provider's fields, plus the enterprise's
own signed grant, so that each provider can check everything again itself.  Every use,
answered or refused, is recorded against the grant and in the transparency log.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from platform_node.audit import AuditLog
from platform_node.callers import CallerCheck
from platform_node.providers import ProviderRegistry
from platform_node.registry import GrantRegistry, InstitutionRegistry
from platform_node.signing import PlatformKeys
from veil.audit.entry import AuditEvent, EventType
from veil.catalog import Catalog, Classification
from veil.errors import FailedPrecondition, InvalidArgument, PermissionDenied, VeilError
from veil.sealed import recipient_text
from veil.tokens import RequestClaims
from veil.uscc import validate_uscc
from veil.v1 import platform_pb2

REQUEST_TOKEN_LIFETIME_S = 60
MAX_FIELDS = 200
USE = "fetch"


def group_by_provider(catalog: Catalog, fields: Sequence[str]) -> dict[str, list[str]]:
    """Validate the requested fields and group them by the provider unit that holds them."""
    if not fields:
        raise InvalidArgument("fields is empty")
    if len(fields) > MAX_FIELDS:
        raise InvalidArgument(f"at most {MAX_FIELDS} fields per request")
    if len(set(fields)) != len(fields):
        raise InvalidArgument("fields lists a field twice")
    out: dict[str, list[str]] = {}
    for field_id in fields:
        field = catalog.field(field_id)
        if field.classification == Classification.VERIFICATION_ONLY:
            raise PermissionDenied(
                f"field {field_id!r} is verification-only: it never leaves its provider as a value"
            )
        out.setdefault(field.provider, []).append(field_id)
    return out


class AuthorizedDetail:
    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: ProviderRegistry,
        institutions: InstitutionRegistry,
        grants: GrantRegistry,
        callers: CallerCheck,
        keys: PlatformKeys,
        audit: AuditLog,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.institutions = institutions
        self.grants = grants
        self.callers = callers
        self.keys = keys
        self.audit = audit

    async def fetch(
        self, request: platform_pb2.FetchAuthorizedRequest, context: object
    ) -> platform_pb2.FetchAuthorizedResponse:
        caller = self.callers.identify(context, {"institution"})
        request_id = request.request_id or uuid.uuid4().hex
        fields = list(request.fields)
        by_provider: dict[str, list[str]] = {}
        answered: list[str] = []
        asked: list[str] = []  # providers actually called (refusals before that ask nobody)
        try:
            # Inside the try: a replayed assertion, a suspended institution or a purpose
            # it was not admitted for is refused *and recorded*, like every other refusal.
            await self.callers.admit(caller, purpose=request.purpose)
            validate_uscc(request.uscc)
            recipient = recipient_text(request.recipient_public_key)
            by_provider = group_by_provider(self.catalog, fields)
            missing = sorted(set(by_provider) - set(self.providers.links))
            if missing:
                raise FailedPrecondition(
                    f"no registered provider holds {', '.join(missing)} data at this platform"
                )
            record = await asyncio.to_thread(
                self.grants.authorize,
                grant_id=request.grant_id,
                uscc=request.uscc,
                institution=caller.subject,
                fields=fields,
                use=USE,
                purpose=request.purpose,
                loan_ref=request.loan_ref,
            )
            await asyncio.to_thread(self.institutions.consume_quota, caller.subject)
            now = int(time.time())
            calls = []
            for unit, unit_fields in sorted(by_provider.items()):
                token = self.keys.request_token(
                    RequestClaims(
                        provider=unit,
                        uscc=request.uscc,
                        institution=caller.subject,
                        fields=tuple(unit_fields),
                        use=USE,
                        purpose=request.purpose,
                        loan_ref=request.loan_ref,
                        grant_id=request.grant_id,
                        request_id=request_id,
                        issued_at=now,
                        expires=now + REQUEST_TOKEN_LIFETIME_S,
                        recipient=recipient,
                    )
                )
                calls.append(
                    self.providers.fetch_authorized(
                        unit, request_id, request.uscc, unit_fields, token, record.jws
                    )
                )
            asked = sorted(by_provider)
            answers = await asyncio.gather(*calls, return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
            answered = sorted(by_provider)
        except VeilError as exc:
            await self._record(
                request, caller.subject, request_id, fields, [], exc.code.name, asked
            )
            raise
        log_index = await self._record(
            request, caller.subject, request_id, fields, answered, "OK", answered
        )
        response = platform_pb2.FetchAuthorizedResponse(
            request_id=request_id,
            uscc=request.uscc,
            grant_id=request.grant_id,
            providers_consulted=answered,
        )
        for answer in answers:
            assert not isinstance(answer, BaseException)
            response.sealed.append(answer.sealed)  # opaque here: sealed to the institution
        response.log_index = log_index
        return response

    async def _record(
        self,
        request: platform_pb2.FetchAuthorizedRequest,
        institution: str,
        request_id: str,
        fields: list[str],
        answered: list[str],
        outcome: str,
        asked: list[str],
    ) -> int:
        # The grant's record of the use commits with the log entry (an unknown grant id
        # has no record to attach it to; the log still has it).
        use = self.grants.use_along(
            request.grant_id,
            request_id=request_id,
            institution=institution,
            fields=fields,
            use=USE,
            outcome=outcome,
            providers=answered,
        )
        return await self.audit.record(
            AuditEvent(
                type=EventType.FETCH,
                actor=f"institution/{institution}",
                request_id=request_id,
                enterprise=request.uscc,
                grant=request.grant_id,
                purpose=request.purpose,
                providers=answered,
                providers_failed=[p for p in asked if p not in answered],
                outcome=outcome,
                detail={"fields": ",".join(sorted(fields)), "loan_ref": request.loan_ref},
            ),
            along=use,
        )
