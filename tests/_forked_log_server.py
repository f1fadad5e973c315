"""A malicious AuditService: serves a *different* log signed with the real log key.

Run as a subprocess by tests/test_audit_e2e.py to play a compromised gateway or
platform that shows an auditor a rewritten history.

Usage: python tests/_forked_log_server.py <pki-dir> <gateway-name> <log-db-url> <key-file>

Prints ``PORT <n>`` once serving; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import grpc

from veil.checkpoint import Signer
from veil.config import TLSConfig
from veil.server import ServiceBinding, create_server, serve_until_signal
from veil.tlog import LogStore
from veil.v1 import audit_pb2, audit_pb2_grpc


class ForkedAudit(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, store: LogStore, signer: Signer) -> None:
        self.store = store
        self.signer = signer

    async def GetCheckpoint(
        self, request: audit_pb2.GetCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetCheckpointResponse:
        note = self.store.checkpoint(self.signer)
        return audit_pb2.GetCheckpointResponse(
            note=note, verifier_key=self.signer.verifier().key_string, origin=self.signer.name
        )

    async def GetConsistencyProof(
        self, request: audit_pb2.GetConsistencyProofRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetConsistencyProofResponse:
        proof = self.store.consistency_proof(request.size1, request.size2)
        return audit_pb2.GetConsistencyProofResponse(
            size1=request.size1, size2=request.size2, hashes=proof
        )


async def main(pki: Path, name: str, url: str, key: Path) -> None:
    servicer = ForkedAudit(LogStore(url, table_prefix="audit_log_"), Signer.load(key))
    tls = TLSConfig(ca=pki / "ca.pem", cert=pki / f"{name}.pem", key=pki / f"{name}.key")
    server, port, health = await create_server(
        "127.0.0.1:0",
        tls,
        [
            ServiceBinding(
                audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
                lambda s: audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, s),
            )
        ],
        allowed_roles=None,
    )
    print(f"PORT {port}", flush=True)
    await serve_until_signal(server, health, grace_s=1.0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])))
