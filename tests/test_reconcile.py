"""Provider reconciliation logic: ledger answers against verified log entries."""

from __future__ import annotations

import datetime as dt

from provider_node.reconcile import MAX_ROUNDS, Answer, ReconcileReport, compare, data_uses
from veil.audit.entry import AuditEvent, EventType, decode_entry, encode_entry
from veil.audit.verify import VerifiedEntry
from veil.request_ids import round_ids
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
    type_: str = EventType.LOOKUP,
    rounds: int = 1,
) -> VerifiedEntry:
    leaf = encode_entry(
        AuditEvent(
            type=type_,
            actor="institution/bank",
            request_id=rid,
            enterprise=uscc,
            providers=answered,
            providers_failed=failed,
            detail={"rounds": rounds} if rounds > 1 else {},
        ),
        NOW,
    )
    return VerifiedEntry(index, leaf, decode_entry(leaf))


def answer(rid: str, *, uscc: str = A, ago_s: float = 600, method: str = "FetchPublic") -> Answer:
    return Answer(rid, NOW - dt.timedelta(seconds=ago_s), method, uscc)


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


def test_a_batch_job_is_one_use_and_model_installs_are_not_uses() -> None:
    job = "c61c9551-4951-449a-8b71-155539e1d61f"
    ledger = [
        answer("sme@1", uscc="", method="InstallModel"),
        answer(job, uscc="", method="InstallBatch"),
        answer(f"{job}:0", uscc="", method="BatchPartial"),
        answer(f"{job}:1", uscc="", method="BatchPartial"),
        answer("r1"),
    ]
    uses = data_uses(ledger)
    assert [(u.request_id, u.method) for u in uses] == [(job, "BatchJob"), ("r1", "FetchPublic")]
    started = logged(3, job, uscc="", type_=EventType.BATCH)
    mismatches, _ = compare("samr", [started, logged(4, "r1")], uses)
    assert mismatches == []
    # a job whose chunks the provider answered but that the log never recorded
    mismatches, _ = compare("samr", [logged(4, "r1")], uses)
    assert kinds(mismatches) == [("missing_from_log", job)]
    # a job the log says the provider took part in, with nothing in its ledger
    mismatches, _ = compare("samr", [started, logged(4, "r1")], data_uses(ledger[-1:]))
    assert kinds(mismatches) == [("unanswered_claim", job)]


def test_rounds_of_a_re_run_score_are_one_use() -> None:
    rid = "c" * 64  # a full-length id: round ids are cut to fit the stores
    first, second, third = round_ids(rid, 3)
    entry = logged(4, rid, answered=("samr",), failed=("tax",), type_=EventType.SCORE, rounds=3)
    rows = [answer(first), answer(second), answer(third)]
    assert compare("samr", [entry], rows) == ([], [])
    # without the rounds in the entry, the extra rounds are undisclosed uses
    plain = logged(4, rid, answered=("samr",), type_=EventType.SCORE)
    mismatches, _ = compare("samr", [plain], rows)
    assert kinds(mismatches) == [("missing_from_log", second), ("missing_from_log", third)]
    # a round id the entry does not cover is still flagged
    mismatches, _ = compare("samr", [entry], [*rows, answer(round_ids(rid, 4)[3])])
    assert kinds(mismatches) == [("missing_from_log", round_ids(rid, 4)[3])]
    # an absurd round count folds no more than MAX_ROUNDS rounds
    huge = logged(4, rid, type_=EventType.SCORE, rounds=10**9)
    beyond = answer(round_ids(rid, MAX_ROUNDS + 1)[MAX_ROUNDS])
    mismatches, _ = compare("samr", [huge], [answer(first), beyond])
    assert kinds(mismatches) == [("missing_from_log", beyond.request_id)]
