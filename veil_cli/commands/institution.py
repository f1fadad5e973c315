"""``veil institution …``: administrators manage access institutions (接入机构).

Every subcommand takes ``--config admin.toml`` (an administrator's certificate and the
platform's address) and prints the institution as the registry now holds it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from rich.table import Table

from veil.errors import InvalidArgument
from veil.v1 import institution_pb2 as pb
from veil.v1 import institution_pb2_grpc
from veil_cli.calls import call_platform
from veil_cli.client import add_config_argument
from veil_cli.render import console

TYPES = {
    "bank": pb.INSTITUTION_TYPE_BANK,
    "insurer": pb.INSTITUTION_TYPE_INSURER,
    "guarantor": pb.INSTITUTION_TYPE_GUARANTOR,
    "credit_service": pb.INSTITUTION_TYPE_CREDIT_SERVICE,
}
STATE_ACTIONS = {
    "assess": pb.INSTITUTION_STATE_ASSESSED,
    "activate": pb.INSTITUTION_STATE_ACTIVE,
    "suspend": pb.INSTITUTION_STATE_SUSPENDED,
    "revoke": pb.INSTITUTION_STATE_REVOKED,
}


def show(inst: pb.Institution) -> None:
    table = Table(title=f"institution {inst.id}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("name", inst.name)
    table.add_row("type", pb.InstitutionType.Name(inst.type).removeprefix("INSTITUTION_TYPE_"))
    table.add_row("state", pb.InstitutionState.Name(inst.state).removeprefix("INSTITUTION_STATE_"))
    table.add_row("purposes", ", ".join(inst.purposes))
    table.add_row("daily quota", str(inst.daily_quota))
    keys = json.loads(inst.jwks_json or '{"keys": []}')["keys"]
    table.add_row("keys", ", ".join(f"{k.get('kid')} ({k.get('alg')})" for k in keys) or "—")
    for change in inst.history:
        table.add_row(
            "history",
            f"{change.at}: "
            f"{pb.InstitutionState.Name(change.from_state).removeprefix('INSTITUTION_STATE_')} → "
            f"{pb.InstitutionState.Name(change.to_state).removeprefix('INSTITUTION_STATE_')} "
            f"by {change.decided_by}: {change.reason}",
        )
    console.print(table)


def _call(args: argparse.Namespace, method: str, request: object) -> object:
    return asyncio.run(
        call_platform(
            args.config, institution_pb2_grpc.InstitutionRegistryStub, method, request, 10.0
        )
    )


def run(args: argparse.Namespace) -> int:
    action = args.action
    result: object
    if action == "register":
        result = _call(
            args,
            "RegisterInstitution",
            pb.RegisterInstitutionRequest(
                id=args.id,
                name=args.name,
                type=TYPES[args.type],
                purposes=args.purpose,
                daily_quota=args.daily_quota,
                reason=args.reason,
            ),
        )
    elif action in STATE_ACTIONS:
        result = _call(
            args,
            "SetInstitutionState",
            pb.SetInstitutionStateRequest(
                id=args.id, state=STATE_ACTIONS[action], reason=args.reason
            ),
        )
    elif action == "update":
        request = pb.UpdateInstitutionRequest(
            id=args.id, name=args.name or "", purposes=args.purpose or [], reason=args.reason
        )
        if args.daily_quota is not None:
            request.daily_quota = args.daily_quota
        result = _call(args, "UpdateInstitution", request)
    elif action == "add-key":
        text = Path(args.jwk).read_text()
        result = _call(
            args, "AddInstitutionKey", pb.AddInstitutionKeyRequest(id=args.id, jwk_json=text)
        )
    elif action == "remove-key":
        result = _call(
            args, "RemoveInstitutionKey", pb.RemoveInstitutionKeyRequest(id=args.id, kid=args.kid)
        )
    elif action == "show":
        result = _call(args, "GetInstitution", pb.GetInstitutionRequest(id=args.id))
    elif action == "list":
        listing = _call(args, "ListInstitutions", pb.ListInstitutionsRequest())
        assert isinstance(listing, pb.ListInstitutionsResponse)
        table = Table(title="access institutions")
        for col in ("id", "name", "type", "state", "keys", "daily quota"):
            table.add_column(col)
        for inst in listing.institutions:
            table.add_row(
                inst.id,
                inst.name,
                pb.InstitutionType.Name(inst.type).removeprefix("INSTITUTION_TYPE_").lower(),
                pb.InstitutionState.Name(inst.state).removeprefix("INSTITUTION_STATE_").lower(),
                str(len(json.loads(inst.jwks_json or '{"keys": []}')["keys"])),
                str(inst.daily_quota),
            )
        console.print(table)
        return 0
    else:
        raise InvalidArgument(f"unknown action {action!r}")
    assert isinstance(result, pb.Institution)
    show(result)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("institution", help="manage access institutions (admin)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    reg = actions.add_parser("register", help="record an institution's application")
    reg.add_argument("id", help="lowercase id, e.g. icbc-gd (not a USCC)")
    reg.add_argument("--name", required=True)
    reg.add_argument("--type", required=True, choices=sorted(TYPES))
    reg.add_argument(
        "--purpose", action="append", required=True, help="allowed purpose (repeatable)"
    )
    reg.add_argument("--daily-quota", type=int, default=10_000)
    reg.add_argument("--reason", default="application received")
    for name, help_text in (
        ("assess", "security assessment passed"),
        ("activate", "admit: calls are accepted"),
        ("suspend", "refuse its calls at once (reversible)"),
        ("revoke", "terminate (irreversible)"),
    ):
        p = actions.add_parser(name, help=help_text)
        p.add_argument("id")
        p.add_argument("--reason", required=True, help="recorded with the decision")
    upd = actions.add_parser("update", help="change name, allowed purposes or daily quota")
    upd.add_argument("id")
    upd.add_argument("--name")
    upd.add_argument("--purpose", action="append", help="allowed purpose (repeatable; replaces)")
    upd.add_argument("--daily-quota", type=int)
    upd.add_argument("--reason", required=True, help="recorded with the change")
    add_key = actions.add_parser("add-key", help="publish a signing key (public JWK file)")
    add_key.add_argument("id")
    add_key.add_argument("--jwk", required=True, help="file with one public JWK (veil keygen)")
    rm_key = actions.add_parser("remove-key", help="withdraw a signing key")
    rm_key.add_argument("id")
    rm_key.add_argument("kid")
    show_p = actions.add_parser("show", help="one institution with its history")
    show_p.add_argument("id")
    actions.add_parser("list", help="every institution")
    for sub in actions.choices.values():
        add_config_argument(sub)
    parser.set_defaults(run=run)
