"""The authorization part of ``veil demo``: an enterprise grants a bank, the bank fetches,
the enterprise sees the use and revokes, and the next fetch is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from veil.catalog import load_catalog
from veil.errors import VeilError
from veil.v1 import authorization_pb2 as apb
from veil.v1 import (
    authorization_pb2_grpc,
    common_pb2,
    institution_pb2,
    institution_pb2_grpc,
)
from veil_cli.authz_setup import enroll_enterprise
from veil_cli.calls import call_gateway, call_platform
from veil_cli.commands.enterprise import grants_table, make_grant_jws, make_revocation_jws
from veil_cli.commands.fetch import fetch_authorized
from veil_cli.commands.institution import show as show_institution
from veil_cli.federation import Federation
from veil_cli.render import console, kv_table, report_table

DEMO_FIELDS = (
    "tax_grade",
    "tax_consecutive_normal_months",
    "si_in_arrears",
    "hf_avg_monthly_contributors",
    "util_elec_avg_12m",
)
SECRET_FIELD = "tax_vat_paid_last_year"  # verification-only: never leaves the tax bureau
PURPOSE = "loan_origination"
LOAN_REF = "LOAN-2026-000123"
REVOCATION_WAIT_S = 5.0


def step(title: str) -> None:
    console.rule(f"[bold cyan]{title}")


async def fetch(
    client: str, uscc: str, grant_id: str, fields: tuple[str, ...]
) -> list[common_pb2.DatasetRecords]:
    _, datasets = await fetch_authorized(
        client, uscc, fields, grant_id=grant_id, purpose=PURPOSE, loan_ref=LOAN_REF
    )
    return datasets


async def refused(label: str, call: Awaitable[object]) -> None:
    try:
        await call
    except VeilError as exc:
        console.print(f"{label}: [yellow]{exc.code.name}[/]: {exc.message}")
        return
    raise VeilError(f"{label} was not refused")


async def authorization_session(fed: Federation, uscc: str, name: str, institution: str) -> None:
    client = str(fed.workdir / "client.toml")

    step("4. The bank was admitted: applied → assessed → active, its signing key published")
    record = await call_platform(
        str(fed.workdir / "admin.toml"),
        institution_pb2_grpc.InstitutionRegistryStub,
        "GetInstitution",
        institution_pb2.GetInstitutionRequest(id=institution),
    )
    show_institution(record)

    step(f"5. Enterprise {uscc} (real-name key certified by the EIA) grants the bank")
    enterprise = str(enroll_enterprise(fed, uscc, name))
    jws = make_grant_jws(
        enterprise,
        institution=institution,
        fields=list(DEMO_FIELDS),
        uses=["fetch"],
        purpose=PURPOSE,
        loan_ref=LOAN_REF,
        days=30,
    )
    info = await call_gateway(
        enterprise,
        authorization_pb2_grpc.AuthorizationServiceStub,
        "CreateGrant",
        apb.CreateGrantRequest(grant_jws=jws),
    )
    console.print(grants_table([info], "the enterprise's signed grant, stored at the platform"))

    step("6. The bank fetches the authorized items; every provider checks the grant itself")
    console.print(
        "each provider seals its answer to the bank's one-time key: the platform relays "
        "ciphertext it cannot read"
    )
    answer = await fetch(client, uscc, info.grant_id, DEMO_FIELDS)
    console.print(
        report_table(
            uscc,
            f"{name}, under grant {info.grant_id[:8]}…",
            answer,
            load_catalog(),
            kind="Authorized detail",
        )
    )
    await refused(
        f"asking for {SECRET_FIELD} (a commercial secret)",
        fetch(client, uscc, info.grant_id, (SECRET_FIELD,)),
    )
    await refused(
        "asking for a field outside the grant (samr_registered_capital)",
        fetch(client, uscc, info.grant_id, ("samr_registered_capital",)),
    )

    step("7. The enterprise sees each use of its grant, then revokes it")
    uses = await call_gateway(
        enterprise,
        authorization_pb2_grpc.AuthorizationServiceStub,
        "ListGrantUses",
        apb.ListGrantUsesRequest(grant_id=info.grant_id),
    )
    for use in uses.uses:
        console.print(
            f"{use.at}  {use.institution}  {use.use}  {','.join(use.fields)}  → {use.outcome}"
        )
    revoked = await call_gateway(
        enterprise,
        authorization_pb2_grpc.AuthorizationServiceStub,
        "RevokeGrant",
        apb.RevokeGrantRequest(revocation_jws=make_revocation_jws(enterprise, info.grant_id)),
    )
    console.print(
        kv_table("revoked", {"grant": revoked.grant_id, "revoked at": revoked.revoked_at})
    )
    t0 = time.monotonic()
    await refused("the bank's next fetch", fetch(client, uscc, info.grant_id, DEMO_FIELDS))
    await asyncio.sleep(max(0.0, REVOCATION_WAIT_S - (time.monotonic() - t0)))
    console.print("providers have pulled the enterprise-signed revocation (≤ 5 s) as well")
