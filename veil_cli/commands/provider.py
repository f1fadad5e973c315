"""``veil provider serve|reconcile --config FILE``: run a data-providing unit's node, or
reconcile its ledger with the transparency log."""

from __future__ import annotations

import argparse

from veil_cli.commands._reconcile import add_reconcile_parser
from veil_cli.commands._serve import ServeFn, add_serve_parser


def _serve() -> ServeFn:
    from provider_node.daemon import serve

    return serve


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    actions = add_serve_parser(subparsers, "provider", "run a data-providing unit's node", _serve)
    add_reconcile_parser(actions)
