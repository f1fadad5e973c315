"""The verification part of ``veil demo`` (数据核验): a bank checks what an enterprise
declared on its loan application, single facts and checks across providers, and gets
every answer signed."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from rich.table import Table

from veil.catalog import load_catalog
from veil.errors import VeilError
from veil.store import ProviderStore, load_mapping
from veil.v1 import authorization_pb2 as apb
from veil.v1 import authorization_pb2_grpc
from veil.v1 import verification_pb2 as vpb
from veil_cli.authz_setup import enroll_enterprise
from veil_cli.calls import call_gateway
from veil_cli.commands.enterprise import make_grant_jws
from veil_cli.commands.verify import (
    print_batch,
    protocol_name,
    result_text,
    verify,
    verify_batch,
)
from veil_cli.render import console, kv_table

PURPOSE = "loan_origination"
LOAN_REF = "LOAN-2026-000456"
FIELDS = (
    "tax_in_arrears",
    "tax_vat_paid_last_year",
    "si_in_arrears",
    "hf_consecutive_normal_months",
    "hf_total_contribution_last_year",
    "util_water_in_arrears",
    "util_elec_in_arrears",
    "util_gas_in_arrears",
    "re_certificate_no",
    "re_area",
    "samr_report_year",
    "samr_total_revenue",
    "samr_external_guarantee",
)


def step(title: str) -> None:
    console.rule(f"[bold cyan]{title}")


APPLICATION_FIELDS = {
    "tax": ["tax_vat_paid_last_year"],
    "housing_fund": ["hf_total_contribution_last_year"],
    "utilities": ["util_gas_account_no"],
    "real_estate": ["re_certificate_no", "re_area"],
    "samr": ["samr_report_year", "samr_total_revenue"],
}


def _applications(fed: Any, usccs: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """What each enterprise wrote on its loan application.  (The demo takes it from the
    synthetic records, so most declarations are true; one is inflated on purpose.)"""
    catalog = load_catalog()
    stores = {
        unit: ProviderStore(
            f"sqlite:///{fed.data / (unit + '.db')}", load_mapping(unit, catalog), catalog
        )
        for unit in APPLICATION_FIELDS
    }
    try:
        for uscc in usccs:
            out: dict[str, Any] = {}
            for unit, fields in APPLICATION_FIELDS.items():
                for rows in stores[unit].fetch(uscc, fields).values():
                    if rows:
                        out.update({k: v for k, v in rows[-1].items() if v is not None})
            yield uscc, out
    finally:
        for store in stores.values():
            store.close()


def _applicant(fed: Any, fallback: str) -> tuple[str, dict[str, Any]]:
    """An enterprise with records at all six providers, so that the checks show answers
    rather than mostly 'no record' (the first enterprise may well have no property)."""
    with (fed.data / "labels.csv").open(newline="") as fh:
        usccs = [row["uscc"] for _, row in zip(range(300), csv.DictReader(fh), strict=False)]
    first: tuple[str, dict[str, Any]] | None = None
    for uscc, app in _applications(fed, [fallback, *usccs]):
        first = first or (uscc, app)
        if all(k in app for f in APPLICATION_FIELDS.values() for k in f) and app.get(
            "tax_vat_paid_last_year"
        ):
            return uscc, app
    assert first is not None
    return first


def _declarations(app: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    vat = Decimal(str(app.get("tax_vat_paid_last_year", 1_000_000)))
    revenue = Decimal(str(app.get("samr_total_revenue", 1000)))
    year = int(app.get("samr_report_year", 2024))
    cert = app.get("re_certificate_no", "京(2020)北京市不动产权第0000000号")
    area = Decimal(str(app.get("re_area", 100)))
    no: list[dict[str, Any]] = [
        {"field": f, "op": "eq", "value": False}
        for f in ("tax_in_arrears", "si_in_arrears", "util_water_in_arrears")
    ]
    no += [
        {"field": "util_elec_in_arrears", "op": "eq", "value": False},
        {"field": "util_gas_in_arrears", "op": "eq", "value": False},
        {"field": "hf_consecutive_normal_months", "op": "ge", "value": 1, "unit": "month"},
    ]
    return [
        ("no tax arrears", no[0]),
        (
            f"VAT paid last year ≥ {vat * Decimal('0.8'):,.0f} CNY (asked exactly; snapped)",
            {
                "field": "tax_vat_paid_last_year",
                "op": "ge",
                "value": str(vat * Decimal("0.8")),
                "unit": "CNY",
            },
        ),
        (
            f"owns property {cert}, about {area} m² (±1 %)",
            {
                "exists": "re_properties",
                "where": [
                    {"field": "re_certificate_no", "op": "eq", "value": cert},
                    {
                        "field": "re_area",
                        "op": "within",
                        "value": str(area),
                        "relative": "0.01",
                        "unit": "m2",
                    },
                ],
            },
        ),
        (
            f"{year} revenue ≥ {revenue * 2:,.0f} 万元 (inflated on the application)",
            {
                "exists": "samr_annual_report",
                "where": [
                    {"field": "samr_report_year", "op": "eq", "value": year},
                    {
                        "field": "samr_total_revenue",
                        "op": "ge",
                        "value": str(revenue * 2),
                        "unit": "CNY_10k",
                    },
                ],
            },
        ),
        (
            "no arrears anywhere (tax, social insurance, housing fund, water, power, gas), a "
            "registered property, a 2024 annual report without external guarantees",
            {
                "all": [
                    *no,
                    {"exists": "re_properties"},
                    {
                        "exists": "samr_annual_report",
                        "where": [
                            {"field": "samr_report_year", "op": "eq", "value": 2024},
                            {"field": "samr_external_guarantee", "op": "eq", "value": False},
                        ],
                    },
                ]
            },
        ),
        (
            f"VAT paid + housing-fund contributions ≥ {vat / 2:,.0f} CNY",
            {
                "sum": ["tax_vat_paid_last_year", "hf_total_contribution_last_year"],
                "op": "ge",
                "value": str(vat / 2),
                "unit": "CNY",
            },
        ),
        (
            "at least 3 of: no tax, SI or gas arrears, ≥ 12 months of housing fund, a property",
            {
                "at_least": 3,
                "of": [
                    no[0],
                    no[1],
                    no[4],
                    {
                        "field": "hf_consecutive_normal_months",
                        "op": "ge",
                        "value": 12,
                        "unit": "month",
                    },
                    {"exists": "re_properties"},
                ],
            },
        ),
    ]


async def grant_verification(fed: Any, uscc: str, name: str, institution: str) -> Any:
    """The enterprise (enrolled now) grants ``institution`` verification of FIELDS."""
    enterprise = str(enroll_enterprise(fed, uscc, name))
    return await call_gateway(
        enterprise,
        authorization_pb2_grpc.AuthorizationServiceStub,
        "CreateGrant",
        apb.CreateGrantRequest(
            grant_jws=make_grant_jws(
                enterprise,
                institution=institution,
                fields=list(FIELDS),
                uses=["verify"],
                purpose=PURPOSE,
                loan_ref=LOAN_REF,
                days=30,
            )
        ),
    )


async def verification_session(fed: Any, uscc: str, name: str, institution: str) -> None:
    client = str(fed.workdir / "client.toml")
    applicant, application = _applicant(fed, uscc)
    if applicant != uscc:
        uscc, name = applicant, f"申请企业{applicant[-4:]}"

    step(f"Verification 1. Enterprise {uscc} grants the bank verification (数据核验) only")
    grant = await grant_verification(fed, uscc, name, institution)
    console.print(f"grant {grant.grant_id}: verify {len(FIELDS)} fields, values never leave")

    step("Verification 2. The bank checks the declared facts; only yes / no / no record leaves")
    table = Table(title=f"Declared facts of {uscc}, verified", show_lines=False)
    for column in ("declared", "answer", "how", "log"):
        table.add_column(column)
    signed_example: tuple[vpb.VerifyResponse, dict[str, Any]] | None = None
    snapped = ""
    for label, claim in _declarations(application):
        request = vpb.VerifyRequest(
            uscc=uscc,
            grant_id=grant.grant_id,
            purpose=PURPOSE,
            loan_ref=LOAN_REF,
            claim_json=json.dumps(claim, ensure_ascii=False),
        )
        try:
            answer, claims = await verify(client, request)
        except VeilError as exc:
            table.add_row(label, f"[yellow]{exc.code.name}[/]", exc.message[:60], "")
            continue
        how = protocol_name(answer.protocol)
        if how == "single":
            how += f" ({answer.providers[0]}, signed by it)"
        else:
            how += f" under encryption ({len(answer.providers)} providers)"
        table.add_row(label, result_text(answer.result), how, str(answer.log_index))
        if "snapped" in label:
            snapped = f"{label.split(' (')[0]} → verified as {answer.claim_json}"
        if answer.protocol == vpb.VERIFICATION_PROTOCOL_ALL:
            signed_example = (answer, claims)
    console.print(table)
    console.print(f"thresholds snap to the published grid: {snapped}")

    step("Verification 3. Each answer is a JWS signed by the platform, checked with its JWKS")
    if signed_example is not None:
        answer, claims = signed_example
        console.print(
            kv_table(
                "signed result (verified)",
                {k: json.dumps(v, ensure_ascii=False) for k, v in claims.items()},
            )
        )
        console.print(f"{answer.signed_result[:72]}…")
    again = await verify(
        client,
        vpb.VerifyRequest(
            uscc=uscc,
            grant_id=grant.grant_id,
            purpose=PURPOSE,
            loan_ref=LOAN_REF,
            claim_json=json.dumps(_declarations({})[0][1]),
        ),
    )
    console.print(
        f"asking 'no tax arrears' again: {result_text(again[0].result)}, from the cache "
        f"({again[0].cached}): repeated questions spend no verification budget"
    )


NO_ARREARS_ANYWHERE = {
    "all": [
        {"field": "tax_in_arrears", "op": "eq", "value": False},
        {"field": "si_in_arrears", "op": "eq", "value": False},
        {"field": "hf_consecutive_normal_months", "op": "ge", "value": 1, "unit": "month"},
        {"field": "util_water_in_arrears", "op": "eq", "value": False},
        {"field": "util_elec_in_arrears", "op": "eq", "value": False},
        {"field": "util_gas_in_arrears", "op": "eq", "value": False},
    ]
}
BOOK_SIZE = 5


async def monitoring_session(fed: Any, applicant: str, institution: str) -> None:
    """After the loan: the bank re-checks "no arrears anywhere" for the borrowers of its
    book in one ``VerifyMany`` (the plan's dynamic monitoring of borrowers, (八))."""
    step("Verification 4. Monitoring the loan book: one VerifyMany for every borrower")
    with (fed.data / "labels.csv").open(newline="") as fh:
        usccs = [r["uscc"] for _, r in zip(range(300), csv.DictReader(fh), strict=False)]
    needed = ("tax_vat_paid_last_year", "hf_total_contribution_last_year", "util_gas_account_no")
    borrowers = [  # borrowers with tax, housing-fund and utility records: answers, not gaps
        uscc
        for uscc, app in _applications(fed, [u for u in usccs if u != applicant])
        if all(k in app for k in needed)
    ][: BOOK_SIZE - 1]
    requests = []
    for uscc in borrowers:
        grant = await grant_verification(fed, uscc, f"借款企业{uscc[-4:]}", institution)
        requests.append(
            vpb.VerifyRequest(
                uscc=uscc,
                grant_id=grant.grant_id,
                purpose=PURPOSE,
                loan_ref=LOAN_REF,
                claim_json=json.dumps(NO_ARREARS_ANYWHERE),
            )
        )
    outcomes = await verify_batch(str(fed.workdir / "client.toml"), requests)
    print_batch(outcomes, as_json=False)
    console.print(
        "each borrower's answer is signed and logged on its own, under its own grant and "
        "budget; the providers saw the contributions arrive together, nothing more"
    )
