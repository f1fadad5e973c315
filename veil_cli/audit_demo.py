"""The transparency-log part of ``veil demo``: the bank, the auditor and the providers
each verify the log from their side; the demo fails unless all of them are clean."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from veil.audit.client import AuditClient, audit_settings
from veil.audit.entry import EventType, lookup_result_digest
from veil.audit.verify import Auditor
from veil.config import load_node_config, read_toml
from veil.errors import VeilError
from veil.v1 import audit_pb2, gateway_pb2, gateway_pb2_grpc
from veil_cli.client import load_client_config
from veil_cli.render import console


def _auditor(config_path: Path, channel: Any) -> Auditor:
    config = load_client_config(config_path)
    settings = audit_settings(config.path, read_toml(config.path), "audit-state.json")
    verifier = settings.require_verifier(config.path)
    return Auditor(
        AuditClient(channel), verifier, origin=settings.origin, state_path=settings.state
    )


async def bank_checks_its_answer(client_config: Path, uscc: str) -> int:
    """The bank looks up ``uscc`` and verifies that the answer it holds is logged:
    inclusion of entry ``log_index`` and the entry's hash of exactly this answer."""
    config = load_client_config(client_config)
    async with config.gateway_channel() as channel:
        gw = gateway_pb2_grpc.GatewayServiceStub(channel)
        answer = await gw.LookupEnterprise(
            gateway_pb2.GatewayLookupRequest(uscc=uscc), timeout=15.0
        )
        auditor = _auditor(client_config, channel)
        await auditor.follow()
        verified = await auditor.prove_index(answer.log_index)
    digest = lookup_result_digest(answer)
    if verified.entry.result_sha256 != digest or verified.entry.request_id != answer.request_id:
        raise VeilError(f"log entry {answer.log_index} does not commit to the bank's answer")
    console.print(
        f"answer {answer.request_id} carries log index {answer.log_index}: inclusion verified, "
        f"entry commits to SHA-256 {digest[:16]}… of exactly this answer"
    )
    return int(answer.log_index)


async def auditor_follows(auditor_config: Path, index: int) -> None:
    config = load_client_config(auditor_config)
    async with config.gateway_channel() as channel:
        auditor = _auditor(auditor_config, channel)
        result = await auditor.follow()
        state = result.state
        root = base64.b64encode(state.root_hash).decode()
        console.print(f"checkpoint {state.origin} size {state.size} root {root}: signature OK")
        if result.previous is not None:
            console.print(f"consistent with the previously verified size {result.previous.size}")
        verified = await auditor.prove_index(index)
        console.print(f"entry {index} ({verified.entry.type}) included: proof verified")
        uses = await auditor.search(audit_pb2.SearchEntriesRequest(page_size=1000))
    table = Table(
        title=f"Every use in the log ({len(uses)} entries, each inclusion-verified; UTC)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("#", no_wrap=True, justify="right")
    table.add_column("time", no_wrap=True)
    table.add_column("type, providers", min_width=17, overflow="fold")
    table.add_column("actor", overflow="fold")
    table.add_column("enterprise", no_wrap=True)
    table.add_column("outcome", min_width=7, no_wrap=True)
    for v in uses[-12:]:
        e = v.entry
        providers = ", ".join(e.providers) + (
            f" (failed: {', '.join(e.providers_failed)})" if e.providers_failed else ""
        )
        kind = Text(e.type)
        if providers:
            kind.append("\n" + providers, style="dim")
        table.add_row(
            str(v.index), e.time_text[11:19], kind, e.actor, e.enterprise or "—", e.outcome
        )
    console.print(table)
    lookups = [v for v in uses if v.entry.type == EventType.LOOKUP]
    console.print(f"{len(lookups)} lookups, {len(uses) - len(lookups)} other events")


async def providers_reconcile(fed: Any) -> None:
    from provider_node.reconcile import reconcile

    bad = []
    for node in fed.nodes:
        if node.role != "provider":
            continue
        config = load_node_config(fed.configs / f"{node.name}.toml")
        report = await reconcile(config, settle_s=5.0)
        verdict = (
            "[green]clean[/]" if report.clean else f"[red]{len(report.mismatches)} mismatches[/]"
        )
        console.print(
            f"{report.provider:>16}: {report.entries_verified:3d} log entries verified, "
            f"{report.ledger_answered:3d} answers in its ledger: {verdict}"
        )
        if not report.clean:
            bad.append(report.provider)
    if bad:
        raise VeilError(f"reconciliation found mismatches for {bad}")


async def audit_session(fed: Any, uscc: str) -> None:
    """The demo's closing steps: the bank, the auditor, then every provider."""
    console.rule("[bold cyan]The bank verifies that its answer is in the transparency log")
    index = await bank_checks_its_answer(fed.workdir / "client.toml", uscc)
    console.rule("[bold cyan]The auditor follows the log (signature, consistency, inclusion)")
    await auditor_follows(fed.workdir / "auditor.toml", index)
    console.rule("[bold cyan]Usage feedback: each provider reconciles its ledger with the log")
    await providers_reconcile(fed)
