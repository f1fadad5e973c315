"""``veil provider reconcile --config provider.toml``: usage feedback for one provider.

Pulls the transparency-log entries naming this provider through the gateway (with
the node's certificate), verifies each against a verified checkpoint, and compares
them with the node's own ledger (see :mod:`provider_node.reconcile`).  Prints the
result and Prometheus-style metric lines; ``--metrics-file`` also writes them for a
textfile collector.

Exit codes: 0 clean; 1 mismatches found (each is logged as a ``RECONCILE MISMATCH``
line); 2 configuration; 3 ALARM — the log itself did not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from veil.audit.entry import parse_time
from veil.audit.verify import AuditAlarm
from veil.config import load_node_config
from veil.errors import ConfigError

ALARM_EXIT = 3


def run_reconcile(args: argparse.Namespace) -> int:
    from provider_node.reconcile import reconcile, write_metrics

    config = load_node_config(args.config, environ=os.environ)
    if config.role != "provider":
        raise ConfigError(str(config.path), "node.role", f"is {config.role!r}, expected 'provider'")
    since = parse_time(args.since) if args.since else None
    try:
        report = asyncio.run(reconcile(config, since=since, settle_s=args.settle))
    except AuditAlarm as exc:
        print(f"ALARM ({type(exc).__name__}): {exc.message}", file=sys.stderr)
        return ALARM_EXIT
    metrics = report.metrics_text()
    if args.metrics_file:
        write_metrics(Path(args.metrics_file), metrics)
    if args.json:
        doc = {
            "provider": report.provider,
            "tree_size": report.tree_size,
            "entries_verified": report.entries_verified,
            "ledger_answered": report.ledger_answered,
            "clean": report.clean,
            "mismatches": [m.__dict__ for m in report.mismatches],
        }
        print(json.dumps(doc, ensure_ascii=False))
    else:
        verdict = "clean" if report.clean else f"{len(report.mismatches)} MISMATCH(ES)"
        print(
            f"provider {report.provider}: {report.entries_verified} log entries verified "
            f"(tree size {report.tree_size}), {report.ledger_answered} answers in the ledger: "
            f"{verdict}"
        )
        for m in report.mismatches:
            print(f"  {m.kind} {m.request_id}: {m.detail}")
        sys.stdout.write(metrics)
    return 0 if report.clean else 1


def add_reconcile_parser(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser(
        "reconcile", help="compare the node's ledger with the transparency log (usage feedback)"
    )
    p.add_argument("--config", required=True, help="the provider node's TOML configuration")
    p.add_argument("--since", help="only requests from this RFC 3339 time on")
    p.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds to wait for very recent answers to be logged before flagging them",
    )
    p.add_argument("--metrics-file", help="also write the metric lines to this file")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(run=run_reconcile)
