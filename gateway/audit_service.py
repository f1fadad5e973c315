"""AuditService at the gateway: the transparency log, for everyone, within their scope.

The gateway holds no log; it forwards to the platform's ``LogService`` with a
deadline and decides, from the caller's certificate, what the caller may read
(:func:`audit_scope`):

* auditors and platform administrators — everything;
* a data-providing unit (its node certificate, ``veil://provider/<node>``) — the
  entries in which it was asked for data, so it can reconcile them with its ledger;
* an enterprise (``veil://enterprise/<uscc in lower case>``) — every use of its data;
* an access institution — the entries of its own requests.

Checkpoints, proofs and leaf hashes carry no entry content, so every caller gets
them; entry bytes are filtered by scope.  Providers reach the log through here with
their node certificate, so the platform's port never has to admit them.
"""

from __future__ import annotations

from typing import Any

import grpc

from veil.audit.entry import MalformedEntry, Scope, concerns, decode_entry
from veil.errors import InvalidUSCC, PermissionDenied
from veil.server import ServiceBinding, call_with_deadline, require_peer
from veil.tls import PeerIdentity
from veil.uscc import validate_uscc
from veil.v1 import audit_pb2, audit_pb2_grpc, log_pb2, log_pb2_grpc

PLATFORM_TIMEOUT_S = 10.0
AUDIT_ROLES = ("auditor", "admin", "provider", "enterprise", "institution")


def audit_scope(peer: PeerIdentity) -> tuple[Scope, str]:
    """What ``peer`` may read: ``(scope, subject)``.

    The one place that maps an identity to log visibility.  Enterprise identity
    comes from the client certificate for now (the certificate name is the USCC in
    lower case, as certificate names are DNS labels); enterprise accounts
    (authorization, issue 3) replace only this function's enterprise branch.
    """
    if peer.role in ("auditor", "admin"):
        return Scope.ALL, ""
    if peer.role == "provider":
        return Scope.PROVIDER, peer.name.replace("-", "_")  # node name → catalog unit id
    if peer.role == "enterprise":
        uscc = peer.name.upper()
        try:
            validate_uscc(uscc)
        except InvalidUSCC as exc:
            raise PermissionDenied(f"{peer} does not name an enterprise: {exc.message}") from None
        return Scope.ENTERPRISE, uscc
    if peer.role == "institution":
        return Scope.INSTITUTION, f"institution/{peer.name}"
    raise PermissionDenied(f"{peer} (role {peer.role}) may not read the transparency log")


def _visible(leaf: bytes, scope: Scope, subject: str) -> bool:
    try:
        return concerns(decode_entry(leaf), scope, subject)
    except MalformedEntry:
        return False  # only auditors may read what is not a valid entry


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, log: log_pb2_grpc.LogServiceAsyncStub) -> None:
        self.log = log

    async def _forward(self, method: Any, request: object) -> Any:
        return await call_with_deadline(
            method,
            request,
            peer="the platform's transparency log",
            timeout_s=PLATFORM_TIMEOUT_S,
        )

    def _scope(self, context: grpc.aio.ServicerContext) -> tuple[Scope, str]:
        return audit_scope(require_peer(context, AUDIT_ROLES))

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetCheckpointResponse:
        self._scope(context)
        answer: audit_pb2.GetCheckpointResponse = await self._forward(
            self.log.GetCheckpoint, request
        )
        return answer

    async def GetEntries(
        self, request: audit_pb2.GetEntriesRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetEntriesResponse:
        scope, subject = self._scope(context)
        answer: audit_pb2.GetEntriesResponse = await self._forward(self.log.GetEntries, request)
        if scope == Scope.ALL:
            return answer
        kept = [e for e in answer.entries if _visible(e.leaf, scope, subject)]
        return audit_pb2.GetEntriesResponse(entries=kept, filtered=len(kept) != len(answer.entries))

    async def GetInclusionProof(
        self, request: audit_pb2.GetInclusionProofRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetInclusionProofResponse:
        self._scope(context)
        answer: audit_pb2.GetInclusionProofResponse = await self._forward(
            self.log.GetInclusionProof, request
        )
        return answer

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetConsistencyProofResponse:
        self._scope(context)
        answer: audit_pb2.GetConsistencyProofResponse = await self._forward(
            self.log.GetConsistencyProof, request
        )
        return answer

    async def SearchEntries(
        self, request: audit_pb2.SearchEntriesRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.SearchEntriesResponse:
        scope, subject = self._scope(context)
        answer: audit_pb2.SearchEntriesResponse = await self._forward(
            self.log.SearchEntries,
            log_pb2.LogSearchRequest(
                scope=audit_pb2.AuditScope.ValueType(scope.value), subject=subject, query=request
            ),
        )
        if scope != Scope.ALL:  # defence in depth: never relay what the scope excludes
            kept = [e for e in answer.entries if _visible(e.leaf, scope, subject)]
            if len(kept) != len(answer.entries):
                del answer.entries[:]
                answer.entries.extend(kept)
        return answer


def audit_service_binding(channel: grpc.aio.Channel) -> ServiceBinding:
    """The ServiceBinding the gateway adds to serve ``AuditService`` over the
    platform channel it already has."""
    servicer = AuditServicer(log_pb2_grpc.LogServiceStub(channel))
    return ServiceBinding(
        name=audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
        register=lambda server: audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server),
    )
