"""Usage feedback (反馈数据提供单位): reconcile the provider's ledger with the log.

The provider does not take the platform's word for how its data was used.  Its node
writes every request to its own ledger before answering (:mod:`provider_node.ledger`);
this module pulls the transparency-log entries that name the provider (through the
gateway's AuditService, with the node's own certificate), verifies each one's
inclusion in a checkpoint that was itself verified (pinned key, consistency with the
last checkpoint this provider verified), and compares the two records by request id:

``missing_from_log``
    a request the provider *answered* that no log entry records as asked of it —
    a use of its data the platform did not disclose;
``unanswered_claim``
    a log entry saying the provider *answered* a request its ledger has no answer
    for — the platform claims data from it that it never gave (or the ledger lost
    a row);
``enterprise_mismatch``
    a log entry about a different enterprise than the one the provider was asked
    about under that request id.

Comparisons count request ids (a multiset), so one logged entry cannot cover two
answers with the same id.  Before comparing, the ledger is read as *uses of the
provider's data* (:func:`data_uses`): ``InstallModel`` is skipped (the platform
hands the provider an encrypted model part; none of the provider's data leaves, and
the approval is logged as ``model.deployed``), and the rows of one batch job
(``InstallBatch`` under the job id, one ``BatchPartial`` per chunk under
``<job id>:<chunk>``) count as one use under the job id, which is how the log
records the job (``batch.run``, action ``started``, naming every provider).

The platform logs a use only after the providers have answered, so a very recent
ledger row may not be logged *yet*: such rows are re-checked against fresh
checkpoints for up to ``settle_s`` seconds before they are flagged.

A platform that hides an entry from this provider's search but keeps it in the log
is not caught here (the provider only reads its own entries); the auditor, who reads
everything, catches it.  See LEAKAGE.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, select

from provider_node.ledger import ledger_table, ledger_url
from provider_node.settings import provider_settings
from veil.audit.client import AuditClient, audit_settings
from veil.audit.verify import Auditor, VerifiedEntry
from veil.config import NodeConfig
from veil.errors import ConfigError
from veil.request_ids import round_ids
from veil.tls import PeerIdentity, secure_channel
from veil.v1 import audit_pb2

log = logging.getLogger("veil.provider.reconcile")

KINDS = ("missing_from_log", "unanswered_claim", "enterprise_mismatch")
NOT_DATA_USES = frozenset({"InstallModel"})
"""Ledger methods that disclose none of the provider's data (nothing to reconcile)."""
BATCH_METHODS = frozenset({"InstallBatch", "BatchPartial"})
"""Ledger methods of one batch job: logged once, under the job id."""
MAX_ROUNDS = 64
"""The most rounds one logged request can stand for (the platform re-runs a score at
most once per provider that drops out, plus once for a stale mask key)."""
DEFAULT_SETTLE_S = 10.0
POLL_S = 0.5


@dataclass(frozen=True)
class Answer:
    """One ledger row of a request the provider answered."""

    request_id: str
    at: dt.datetime
    method: str
    uscc: str


@dataclass(frozen=True)
class Mismatch:
    kind: str
    request_id: str
    detail: str


@dataclass
class ReconcileReport:
    provider: str
    tree_size: int = 0
    entries_verified: int = 0
    ledger_answered: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.mismatches

    def metrics_text(self, now: float | None = None) -> str:
        """Prometheus text exposition (for a node-exporter textfile collector)."""
        label = f'provider="{self.provider}"'
        counts = Counter(m.kind for m in self.mismatches)
        lines = [
            "# HELP veil_reconcile_mismatches Requests on which the provider's ledger "
            "and the transparency log disagree.",
            "# TYPE veil_reconcile_mismatches gauge",
            *(f'veil_reconcile_mismatches{{{label},kind="{k}"}} {counts[k]}' for k in KINDS),
            "# TYPE veil_reconcile_entries_verified gauge",
            f"veil_reconcile_entries_verified{{{label}}} {self.entries_verified}",
            "# TYPE veil_reconcile_ledger_answered gauge",
            f"veil_reconcile_ledger_answered{{{label}}} {self.ledger_answered}",
            "# TYPE veil_reconcile_tree_size gauge",
            f"veil_reconcile_tree_size{{{label}}} {self.tree_size}",
            "# TYPE veil_reconcile_last_run_timestamp_seconds gauge",
            f"veil_reconcile_last_run_timestamp_seconds{{{label}}} "
            f"{time.time() if now is None else now:.0f}",
        ]
        return "\n".join(lines) + "\n"


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def ledger_answers(url: str, since: dt.datetime | None = None) -> list[Answer]:
    """Every request the ledger at ``url`` records as answered (since ``since``)."""
    engine = create_engine(url)
    t = ledger_table
    query = select(t.c.request_id, t.c.at, t.c.method, t.c.uscc).where(t.c.outcome == "answered")
    try:
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(t.c.id)).all()
    finally:
        engine.dispose()
    out = data_uses(Answer(r[0], _utc(r[1]), r[2], r[3] or "") for r in rows)
    return [a for a in out if since is None or a.at >= since]


def data_uses(answers: Iterable[Answer]) -> list[Answer]:
    """Ledger answers as the uses of data the log records, in ledger order.

    Drops methods in :data:`NOT_DATA_USES`; folds every ``InstallBatch`` /
    ``BatchPartial`` row of one job into a single use under the job id (the first
    row's time), since the platform logs a job once however many chunks it has.
    """
    out: list[Answer] = []
    jobs: set[str] = set()
    for a in answers:
        if a.method in NOT_DATA_USES:
            continue
        if a.method in BATCH_METHODS:
            job = a.request_id.rsplit(":", 1)[0] if a.method == "BatchPartial" else a.request_id
            if job in jobs:
                continue
            jobs.add(job)
            a = Answer(job, a.at, "BatchJob", a.uscc)
        out.append(a)
    return out


def fold_rounds(entries: Iterable[VerifiedEntry], answers: Iterable[Answer]) -> list[Answer]:
    """Ledger answers with the rounds of a re-run request folded into one use.

    A score re-run after a provider dropped out reaches the remaining providers once
    per round, each round under its own id (:func:`veil.request_ids.round_ids`); the
    log records the request once, with ``rounds`` in its detail.  A log entry names at
    most :data:`MAX_ROUNDS` rounds: a larger claim folds nothing beyond that.
    """
    alias: dict[str, str] = {}
    for v in entries:
        rounds = v.entry.detail.get("rounds", 1)
        if isinstance(rounds, int) and rounds > 1:
            for rid in round_ids(v.entry.request_id, min(rounds, MAX_ROUNDS)):
                alias[rid] = v.entry.request_id
    out: list[Answer] = []
    folded: set[str] = set()
    for a in answers:
        request = alias.get(a.request_id)
        if request is None:
            out.append(a)
        elif request not in folded:
            folded.add(request)
            out.append(Answer(request, a.at, a.method, a.uscc))
    return out


def compare(
    unit: str,
    entries: Iterable[VerifiedEntry],
    answers: Iterable[Answer],
    *,
    pending_after: dt.datetime | None = None,
) -> tuple[list[Mismatch], list[Answer]]:
    """Mismatches between log entries naming ``unit`` and its ledger answers.

    Answers missing from the log that are newer than ``pending_after`` are returned
    separately as *pending* (not yet flagged).
    """
    entries = list(entries)
    answers = fold_rounds(entries, answers)
    asked: Counter[str] = Counter()
    claimed: Counter[str] = Counter()
    claims: dict[str, list[VerifiedEntry]] = {}
    for v in entries:
        if v.entry.asked(unit):
            asked[v.entry.request_id] += 1
        if unit in v.entry.providers:
            claimed[v.entry.request_id] += 1
            claims.setdefault(v.entry.request_id, []).append(v)
    answered = Counter(a.request_id for a in answers)
    by_id: dict[str, list[Answer]] = {}
    for a in answers:
        by_id.setdefault(a.request_id, []).append(a)

    mismatches: list[Mismatch] = []
    pending: list[Answer] = []
    for rid, n in answered.items():
        missing = n - asked[rid]
        if missing <= 0:
            continue
        for a in sorted(by_id[rid], key=lambda a: a.at)[-missing:]:
            if pending_after is not None and a.at > pending_after:
                pending.append(a)
            else:
                mismatches.append(
                    Mismatch(
                        "missing_from_log",
                        rid,
                        f"{a.method} answered at {a.at.isoformat()} is not in the log",
                    )
                )
    for rid, n in claimed.items():
        extra = n - answered[rid]
        for v in claims[rid][len(claims[rid]) - extra :] if extra > 0 else []:
            mismatches.append(
                Mismatch(
                    "unanswered_claim",
                    rid,
                    f"log entry {v.index} ({v.entry.type}) says {unit} answered; the ledger "
                    "has no answer",
                )
            )
        usccs = {a.uscc for a in by_id.get(rid, [])}
        for v in claims[rid]:
            if v.entry.enterprise and usccs and v.entry.enterprise not in usccs:
                mismatches.append(
                    Mismatch(
                        "enterprise_mismatch",
                        rid,
                        f"log entry {v.index} names {v.entry.enterprise}; the ledger answered "
                        f"for {', '.join(sorted(usccs))}",
                    )
                )
    return mismatches, pending


async def reconcile(
    config: NodeConfig,
    *,
    since: dt.datetime | None = None,
    settle_s: float = DEFAULT_SETTLE_S,
) -> ReconcileReport:
    """Pull, verify and compare; see the module docstring.  Raises
    :class:`veil.audit.verify.AuditAlarm` if the log itself does not verify."""
    unit = provider_settings(config).unit
    settings = audit_settings(config.path, config.raw, f"{config.name}-audit-state.json")
    verifier = settings.require_verifier(config.path)
    if not settings.gateway_address:
        raise ConfigError(str(config.path), "audit.gateway_address", "is required to reconcile")
    ledger_at = ledger_url(config)
    report = ReconcileReport(unit)
    deadline = time.monotonic() + settle_s
    channel = secure_channel(
        settings.gateway_address, config.tls, PeerIdentity("gateway", settings.gateway_name)
    )
    async with channel:
        auditor = Auditor(
            AuditClient(channel), verifier, origin=settings.origin, state_path=settings.state
        )
        entries: list[VerifiedEntry] = []
        searched = 0
        while True:
            state = (await auditor.follow(fresh=True)).state
            if state.size > searched:
                query = audit_pb2.SearchEntriesRequest(
                    provider=unit, start_index=searched, page_size=1000
                )
                for v in await auditor.search(query):
                    if not v.entry.asked(unit):
                        log.warning("log entry %d served to %s does not name it", v.index, unit)
                    elif since is None or v.entry.time >= since:
                        entries.append(v)
                searched = state.size
            answers = await asyncio.to_thread(ledger_answers, ledger_at, since)
            waiting = time.monotonic() < deadline
            cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=settle_s)
            mismatches, pending = compare(
                unit, entries, answers, pending_after=cutoff if waiting else None
            )
            if not pending:
                break
            await asyncio.sleep(POLL_S)
    report.tree_size = searched
    report.entries_verified = len(entries)
    report.ledger_answered = len(answers)
    report.mismatches = mismatches
    for m in mismatches:
        log.warning(
            "RECONCILE MISMATCH provider=%s kind=%s request_id=%s: %s",
            unit,
            m.kind,
            m.request_id,
            m.detail,
        )
    return report


def write_metrics(path: Path, text: str) -> None:
    """Atomically replace a textfile-collector file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".reconcile-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
