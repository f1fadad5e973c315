"""Model and batch events in the transparency log, through the real daemons (issue 7).

A model is imported and approved (``model.trained``, ``model.deployed``), then a batch
job selects its enterprises by industry (a use of samr's data: ``batch.run`` action
``selected``) and runs (``started`` naming every provider, ``finished``).  Each entry
holds identifiers and hashes only, and afterwards every provider's reconciliation of
its ledger (model install, selection, batch install and chunks) against the log is
clean.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from platform_node.models.demo import fit_demo_model
from provider_node.reconcile import reconcile
from tests.conftest import run
from veil.audit.entry import Entry, EventType, decode_entry
from veil.config import load_node_config
from veil.scoring.spec import parse_model
from veil.tls import PeerIdentity, secure_channel
from veil.v1 import audit_pb2, audit_pb2_grpc, scoring_pb2_grpc
from veil.v1 import scoring_pb2 as spb
from veil_cli.calls import call_platform
from veil_cli.score_demo import follow_batch, import_model

pytestmark = pytest.mark.timeout(600)


async def _search(fed: Any) -> list[tuple[int, Entry, bytes]]:
    node = fed.node("gateway")
    tls = fed.client_tls("demo-auditor")
    async with secure_channel(node.address, tls, PeerIdentity("gateway", node.name)) as ch:
        answer = await audit_pb2_grpc.AuditServiceStub(ch).SearchEntries(
            audit_pb2.SearchEntriesRequest(page_size=1000), timeout=15.0
        )
    return [(e.index, decode_entry(e.leaf), e.leaf) for e in answer.entries]


def test_model_and_batch_events_are_logged_and_reconcile_clean(federation: Any) -> None:
    admin = str(federation.workdir / "admin.toml")
    doc = fit_demo_model(federation.data)
    spec = parse_model(doc)
    info = run(import_model(admin, doc))  # imported and approved (installed at providers)
    job = run(
        call_platform(
            admin,
            scoring_pb2_grpc.BatchAdminStub,
            "StartBatch",
            spb.StartBatchRequest(
                model_id=info.model_id, selection=spb.BatchSelection(industries=["F"])
            ),
        )
    )
    done = run(follow_batch(admin, job.job_id, show=False))
    assert done.state == "done", done.error
    entries = run(_search(federation))

    ref = f"{info.model_id}@{info.version}"
    trained = [e for _, e, _ in entries if e.type == EventType.MODEL_TRAINED]
    assert [e.request_id for e in trained] == [ref]
    assert trained[0].result_sha256 == info.sha256 and trained[0].actor.startswith("admin/")
    assert trained[0].detail["features_from"] == ",".join(spec.providers)
    assert set(trained[0].detail) <= {
        "model",
        "version",
        "kind",
        "source",
        "action",
        "features_from",
        "trained_start",
        "trained_end",
    }
    deployed = [e for _, e, _ in entries if e.type == EventType.MODEL_DEPLOYED]
    assert [(e.detail["model"], e.detail["action"]) for e in deployed] == [
        (info.model_id, "approved")
    ]
    assert deployed[0].result_sha256 == info.sha256

    batch = [(i, e) for i, e, _ in entries if e.type == EventType.BATCH]
    actions = {e.detail["action"]: (i, e) for i, e in batch}
    assert set(actions) == {"selected", "started", "finished"}
    index, started = actions["started"]
    assert index == job.log_index and started.request_id == job.job_id
    assert started.providers == spec.providers
    finished = actions["finished"][1]
    assert finished.detail["scored"] == done.scored == done.enterprises
    page = run(
        call_platform(
            admin,
            scoring_pb2_grpc.BatchAdminStub,
            "ListBatchResults",
            spb.ListBatchResultsRequest(job_id=job.job_id, limit=10_000),
        )
    )
    lines = "".join(f"{r.uscc},{r.pd!r},{r.score!r},{r.grade}\n" for r in page.rows)
    assert finished.result_sha256 == hashlib.sha256(lines.encode()).hexdigest()
    selected = actions["selected"][1]
    assert selected.providers == ("samr",) and selected.detail["industries"] == "F"
    assert selected.detail["matched"] >= done.enterprises > 0
    assert len(selected.result_sha256) == 64  # a hash of the USCC list, never the list
    for _, e, leaf in entries:
        if e.type in (EventType.MODEL_TRAINED, EventType.MODEL_DEPLOYED, EventType.BATCH):
            assert b"weight" not in leaf and b"intercept" not in leaf

    # The platform's keys are in the log: signing, checkpoint, scoring and verification keys.
    rotated = {e.detail["purpose"] for _, e, _ in entries if e.type == EventType.KEY_ROTATED}
    assert {
        "results_and_request_tokens",
        "log_checkpoints",
        "scoring_paillier",
        "verification_paillier",
    } <= rotated

    # Usage feedback: every provider's ledger agrees with the log.
    for node in federation.nodes:
        if node.role != "provider":
            continue
        config = load_node_config(federation.configs / f"{node.name}.toml")
        report = run(reconcile(config, settle_s=5.0))
        assert report.clean, (node.name, report.mismatches)
        if report.provider == "samr":
            ids = {job.job_id, selected.request_id}
            assert ids <= {e.request_id for _, e, _ in entries if e.asked("samr")}
