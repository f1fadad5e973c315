"""The transparency log through the real daemons (separate processes, mutual TLS).

Order matters in this module: the tamper test restores what it changes, and the
log-injection test (the log is append-only, so it cannot be undone) runs last.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import grpc
import pytest
import tomli_w
from sqlalchemy import create_engine, delete, insert, select, update

from provider_node.ledger import ledger_table
from tests.conftest import run
from veil._internal.merkle import leaf_hash
from veil.audit.entry import AuditEvent, EventType, decode_entry, encode_entry, lookup_result_digest
from veil.certs import init_dev_pki
from veil.checkpoint import Signer, Verifier, verify_checkpoint
from veil.config import TLSConfig
from veil.tlog import LogStore
from veil.tlog.schema import Tables
from veil.tls import PeerIdentity, secure_channel
from veil.uscc import make_uscc
from veil.v1 import audit_pb2, audit_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from veil_cli.authz_setup import enroll_enterprise
from veil_cli.client import load_client_config
from veil_cli.federation import INSTITUTION
from veil_cli.main import main

REPO = Path(__file__).resolve().parent.parent
LOG_TABLE = "audit_log_leaves"


def first_uscc(fed: Any) -> str:
    with (fed.data / "labels.csv").open(newline="") as fh:
        return str(next(csv.DictReader(fh))["uscc"])


def cfg(fed: Any, name: str) -> str:
    return str(fed.workdir / name)


async def _lookup(fed: Any, uscc: str) -> gateway_pb2.GatewayLookupResponse:
    # the bank's own client configuration (certificate, and client assertions if set)
    config = load_client_config(fed.workdir / "client.toml")
    async with config.gateway_channel() as ch:
        return await gateway_pb2_grpc.GatewayServiceStub(ch).LookupEnterprise(
            gateway_pb2.GatewayLookupRequest(uscc=uscc), timeout=15.0
        )


async def _audit(fed: Any, method: str, request: Any, tls: TLSConfig) -> Any:
    node = fed.node("gateway")
    async with secure_channel(node.address, tls, PeerIdentity("gateway", node.name)) as ch:
        return await getattr(audit_pb2_grpc.AuditServiceStub(ch), method)(request, timeout=15.0)


def audit_call(fed: Any, method: str, request: Any, who: str = "demo-auditor") -> Any:
    return run(_audit(fed, method, request, fed.client_tls(who)))


def cli_json(capsys: Any, *argv: str) -> tuple[int, list[Any], str]:
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    lines = [json.loads(line) for line in out.out.splitlines() if line.startswith(("{", "["))]
    return code, lines, out.err


def test_lookup_carries_log_index_with_a_verifiable_entry(federation: Any, capsys: Any) -> None:
    uscc = first_uscc(federation)
    answer = run(_lookup(federation, uscc))
    assert answer.log_index > 0
    code, lines, err = cli_json(
        capsys,
        "audit",
        "prove",
        "--index",
        str(answer.log_index),
        "--config",
        cfg(federation, "client.toml"),
    )
    assert code == 0, err
    proof = lines[0]
    assert proof["verified"] is True and proof["index"] == answer.log_index
    entry = proof["entry"]
    assert entry["type"] == "enterprise.lookup"
    assert entry["actor"] == f"institution/{INSTITUTION}"
    assert entry["enterprise"] == uscc and entry["request_id"] == answer.request_id
    assert entry["providers"] == ["court", "samr"] and entry["outcome"] == "OK"
    assert entry["result_sha256"] == lookup_result_digest(answer)
    # nothing from the report itself is in the entry
    leaf = json.dumps(entry, ensure_ascii=False)
    assert answer.name not in leaf


def test_auditor_follows_proves_and_reports(federation: Any, capsys: Any) -> None:
    auditor = cfg(federation, "auditor.toml")
    code, _, err = cli_json(capsys, "audit", "follow", "--config", auditor)
    assert code == 0 and "verified" in err, err
    run(_lookup(federation, first_uscc(federation)))
    code, _, err = cli_json(capsys, "audit", "follow", "--config", auditor)
    assert code == 0 and "consistent with the verified size" in err, err
    state = json.loads((federation.workdir / "audit-state-auditor.json").read_text())
    code, lines, err = cli_json(capsys, "audit", "entries", "--verify", "--config", auditor)
    assert code == 0 and "it matches" in err, err
    assert len(lines) >= state["size"]
    for line in lines:
        assert bytes.fromhex(line["leaf_hash"]) == leaf_hash(base64.b64decode(line["leaf"]))
    h = lines[-1]["leaf_hash"]
    code, proved, err = cli_json(capsys, "audit", "prove", "--leaf-hash", h, "--config", auditor)
    assert code == 0 and proved[0]["index"] == lines[-1]["index"], err
    capsys.readouterr()
    assert (
        main(["audit", "report", "--by", "provider", "--format", "json", "--config", auditor]) == 0
    )
    rows = {r["provider"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["samr"]["ok"] >= 2 and rows["court"]["ok"] >= 2
    assert "aggregation.run" in rows["tax"]["types"]
    capsys.readouterr()
    assert (
        main(["audit", "report", "--by", "institution", "--format", "csv", "--config", auditor])
        == 0
    )
    table = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert any(r["institution"] == f"institution/{INSTITUTION}" for r in table)
    # a time range: everything so far is before now, nothing is after it
    now = dt.datetime.now(dt.UTC).isoformat()
    for window, some in ((["--until", now], True), (["--since", now], False)):
        argv = ["audit", "report", "--by", "enterprise", "--format", "json", *window]
        capsys.readouterr()
        assert main([*argv, "--config", auditor]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert bool(rows) is some and (not some or sum(r["uses"] for r in rows) >= 2)
    capsys.readouterr()
    assert main(["audit", "report", "--by", "purpose", "--config", auditor]) == 0
    assert "Uses by purpose" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["audit", "checkpoint", "--config", auditor]) == 0
    note = capsys.readouterr().out
    assert (
        note.startswith("veil.demo/transparency-log\n")
        and "\n— veil.demo/transparency-log " in note
    )
    assert main(["audit", "vkey", "--config", auditor]) == 0
    vkey = capsys.readouterr().out
    assert vkey == Signer.load(federation.certs / "log.key").verifier().key_string + "\n"
    verify_checkpoint(note.encode(), Verifier.parse(vkey.strip()))  # the note verbatim


@pytest.mark.parametrize(
    ("method", "request_", "code", "words"),
    [
        (
            "GetInclusionProof",
            audit_pb2.GetInclusionProofRequest(index=0, tree_size=10**9),
            "NOT_FOUND",
            "beyond",
        ),
        (
            "GetInclusionProof",
            audit_pb2.GetInclusionProofRequest(index=0, tree_size=0),
            "INVALID_ARGUMENT",
            "tree_size",
        ),
        (
            "GetInclusionProof",
            audit_pb2.GetInclusionProofRequest(index=5, tree_size=3),
            "INVALID_ARGUMENT",
            "not in a tree",
        ),
        (
            "GetInclusionProof",
            audit_pb2.GetInclusionProofRequest(leaf_hash=b"\x01" * 31, tree_size=1),
            "INVALID_ARGUMENT",
            "31 bytes",
        ),
        (
            "GetInclusionProof",
            audit_pb2.GetInclusionProofRequest(leaf_hash=b"\x01" * 32, tree_size=1),
            "NOT_FOUND",
            "no leaf",
        ),
        (
            "GetInclusionProof",
            audit_pb2.GetInclusionProofRequest(tree_size=1),
            "INVALID_ARGUMENT",
            "index or leaf_hash",
        ),
        (
            "GetConsistencyProof",
            audit_pb2.GetConsistencyProofRequest(size1=5, size2=3),
            "INVALID_ARGUMENT",
            "size1 <= size2",
        ),
        (
            "GetConsistencyProof",
            audit_pb2.GetConsistencyProofRequest(size1=0, size2=3),
            "INVALID_ARGUMENT",
            "0 < size1",
        ),
        (
            "GetConsistencyProof",
            audit_pb2.GetConsistencyProofRequest(size1=1, size2=10**9),
            "NOT_FOUND",
            "beyond",
        ),
        ("GetEntries", audit_pb2.GetEntriesRequest(start=3, end=3), "INVALID_ARGUMENT", "empty"),
        (
            "GetEntries",
            audit_pb2.GetEntriesRequest(start=0, end=5000),
            "INVALID_ARGUMENT",
            "at most 1000",
        ),
        (
            "GetEntries",
            audit_pb2.GetEntriesRequest(start=0, end=10**9),
            "INVALID_ARGUMENT",
            "at most 1000",
        ),
        (
            "GetEntries",
            audit_pb2.GetEntriesRequest(start=10**9 - 1, end=10**9),
            "NOT_FOUND",
            "beyond",
        ),
        (
            "SearchEntries",
            audit_pb2.SearchEntriesRequest(since="yesterday"),
            "INVALID_ARGUMENT",
            "RFC 3339",
        ),
        (
            "SearchEntries",
            audit_pb2.SearchEntriesRequest(page_size=5000),
            "INVALID_ARGUMENT",
            "page_size",
        ),
    ],
)
def test_bad_inputs_are_refused_clearly(
    federation: Any, method: str, request_: Any, code: str, words: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        audit_call(federation, method, request_)
    assert info.value.code().name == code
    assert words in (info.value.details() or ""), info.value.details()


def test_each_party_reads_only_its_own_entries(federation: Any) -> None:
    uscc = first_uscc(federation)
    other = make_uscc("9", "1", "110105", "MA00000A")  # never generated
    init_dev_pki(
        federation.certs,
        [("enterprise", uscc.lower()), ("enterprise", other.lower()), ("enterprise", "acme")],
    )
    everything = audit_call(
        federation, "SearchEntries", audit_pb2.SearchEntriesRequest(page_size=1000)
    )
    assert everything.scope == audit_pb2.AUDIT_SCOPE_ALL
    ours = [decode_entry(e.leaf) for e in everything.entries]
    mine = audit_call(federation, "SearchEntries", audit_pb2.SearchEntriesRequest(), uscc.lower())
    assert mine.scope == audit_pb2.AUDIT_SCOPE_ENTERPRISE and mine.subject == uscc
    assert len(mine.entries) == sum(e.enterprise == uscc for e in ours) >= 2
    assert all(decode_entry(e.leaf).enterprise == uscc for e in mine.entries)
    # filters cannot widen a scope
    wider = audit_pb2.SearchEntriesRequest(enterprise=other)
    assert not audit_call(federation, "SearchEntries", wider, uscc.lower()).entries
    assert not audit_call(
        federation, "SearchEntries", audit_pb2.SearchEntriesRequest(), other.lower()
    ).entries
    ranged = audit_call(
        federation, "GetEntries", audit_pb2.GetEntriesRequest(start=0, end=len(ours)), uscc.lower()
    )
    assert ranged.filtered and {decode_entry(e.leaf).enterprise for e in ranged.entries} == {uscc}
    # a provider sees the entries in which it was asked (through its node certificate)
    tax = audit_call(federation, "SearchEntries", audit_pb2.SearchEntriesRequest(), "tax")
    assert tax.scope == audit_pb2.AUDIT_SCOPE_PROVIDER and tax.subject == "tax"
    assert tax.entries and all(decode_entry(e.leaf).asked("tax") for e in tax.entries)
    # an institution sees its own requests only
    bank = audit_call(federation, "SearchEntries", audit_pb2.SearchEntriesRequest(), INSTITUTION)
    assert {decode_entry(e.leaf).actor for e in bank.entries} == {f"institution/{INSTITUTION}"}
    # an enterprise certificate that names no enterprise gets nothing
    with pytest.raises(grpc.aio.AioRpcError) as info:
        audit_call(federation, "SearchEntries", audit_pb2.SearchEntriesRequest(), "acme")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # proofs are for everyone
    proof = audit_call(
        federation,
        "GetInclusionProof",
        audit_pb2.GetInclusionProofRequest(index=mine.entries[0].index, tree_size=mine.tree_size),
        uscc.lower(),
    )
    assert proof.leaf_hash == mine.entries[0].leaf_hash


def test_enterprise_sees_every_use_of_its_data_with_inclusion_proofs(
    federation: Any, capsys: Any
) -> None:
    """信息主体查询: through the gateway, with its own certificate, the enterprise lists
    every use of its data (who, when, purpose, grant), each inclusion-verified."""
    uscc = first_uscc(federation)
    for _ in range(2):
        run(_lookup(federation, uscc))
    config = str(enroll_enterprise(federation, uscc, f"企业{uscc[-4:]}"))
    code, lines, err = cli_json(capsys, "audit", "uses", "--config", config)
    assert code == 0, err
    size = json.loads((federation.workdir / f"audit-state-enterprise-{uscc}.json").read_text())[
        "size"
    ]
    everything = audit_call(
        federation, "SearchEntries", audit_pb2.SearchEntriesRequest(page_size=1000, tree_size=size)
    )
    about = [e.index for e in everything.entries if decode_entry(e.leaf).enterprise == uscc]
    assert [line["index"] for line in lines] == about and len(about) >= 2
    for line in lines:
        assert line["included"] is True and line["entry"]["enterprise"] == uscc
        assert {"actor", "time", "purpose", "grant", "type", "providers"} <= set(line["entry"])
    assert any(
        line["entry"]["actor"] == f"institution/{INSTITUTION}"
        and line["entry"]["type"] == EventType.LOOKUP
        for line in lines
    )
    code, proved, err = cli_json(
        capsys, "audit", "prove", "--index", str(about[-1]), "--config", config
    )
    assert code == 0 and proved[0]["verified"] and proved[0]["entry"]["enterprise"] == uscc, err
    # an entry about someone else is not served to it
    other = next(e.index for e in everything.entries if decode_entry(e.leaf).enterprise != uscc)
    code, _, err = cli_json(capsys, "audit", "prove", "--index", str(other), "--config", config)
    assert code != 0, err


def test_entries_from_to_prints_exact_leaves(federation: Any, capsys: Any) -> None:
    auditor = cfg(federation, "auditor.toml")
    code, lines, err = cli_json(
        capsys, "audit", "entries", "--from", "1", "--to", "3", "--config", auditor
    )
    assert code == 0, err
    real = _real_entries(federation)
    assert [sorted(line) for line in lines] == [["index", "leaf", "leaf_hash"]] * 2
    assert [line["index"] for line in lines] == [1, 2]
    for line in lines:
        leaf = base64.b64decode(line["leaf"])
        assert leaf == real[line["index"]]
        assert line["leaf_hash"] == leaf_hash(leaf).hex()


def test_a_checkpoint_not_signed_by_the_pinned_key_is_an_alarm(
    federation: Any, capsys: Any
) -> None:
    impostor = Signer.generate("veil.demo/transparency-log").verifier().key_string
    auditor = cfg(federation, "auditor.toml")
    # The stored state was verified with the real key: under another key it is refused.
    code, _, err = cli_json(capsys, "audit", "follow", "--vkey", impostor, "--config", auditor)
    assert code == 3 and "does not verify" in err, err
    # With no state yet, the log's checkpoint itself is refused.
    doc = tomllib.loads(Path(auditor).read_text())
    doc["audit"]["state"] = "audit-state-impostor.json"
    fresh = federation.workdir / "auditor-impostor.toml"
    fresh.write_text(tomli_w.dumps(doc))
    code, _, err = cli_json(capsys, "audit", "follow", "--vkey", impostor, "--config", str(fresh))
    assert code == 3 and "ALARM (BadCheckpoint)" in err and "no verifiable signatures" in err, err
    assert not (federation.workdir / "audit-state-impostor.json").exists()


def test_a_checkpoint_with_a_bad_signature_is_an_alarm(
    federation: Any, capsys: Any, tmp_path: Path
) -> None:
    auditor = cfg(federation, "auditor.toml")
    assert main(["audit", "follow", "--config", auditor]) == 0
    capsys.readouterr()
    assert main(["audit", "checkpoint", "--config", auditor]) == 0
    note = capsys.readouterr().out
    origin, size, rest = note.split("\n", 2)
    forged = tmp_path / "forged.note"  # the pinned key's name and id, another body
    forged.write_text(f"{origin}\n{int(size) + 1}\n{rest}")
    code, _, err = cli_json(
        capsys, "audit", "follow", "--compare", str(forged), "--config", auditor
    )
    assert code == 3 and "ALARM (BadCheckpoint)" in err and "invalid signature" in err, err
    mangled = tmp_path / "mangled.note"  # not a signed note at all
    mangled.write_text(note.replace("\n\n", "\n"))
    code, _, err = cli_json(
        capsys, "audit", "follow", "--compare", str(mangled), "--config", auditor
    )
    assert code == 3 and "MalformedNote" in err, err


def _real_entries(fed: Any) -> list[bytes]:
    store = LogStore(f"sqlite:///{fed.data / 'platform.db'}", table_prefix="audit_log_")
    try:
        return store.entries(0, store.size())
    finally:
        store.close()


def test_a_rewritten_log_served_to_the_auditor_is_detected(
    federation: Any, capsys: Any, tmp_path: Path
) -> None:
    auditor = cfg(federation, "auditor.toml")
    assert main(["audit", "follow", "--config", auditor]) == 0
    state = json.loads((federation.workdir / "audit-state-auditor.json").read_text())
    real = _real_entries(federation)[: state["size"]]
    # The fork rewrites history: one lookup is dropped, and it grows past the auditor's view.
    rewritten = real[:1] + [e for e in real[1:] if decode_entry(e).type != EventType.LOOKUP]
    filler = encode_entry(
        AuditEvent(type="aggregation.run", actor="platform/platform"), dt.datetime.now(dt.UTC)
    )
    rewritten += [filler] * (len(real) + 2 - len(rewritten))
    key = federation.certs / "log.key"
    fork_url = f"sqlite:///{tmp_path / 'fork.db'}"
    fork = LogStore(fork_url, table_prefix="audit_log_")
    fork.append_batch(rewritten)
    # Same size as the auditor's view, different root: a second validly signed note.
    same_size = tmp_path / "same-size.note"
    small = LogStore(f"sqlite:///{tmp_path / 'small.db'}", table_prefix="audit_log_")
    small.append_batch(rewritten[: len(real)])
    same_size.write_bytes(small.checkpoint(Signer.load(key)))
    small.close()
    fork.close()

    code, _, err = cli_json(
        capsys, "audit", "follow", "--compare", str(same_size), "--config", auditor
    )
    assert code == 3 and "ForkDetected" in err and "two different signed roots" in err, err

    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "_forked_log_server.py"),
            str(federation.certs),
            "gateway",
            fork_url,
            str(key),
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("PORT "), line
        doc = tomllib.loads(Path(auditor).read_text())
        doc["gateway"]["address"] = f"127.0.0.1:{int(line.split()[1])}"
        evil = federation.workdir / "auditor-evil.toml"
        evil.write_text(tomli_w.dumps(doc))
        code, _, err = cli_json(capsys, "audit", "follow", "--config", str(evil))
        assert code == 3 and "ForkDetected" in err and "not consistent" in err, err
        assert "---" in err  # both notes are printed as evidence
    finally:
        proc.terminate()
        proc.wait(10)
    # the auditor's trusted state was not replaced by the fork
    assert json.loads((federation.workdir / "audit-state-auditor.json").read_text()) == state


def test_a_rewritten_entry_in_the_platform_database_is_detected(
    federation: Any, capsys: Any
) -> None:
    auditor = cfg(federation, "auditor.toml")
    engine = create_engine(f"sqlite:///{federation.data / 'platform.db'}")
    table = Tables("audit_log_").leaves
    with engine.connect() as conn:
        original = bytes(conn.execute(select(table.c.data).where(table.c.idx == 1)).scalar_one())
    forged = original.replace(b'"outcome":"OK"', b'"outcome":"NOT_FOUND"')
    assert forged != original
    try:
        with engine.begin() as conn:
            conn.execute(update(table).where(table.c.idx == 1).values(data=forged))
        code, _, err = cli_json(capsys, "audit", "prove", "--index", "1", "--config", auditor)
        assert code == 3 and "BadInclusion" in err, err
        code, _, err = cli_json(capsys, "audit", "entries", "--verify", "--config", auditor)
        assert code == 3 and "ALARM" in err, err
    finally:
        with engine.begin() as conn:
            conn.execute(update(table).where(table.c.idx == 1).values(data=original))
        engine.dispose()
    assert main(["audit", "prove", "--index", "1", "--config", auditor]) == 0


def _ledger(fed: Any, unit: str) -> Any:
    return create_engine(f"sqlite:///{fed.data / (unit + '-ledger.db')}")


def test_reconciliation_is_clean_and_flags_ledger_mismatches(
    federation: Any, capsys: Any, caplog: pytest.LogCaptureFixture
) -> None:
    samr = cfg(federation, "config/samr.toml")
    answer = run(_lookup(federation, first_uscc(federation)))
    code, lines, err = cli_json(capsys, "provider", "reconcile", "--json", "--config", samr)
    assert code == 0 and lines[0]["clean"], (lines, err)
    # aggregation attempts made before a provider was up name it without its answer
    assert lines[0]["entries_verified"] >= lines[0]["ledger_answered"] >= 3

    engine = _ledger(federation, "samr")
    t = ledger_table
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.request_id == answer.request_id)).mappings().one()
    try:
        # The ledger lost the row: the log claims an answer the provider never gave.
        with engine.begin() as conn:
            conn.execute(delete(t).where(t.c.id == row["id"]))
        code, lines, err = cli_json(capsys, "provider", "reconcile", "--json", "--config", samr)
        assert code == 1
        assert [(m["kind"], m["request_id"]) for m in lines[0]["mismatches"]] == [
            ("unanswered_claim", answer.request_id)
        ]
        assert any("RECONCILE MISMATCH provider=samr" in r.getMessage() for r in caplog.records)
    finally:
        with engine.begin() as conn:
            conn.execute(insert(t).values(**row))
    # An answer the platform never logged.
    ghost = {
        "at": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5),
        "request_id": "ghost-request-0001",
        "method": "FetchPublic",
        "caller": "platform/platform",
        "uscc": first_uscc(federation),
        "datasets": "samr_abnormal_list",
        "outcome": "answered",
        "detail": "",
    }
    with engine.begin() as conn:
        ghost_id = conn.execute(insert(t).values(**ghost)).inserted_primary_key[0]
    metrics = federation.workdir / "samr.prom"
    try:
        capsys.readouterr()
        code = main(["provider", "reconcile", "--metrics-file", str(metrics), "--config", samr])
        out = capsys.readouterr().out
        assert code == 1
        assert "missing_from_log ghost-request-0001" in out
        assert 'veil_reconcile_mismatches{provider="samr",kind="missing_from_log"} 1' in out
        assert 'kind="missing_from_log"} 1' in metrics.read_text()
    finally:
        with engine.begin() as conn:
            conn.execute(delete(t).where(t.c.id == ghost_id))
        engine.dispose()
    assert main(["provider", "reconcile", "--config", samr]) == 0


def test_an_injected_log_entry_claiming_a_provider_is_flagged(federation: Any, capsys: Any) -> None:
    """Runs last: the log is append-only, so the injected entry stays."""
    tax = cfg(federation, "config/tax.toml")
    assert main(["provider", "reconcile", "--config", tax]) == 0
    injected = encode_entry(
        AuditEvent(
            type=EventType.LOOKUP,
            actor=f"institution/{INSTITUTION}",
            request_id="never-asked-of-tax",
            enterprise=first_uscc(federation),
            providers=["tax"],
            result_sha256="00" * 32,
        ),
        dt.datetime.now(dt.UTC),
    )
    store = LogStore(f"sqlite:///{federation.data / 'platform.db'}", table_prefix="audit_log_")
    try:
        index = store.append(injected)
    finally:
        store.close()
    code, lines, err = cli_json(capsys, "provider", "reconcile", "--json", "--config", tax)
    assert code == 1, err
    assert [(m["kind"], m["request_id"]) for m in lines[0]["mismatches"]] == [
        ("unanswered_claim", "never-asked-of-tax")
    ]
    assert f"log entry {index}" in lines[0]["mismatches"][0]["detail"]
    # the auditor still verifies the log itself: the injection is a consistent append
    assert main(["audit", "follow", "--config", cfg(federation, "auditor.toml")]) == 0
