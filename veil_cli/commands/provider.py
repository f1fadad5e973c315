"""``veil provider serve --config FILE``: run a data-providing unit's node."""

from __future__ import annotations

import argparse

from veil_cli.commands._serve import ServeFn, add_serve_parser


def _serve() -> ServeFn:
    from provider_node.daemon import serve

    return serve


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_serve_parser(subparsers, "provider", "run a data-providing unit's node", _serve)
