"""A gRPC client of the gateway's AuditService, and the ``[audit]`` settings it needs.

Every call has a deadline and failures become :class:`veil.errors.VeilError`.  This
client does not verify anything by itself; :mod:`veil.audit.verify` does, on top.

Settings (``[audit]`` in ``client.toml`` or a provider's node configuration)::

    [audit]
    verifier_key = "veil.demo/log+1a2b3c4d+AQ..."  # pinned out of band; never fetched
    origin = "veil.demo/log"        # optional: the checkpoint origin (default: key name)
    state = "audit-state.json"      # optional: where the last verified checkpoint lives
    gateway_address = "127.0.0.1:7443"  # provider configuration only (clients use [gateway])
    gateway_name = "gateway"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from veil.checkpoint import Verifier
from veil.config import TomlReader
from veil.errors import ConfigError, InvalidArgument, NoteError
from veil.server import call_with_deadline
from veil.v1 import audit_pb2, audit_pb2_grpc

QUICK_TIMEOUT_S = 5.0
BULK_TIMEOUT_S = 15.0
MAX_RANGE = 1000
"""The most entries one GetEntries call returns (the server refuses larger ranges)."""


@dataclass(frozen=True)
class AuditSettings:
    verifier: Verifier | None
    origin: str | None
    state: Path
    gateway_address: str = ""
    gateway_name: str = "gateway"

    def require_verifier(self, path: Path) -> Verifier:
        if self.verifier is None:
            raise ConfigError(
                str(path),
                "audit.verifier_key",
                "is required: pin the log's verifier key (`veil audit vkey` prints it, "
                "but obtain it from the platform out of band)",
            )
        return self.verifier


def audit_settings(path: Path, doc: Mapping[str, Any], default_state: str) -> AuditSettings:
    """Read the ``[audit]`` table of the TOML document ``doc`` loaded from ``path``."""
    section = doc.get("audit", {})
    if not isinstance(section, Mapping):
        raise ConfigError(str(path), "audit", "must be a table")
    r = TomlReader(path, doc)
    verifier = None
    if "verifier_key" in section:
        try:
            verifier = Verifier.parse(r.str_("audit.verifier_key"))
        except NoteError as exc:
            raise ConfigError(str(path), "audit.verifier_key", exc.message) from None
    origin = r.str_("audit.origin", "") or None
    state = r.path_("audit.state") or path.parent / default_state
    return AuditSettings(
        verifier=verifier,
        origin=origin,
        state=state,
        gateway_address=r.str_("audit.gateway_address", ""),
        gateway_name=r.str_("audit.gateway_name", "gateway"),
    )


class AuditClient:
    """Thin, deadline-bound wrapper over ``AuditServiceStub``."""

    def __init__(self, channel: grpc.aio.Channel, peer: str = "gateway") -> None:
        self.stub = audit_pb2_grpc.AuditServiceStub(channel)
        self.peer = peer

    async def _call(self, method: Any, request: Any, timeout_s: float) -> Any:
        return await call_with_deadline(method, request, peer=self.peer, timeout_s=timeout_s)

    async def checkpoint(self, *, fresh: bool = False) -> audit_pb2.GetCheckpointResponse:
        request = audit_pb2.GetCheckpointRequest(fresh=fresh)
        answer: audit_pb2.GetCheckpointResponse = await self._call(
            self.stub.GetCheckpoint, request, QUICK_TIMEOUT_S
        )
        return answer

    async def entries(self, start: int, end: int) -> AsyncIterator[audit_pb2.LogEntry]:
        """Entries [start, end), fetched in ranges of at most :data:`MAX_RANGE`."""
        if not 0 <= start < end:
            raise InvalidArgument(f"invalid entry range [{start}, {end})")
        while start < end:
            stop = min(end, start + MAX_RANGE)
            request = audit_pb2.GetEntriesRequest(start=start, end=stop)
            answer: audit_pb2.GetEntriesResponse = await self._call(
                self.stub.GetEntries, request, BULK_TIMEOUT_S
            )
            for entry in answer.entries:
                yield entry
            start = stop

    async def inclusion_proof(
        self, tree_size: int, *, index: int | None = None, leaf_hash: bytes | None = None
    ) -> audit_pb2.GetInclusionProofResponse:
        request = audit_pb2.GetInclusionProofRequest(tree_size=tree_size)
        if index is not None:
            request.index = index
        elif leaf_hash is not None:
            request.leaf_hash = leaf_hash
        else:
            raise InvalidArgument("an inclusion proof needs an index or a leaf hash")
        answer: audit_pb2.GetInclusionProofResponse = await self._call(
            self.stub.GetInclusionProof, request, QUICK_TIMEOUT_S
        )
        return answer

    async def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        request = audit_pb2.GetConsistencyProofRequest(size1=size1, size2=size2)
        answer: audit_pb2.GetConsistencyProofResponse = await self._call(
            self.stub.GetConsistencyProof, request, QUICK_TIMEOUT_S
        )
        return list(answer.hashes)

    async def search(
        self, query: audit_pb2.SearchEntriesRequest
    ) -> AsyncIterator[tuple[audit_pb2.SearchEntriesResponse, audit_pb2.LogEntry]]:
        """Every matching entry, following ``next_index`` page by page."""
        request = audit_pb2.SearchEntriesRequest()
        request.CopyFrom(query)
        while True:
            page: audit_pb2.SearchEntriesResponse = await self._call(
                self.stub.SearchEntries, request, BULK_TIMEOUT_S
            )
            for entry in page.entries:
                yield page, entry
            if not page.next_index:
                return
            request.start_index = page.next_index
            request.tree_size = page.tree_size
