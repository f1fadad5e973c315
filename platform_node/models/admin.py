"""ModelAdmin at the platform: import, approve, retire and inspect model versions.

Administrators only (mTLS role ``admin``); the approving administrator's certificate
identity is what the model card records as "approved by".  Approval pushes the encrypted
parts to the providers at once (a provider that is down gets its part on first use).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from platform_node.audit import AuditLog
from platform_node.models.registry import ModelRecord, ModelRegistry
from veil.audit.entry import AuditEvent, EventType
from veil.errors import InvalidArgument, VeilError
from veil.server import require_peer
from veil.v1 import scoring_pb2 as pb
from veil.v1 import scoring_pb2_grpc

log = logging.getLogger("veil.platform.models")

Deployer = Callable[[ModelRecord], Awaitable[list[str]]]


def model_info(record: ModelRecord, *, with_document: bool) -> pb.ModelInfo:
    return pb.ModelInfo(
        model_id=record.model_id,
        version=record.version,
        state=record.state,
        sha256=record.sha256,
        card_json=json.dumps(record.card(), sort_keys=True, ensure_ascii=False),
        document_json=record.document if with_document else "",
    )


class ModelAdminServicer(scoring_pb2_grpc.ModelAdminServicer):
    def __init__(self, registry: ModelRegistry, audit: AuditLog, deploy: Deployer) -> None:
        self.registry = registry
        self.audit = audit
        self.deploy = deploy

    def _admin(self, context: Any) -> str:
        peer = require_peer(context, roles={"admin"})
        return f"admin/{peer.name}" if peer is not None else "admin/unknown"

    async def _logged(self, record: ModelRecord, action: str, actor: str) -> None:
        await self.audit.record(
            AuditEvent(
                type=EventType.MODEL_DEPLOYED,
                actor=actor,
                result_sha256=record.sha256,
                detail={"model": record.model_id, "version": record.version, "action": action},
            )
        )

    async def _logged_import(self, record: ModelRecord, actor: str) -> None:
        """``model.trained``: a trained model entered the registry.  The entry names the
        document's SHA-256 and whose data it was trained on (``features_from``: the
        providers its features read) and when (the card's training window) -- never a
        weight or a metric, which are the model owner's to publish."""
        spec = record.spec
        detail: dict[str, str | int] = {
            "model": record.model_id,
            "version": record.version,
            "kind": record.kind,
            "source": record.source,
            "action": "imported",
            "features_from": ",".join(spec.providers),
        }
        window = spec.card.get("training_window")
        if isinstance(window, dict):
            for key in ("start", "end"):
                if isinstance(window.get(key), str):
                    detail[f"trained_{key}"] = window[key]
        await self.audit.record(
            AuditEvent(
                type=EventType.MODEL_TRAINED,
                actor=actor,
                request_id=record.ref,
                result_sha256=record.sha256,
                detail=detail,
            )
        )

    async def _approve(self, record: ModelRecord, actor: str) -> ModelRecord:
        record = await asyncio.to_thread(
            self.registry.approve, record.model_id, record.version, by=actor
        )
        await self._logged(record, "approved", actor)
        try:
            await self.deploy(record)
        except VeilError as exc:  # installed lazily on first use instead
            log.warning("model %s approved, deployment incomplete: %s", record.ref, exc.message)
        return record

    async def ImportModel(self, request: pb.ImportModelRequest, context: Any) -> pb.ModelInfo:
        actor = self._admin(context)
        if not request.document_json:
            raise InvalidArgument("document_json is empty")
        record = await asyncio.to_thread(
            self.registry.import_model, request.document_json, by=actor
        )
        await self._logged_import(record, actor)
        if request.approve:
            record = await self._approve(record, actor)
        return model_info(record, with_document=True)

    async def ApproveModel(self, request: pb.ModelRef, context: Any) -> pb.ModelInfo:
        actor = self._admin(context)
        record = await asyncio.to_thread(self.registry.get, request.model_id, request.version)
        return model_info(await self._approve(record, actor), with_document=True)

    async def RetireModel(self, request: pb.ModelRef, context: Any) -> pb.ModelInfo:
        actor = self._admin(context)
        record = await asyncio.to_thread(
            self.registry.retire, request.model_id, request.version, by=actor
        )
        await self._logged(record, "retired", actor)
        return model_info(record, with_document=True)

    async def GetModel(self, request: pb.ModelRef, context: Any) -> pb.ModelInfo:
        self._admin(context)
        if request.version:
            record = await asyncio.to_thread(self.registry.get, request.model_id, request.version)
        else:
            records = await asyncio.to_thread(self.registry.list, request.model_id)
            if not records:
                record = await asyncio.to_thread(self.registry.get, request.model_id, 1)
            else:
                record = records[-1]
        return model_info(record, with_document=True)

    async def ListAllModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        self._admin(context)
        records = await asyncio.to_thread(self.registry.list, request.model_id or None)
        return pb.ListModelsResponse(models=[model_info(r, with_document=False) for r in records])

    async def DeployModel(self, request: pb.ModelRef, context: Any) -> pb.DeployModelResponse:
        self._admin(context)
        record = await asyncio.to_thread(self.registry.scorable, request.model_id, request.version)
        return pb.DeployModelResponse(providers=await self.deploy(record))
