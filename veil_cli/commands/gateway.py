"""``veil gateway serve --config FILE``: run the gateway."""

from __future__ import annotations

import argparse

from veil_cli.commands._serve import ServeFn, add_serve_parser


def _serve() -> ServeFn:
    from gateway.daemon import serve

    return serve


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_serve_parser(subparsers, "gateway", "run the gateway", _serve)
