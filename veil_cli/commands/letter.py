"""``veil letter upload --uscc U --file 授权书.pdf …``: an institution registers a written
authorization letter by its SHA-256; the enterprise confirms it online with
``veil enterprise grant --letter <sha256>``.  The document itself never leaves the bank."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from pathlib import Path

from veil.tokens import PURPOSES
from veil.v1 import authorization_pb2 as pb
from veil.v1 import authorization_pb2_grpc
from veil_cli.calls import call_gateway
from veil_cli.client import add_config_argument
from veil_cli.render import console, kv_table


def run(args: argparse.Namespace) -> int:
    digest = hashlib.sha256(Path(args.file).read_bytes()).hexdigest()
    info = asyncio.run(
        call_gateway(
            args.config,
            authorization_pb2_grpc.AuthorizationServiceStub,
            "UploadLetter",
            pb.UploadLetterRequest(
                uscc=args.uscc,
                sha256=digest,
                title=args.title,
                signed_on=args.signed_on,
                purpose=args.purpose,
                loan_ref=args.loan_ref,
                fields=[f for part in args.fields for f in part.split(",") if f],
            ),
            10.0,
        )
    )
    console.print(
        kv_table(
            "authorization letter registered",
            {"letter": info.letter_id, "sha256": info.sha256, "state": info.state},
        )
    )
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("letter", help="written authorization letters (授权书)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("upload", help="register a signed letter by its hash")
    up.add_argument("--uscc", required=True)
    up.add_argument("--file", required=True, help="the signed letter (hashed locally)")
    up.add_argument("--title", required=True)
    up.add_argument("--signed-on", required=True, help="YYYY-MM-DD")
    up.add_argument("--purpose", required=True, choices=PURPOSES)
    up.add_argument("--loan-ref", required=True)
    up.add_argument("--fields", action="append", required=True)
    add_config_argument(up)
    parser.set_defaults(run=run)
