"""``veil enterprise …``: an enterprise grants, lists and revokes authorizations (经企业授权).

Grants and revocations are signed here, on the enterprise's side, with its own key
(``[identity]`` in its client.toml, certified by the EIA); the platform and every
provider verify that signature.  Also: every use made under a grant, and letters
(授权书) awaiting confirmation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.table import Table

from veil.errors import InvalidArgument
from veil.tokens import PURPOSES, USES, Grant, sign_grant, sign_revocation
from veil.v1 import authorization_pb2 as pb
from veil.v1 import authorization_pb2_grpc
from veil_cli.calls import call_gateway
from veil_cli.client import add_config_argument, load_client_config
from veil_cli.render import console, kv_table

DAY_S = 86_400


def make_grant_jws(
    config_path: str,
    *,
    institution: str,
    fields: list[str],
    uses: list[str],
    purpose: str,
    loan_ref: str,
    days: float,
    letter_sha256: str | None = None,
    now: int | None = None,
) -> str:
    identity = load_client_config(config_path).require_identity()
    if identity.eia_certificate is None:
        raise InvalidArgument("an enterprise identity needs identity.eia_certificate")
    t = int(time.time()) if now is None else now
    grant = Grant(
        grant_id=str(uuid.uuid4()),
        uscc=identity.issuer,
        institution=institution,
        fields=tuple(fields),
        uses=tuple(uses),
        purpose=purpose,
        loan_ref=loan_ref,
        not_before=t,
        expires=t + int(days * DAY_S),
        issued_at=t,
        letter_sha256=letter_sha256,
    )
    return sign_grant(identity.key, identity.eia_certificate, grant)


def make_revocation_jws(config_path: str, grant_id: str) -> str:
    identity = load_client_config(config_path).require_identity()
    if identity.eia_certificate is None:
        raise InvalidArgument("an enterprise identity needs identity.eia_certificate")
    return sign_revocation(
        identity.key, identity.eia_certificate, uscc=identity.issuer, grant_id=grant_id
    )


def _call(config: str, method: str, request: object) -> object:
    return asyncio.run(
        call_gateway(config, authorization_pb2_grpc.AuthorizationServiceStub, method, request, 10.0)
    )


def _properties(g: pb.GrantInfo) -> dict[str, str]:
    return {
        "grant": g.grant_id,
        "institution": g.institution,
        "state": pb.GrantState.Name(g.state).removeprefix("GRANT_STATE_").lower(),
        "uses": ", ".join(g.uses),
        "purpose": g.purpose,
        "loan ref": g.loan_ref,
        "fields": ", ".join(g.fields),
        "until": g.expires,
    }


def grants_table(grants: list[pb.GrantInfo], title: str) -> Table:
    """One grant as a list of its properties (it fits a narrow terminal), several as a
    table with a row each."""
    if len(grants) == 1:
        return kv_table(title, _properties(grants[0]))
    table = Table(title=title)
    for col in _properties(pb.GrantInfo()):  # the column names
        table.add_column(col, overflow="fold")
    for g in grants:
        table.add_row(*_properties(g).values())
    return table


def _request(args: argparse.Namespace) -> tuple[str, Message]:
    """The AuthorizationService method and request for one ``veil enterprise`` action."""
    if args.action == "grant":
        jws = make_grant_jws(
            args.config,
            institution=args.institution,
            fields=[f for part in args.fields for f in part.split(",") if f],
            uses=[u for part in args.use for u in part.split(",") if u] or ["fetch"],
            purpose=args.purpose,
            loan_ref=args.loan_ref,
            days=args.days,
            letter_sha256=args.letter,
        )
        return "CreateGrant", pb.CreateGrantRequest(grant_jws=jws)
    if args.action == "revoke":
        jws = make_revocation_jws(args.config, args.grant_id)
        return "RevokeGrant", pb.RevokeGrantRequest(revocation_jws=jws)
    if args.action == "grants":
        return "ListGrants", pb.ListGrantsRequest()
    if args.action == "uses":
        return "ListGrantUses", pb.ListGrantUsesRequest(grant_id=args.grant_id)
    return "ListLetters", pb.ListLettersRequest()


def run(args: argparse.Namespace) -> int:
    method, request = _request(args)
    answer = _call(args.config, method, request)
    if args.json:
        assert isinstance(answer, Message)
        print(json.dumps(json_format.MessageToDict(answer), ensure_ascii=False, indent=2))
    elif isinstance(answer, pb.GrantInfo):
        title = "grant created" if args.action == "grant" else "grant revoked"
        console.print(grants_table([answer], title))
    elif isinstance(answer, pb.ListGrantsResponse):
        console.print(grants_table(list(answer.grants), "grants"))
    elif isinstance(answer, pb.ListGrantUsesResponse):
        table = Table(title=f"uses under grant {args.grant_id}")
        for col in ("time", "institution", "use", "fields", "providers", "outcome", "request"):
            table.add_column(col, overflow="fold")
        for u in answer.uses:
            table.add_row(
                u.at,
                u.institution,
                u.use,
                ", ".join(u.fields),
                ", ".join(u.providers),
                u.outcome,
                u.request_id,
            )
        console.print(table)
    else:
        assert isinstance(answer, pb.ListLettersResponse)
        table = Table(title="authorization letters (授权书)")
        for col in ("letter", "institution", "sha256", "title", "state", "loan ref"):
            table.add_column(col, overflow="fold")
        for letter in answer.letters:
            table.add_row(
                letter.letter_id,
                letter.institution,
                letter.sha256,
                letter.title,
                letter.state,
                letter.loan_ref,
            )
        console.print(table)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("enterprise", help="an enterprise's authorizations")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    grant = actions.add_parser("grant", help="authorize an institution (signed here)")
    grant.add_argument("--institution", required=True)
    grant.add_argument("--fields", action="append", required=True, help="catalog field ids")
    grant.add_argument(
        "--use",
        action="append",
        default=[],
        help=f"one of {', '.join(USES)}; repeatable (default: fetch)",
    )
    grant.add_argument("--purpose", required=True, choices=PURPOSES)
    grant.add_argument("--loan-ref", required=True, help="the loan-application reference")
    grant.add_argument("--days", type=float, default=30.0, help="validity window in days")
    grant.add_argument("--letter", help="SHA-256 of the written letter this grant confirms")
    revoke = actions.add_parser("revoke", help="revoke a grant (signed here)")
    revoke.add_argument("grant_id")
    actions.add_parser("grants", help="my grants")
    uses = actions.add_parser("uses", help="every use under one of my grants")
    uses.add_argument("grant_id")
    actions.add_parser("letters", help="letters awaiting my confirmation")
    for sub in actions.choices.values():
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
        add_config_argument(sub)
    parser.set_defaults(run=run)
