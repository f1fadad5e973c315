"""``veil certs init``: a development CA and per-node certificates (mutual TLS).

Production deployments use their own CA (see deploy/README.md); this makes one for
development and the demo.  Each certificate carries the identity ``veil://ROLE/NAME``
that peers check.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from veil.certs import init_dev_pki
from veil.errors import InvalidArgument

ROLES = ("provider", "platform", "gateway", "institution", "enterprise", "auditor", "admin")


def parse_node(text: str) -> tuple[str, str]:
    role, sep, name = text.partition(":")
    if not sep or role not in ROLES or not name:
        raise InvalidArgument(
            f"--node {text!r}: expected ROLE:NAME with ROLE one of {', '.join(ROLES)}"
        )
    return role, name


def run(args: argparse.Namespace) -> int:
    nodes = [parse_node(n) for n in args.node]
    if not nodes:
        raise InvalidArgument("give at least one --node ROLE:NAME")
    paths = init_dev_pki(Path(args.out), nodes)
    for name, p in sorted(paths.items()):
        print(f"{name}: cert {p.cert}  key {p.key}")
    print(f"CA: {Path(args.out) / 'ca.pem'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("certs", help="development certificates for mutual TLS")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="create (or reuse) a development CA and issue node certificates"
    )
    init.add_argument("--out", required=True, help="directory for ca.pem and NAME.pem/.key")
    init.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="ROLE:NAME",
        help="a node to certify, e.g. provider:tax, platform:platform, institution:demo-bank",
    )
    init.set_defaults(run=run)
