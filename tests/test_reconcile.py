"""Provider reconciliation logic: ledger answers against verified log entries."""

from __future__ import annotations

import datetime as dt

from provider_node.reconcile import Answer, ReconcileReport, compare
from veil.audit.entry import AuditEvent, EventType, decode_entry, encode_entry
from veil.audit.verify import VerifiedEntry
from veil.uscc import make_uscc

A = make_uscc("9", "1", "110105", "MA01ABCD")
B = make_uscc("9", "1", "310115", "MA02WXY0")
NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def logged(
    index: int,
    rid: str,
    *,
    answered: tuple[str, ...] = ("samr",),
    failed: tuple[str, ...] = (),
    uscc: str = A,
) -> VerifiedEntry:
    leaf = encode_entry(
        AuditEvent(
            type=EventType.LOOKUP,
            actor="institution/bank",
            request_id=rid,
            enterprise=uscc,
            providers=answered,
            providers_failed=failed,
        ),
        NOW,
    )
    return VerifiedEntry(index, leaf, decode_entry(leaf))


def answer(rid: str, *, uscc: str = A, ago_s: float = 600) -> Answer:
    return Answer(rid, NOW - dt.timedelta(seconds=ago_s), "FetchPublic", uscc)


def kinds(mismatches: list) -> list[tuple[str, str]]:
    return sorted((m.kind, m.request_id) for m in mismatches)


def test_clean_when_every_answer_is_logged_and_every_claim_answered() -> None:
    entries = [logged(0, "r1"), logged(1, "r2", answered=("court",), failed=("samr",))]
    mismatches, pending = compare("samr", entries, [answer("r1"), answer("r2")])
    assert mismatches == [] and pending == []  # r2: asked, failed at the platform: not hidden


def test_counts_are_a_multiset() -> None:
    # two answers under one request id, one log entry: one answer is undisclosed
    mismatches, _ = compare("samr", [logged(0, "r1")], [answer("r1"), answer("r1")])
    assert kinds(mismatches) == [("missing_from_log", "r1")]
    # two claims, one answer: one claim is unfounded
    mismatches, _ = compare("samr", [logged(0, "r1"), logged(5, "r1")], [answer("r1")])
    assert kinds(mismatches) == [("unanswered_claim", "r1")]
    assert "log entry 5" in mismatches[0].detail


def test_entries_of_other_providers_and_failed_asks_claim_nothing() -> None:
    entries = [logged(0, "x", answered=("court",)), logged(1, "y", answered=(), failed=("samr",))]
    mismatches, _ = compare("samr", entries, [])
    assert mismatches == []


def test_enterprise_mismatch() -> None:
    mismatches, _ = compare("samr", [logged(0, "r1", uscc=B)], [answer("r1", uscc=A)])
    assert kinds(mismatches) == [("enterprise_mismatch", "r1")]


def test_recent_unlogged_answers_are_pending_not_flagged() -> None:
    recent = answer("r9", ago_s=1)
    old = answer("r8", ago_s=600)
    cutoff = NOW - dt.timedelta(seconds=10)
    mismatches, pending = compare("samr", [], [recent, old], pending_after=cutoff)
    assert kinds(mismatches) == [("missing_from_log", "r8")] and pending == [recent]
    mismatches, pending = compare("samr", [], [recent, old])
    assert kinds(mismatches) == [("missing_from_log", "r8"), ("missing_from_log", "r9")]


def test_metric_lines() -> None:
    report = ReconcileReport("samr", tree_size=9, entries_verified=3, ledger_answered=4)
    report.mismatches, _ = compare("samr", [], [answer("r1")])
    text = report.metrics_text(now=1700000000)
    assert 'veil_reconcile_mismatches{provider="samr",kind="missing_from_log"} 1' in text
    assert 'veil_reconcile_mismatches{provider="samr",kind="unanswered_claim"} 0' in text
    assert 'veil_reconcile_tree_size{provider="samr"} 9' in text
    assert text.endswith('veil_reconcile_last_run_timestamp_seconds{provider="samr"} 1700000000\n')
