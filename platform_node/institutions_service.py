"""InstitutionRegistry over gRPC: administrators (role ``admin``) manage access institutions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from platform_node.audit import AuditLog
from platform_node.registry import Institution, InstitutionRegistry
from veil.audit.entry import AuditEvent, EventType
from veil.errors import InvalidArgument
from veil.server import require_peer
from veil.v1 import institution_pb2, institution_pb2_grpc

TYPES = {
    institution_pb2.INSTITUTION_TYPE_BANK: "bank",
    institution_pb2.INSTITUTION_TYPE_INSURER: "insurer",
    institution_pb2.INSTITUTION_TYPE_GUARANTOR: "guarantor",
    institution_pb2.INSTITUTION_TYPE_CREDIT_SERVICE: "credit_service",
}
STATES = {
    institution_pb2.INSTITUTION_STATE_APPLIED: "applied",
    institution_pb2.INSTITUTION_STATE_ASSESSED: "assessed",
    institution_pb2.INSTITUTION_STATE_ACTIVE: "active",
    institution_pb2.INSTITUTION_STATE_SUSPENDED: "suspended",
    institution_pb2.INSTITUTION_STATE_REVOKED: "revoked",
}
_TYPE_CODES = {v: k for k, v in TYPES.items()}
_STATE_CODES = {v: k for k, v in STATES.items()}


def _iso(value: Any) -> str:
    return value.isoformat() if value is not None else ""


def to_message(inst: Institution, history: list[Any]) -> institution_pb2.Institution:
    msg = institution_pb2.Institution(
        id=inst.id,
        name=inst.name,
        type=_TYPE_CODES.get(inst.type, 0),  # type: ignore[arg-type]
        state=_STATE_CODES.get(inst.state, 0),  # type: ignore[arg-type]
        jwks_json=json.dumps({"keys": list(inst.keys)}, sort_keys=True),
        purposes=list(inst.purposes),
        daily_quota=inst.daily_quota,
        created_at=_iso(inst.created_at),
    )
    for change in history:
        msg.history.add(
            from_state=_STATE_CODES.get(change.from_state or "", 0),
            to_state=_STATE_CODES.get(change.to_state, 0),
            decided_by=change.decided_by,
            reason=change.reason,
            at=_iso(change.at),
        )
    return msg


class InstitutionRegistryServicer(institution_pb2_grpc.InstitutionRegistryServicer):
    def __init__(self, registry: InstitutionRegistry, audit: AuditLog) -> None:
        self.registry = registry
        self.audit = audit

    async def _answer(self, institution_id: str) -> institution_pb2.Institution:
        inst = await asyncio.to_thread(self.registry.get, institution_id)
        history = await asyncio.to_thread(self.registry.history, institution_id)
        return to_message(inst, history)

    async def RegisterInstitution(
        self, request: institution_pb2.RegisterInstitutionRequest, context: grpc.aio.ServicerContext
    ) -> institution_pb2.Institution:
        admin = require_peer(context, roles={"admin"})
        kind = TYPES.get(request.type)
        if kind is None:
            raise InvalidArgument("type must be bank, insurer, guarantor or credit_service")
        await asyncio.to_thread(
            self.registry.register,
            request.id,
            request.name,
            kind,
            list(request.purposes),
            request.daily_quota,
            admin.uri,
            reason=request.reason or "registered",
        )
        return await self._answer(request.id)

    async def UpdateInstitution(
        self, request: institution_pb2.UpdateInstitutionRequest, context: grpc.aio.ServicerContext
    ) -> institution_pb2.Institution:
        admin = require_peer(context, roles={"admin"})
        if not request.reason:
            raise InvalidArgument("reason is required: every change is recorded with its reason")
        await asyncio.to_thread(
            lambda: self.registry.update(
                request.id,
                decided_by=admin.uri,
                name=request.name or None,
                purposes=list(request.purposes) or None,
                daily_quota=request.daily_quota if request.HasField("daily_quota") else None,
                reason=request.reason,
            )
        )
        return await self._answer(request.id)

    async def SetInstitutionState(
        self, request: institution_pb2.SetInstitutionStateRequest, context: grpc.aio.ServicerContext
    ) -> institution_pb2.Institution:
        admin = require_peer(context, roles={"admin"})
        state = STATES.get(request.state)
        if state is None:
            raise InvalidArgument("state must be applied, assessed, active, suspended or revoked")
        if not request.reason:
            raise InvalidArgument("reason is required: every decision is recorded with its reason")
        await asyncio.to_thread(
            self.registry.set_state, request.id, state, admin.uri, request.reason
        )
        event = {
            "active": EventType.INSTITUTION_ADMITTED,
            "suspended": EventType.INSTITUTION_SUSPENDED,
            "revoked": EventType.INSTITUTION_SUSPENDED,
        }.get(state)
        if event is not None:
            await self.audit.record(
                AuditEvent(
                    type=event,
                    actor=f"admin/{admin.name}",
                    detail={"institution": request.id, "state": state},
                )
            )
        return await self._answer(request.id)

    async def AddInstitutionKey(
        self, request: institution_pb2.AddInstitutionKeyRequest, context: grpc.aio.ServicerContext
    ) -> institution_pb2.Institution:
        admin = require_peer(context, roles={"admin"})
        try:
            jwk = json.loads(request.jwk_json)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(f"jwk_json is not JSON: {exc.msg}") from None
        if not isinstance(jwk, dict):
            raise InvalidArgument("jwk_json must be one JSON object (a public JWK)")
        await asyncio.to_thread(self.registry.add_key, request.id, jwk, admin.uri)
        return await self._answer(request.id)

    async def RemoveInstitutionKey(
        self,
        request: institution_pb2.RemoveInstitutionKeyRequest,
        context: grpc.aio.ServicerContext,
    ) -> institution_pb2.Institution:
        admin = require_peer(context, roles={"admin"})
        await asyncio.to_thread(self.registry.remove_key, request.id, request.kid, admin.uri)
        return await self._answer(request.id)

    async def GetInstitution(
        self, request: institution_pb2.GetInstitutionRequest, context: grpc.aio.ServicerContext
    ) -> institution_pb2.Institution:
        require_peer(context, roles={"admin"})
        return await self._answer(request.id)

    async def ListInstitutions(
        self, request: institution_pb2.ListInstitutionsRequest, context: grpc.aio.ServicerContext
    ) -> institution_pb2.ListInstitutionsResponse:
        require_peer(context, roles={"admin"})
        items = await asyncio.to_thread(self.registry.list)
        out = institution_pb2.ListInstitutionsResponse()
        for inst in items:
            out.institutions.append(to_message(inst, []))
        return out
