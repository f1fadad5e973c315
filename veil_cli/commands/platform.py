"""``veil platform serve --config FILE``: run the platform node."""

from __future__ import annotations

import argparse

from veil_cli.commands._serve import ServeFn, add_serve_parser


def _serve() -> ServeFn:
    from platform_node.daemon import serve

    return serve


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_serve_parser(subparsers, "platform", "run the platform node", _serve)
