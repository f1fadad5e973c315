"""What the CLI prints for people: readable on an 80-column terminal or in a CI log."""

from __future__ import annotations

from rich.console import Console

from veil.v1 import authorization_pb2 as pb
from veil_cli.commands.enterprise import grants_table

FIELDS = [
    "tax_grade",
    "tax_consecutive_normal_months",
    "si_in_arrears",
    "hf_avg_monthly_contributors",
    "util_elec_avg_12m",
]


def _grant(grant_id: str) -> pb.GrantInfo:
    return pb.GrantInfo(
        grant_id=grant_id,
        institution="demo-bank",
        state=pb.GRANT_STATE_ACTIVE,
        uses=["fetch", "verify"],
        purpose="loan_origination",
        loan_ref="LOAN-2026-000123",
        fields=FIELDS,
        expires="2027-01-05T11:15:27+00:00",
    )


def _render(table: object) -> list[str]:
    console = Console(width=80, record=True, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def test_one_grant_prints_each_property_whole_within_80_columns() -> None:
    grant_id = "fbd9c963-e742-40cf-9d27-34d9b4689fe0"
    lines = _render(grants_table([_grant(grant_id)], "grant created"))
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    # the id an enterprise needs to revoke, and every field name, are never cut
    for whole in [grant_id, "loan_origination", "LOAN-2026-000123", "active", *FIELDS]:
        assert whole in text, whole
    assert "fetch, verify" in text


def test_several_grants_get_a_row_each() -> None:
    ids = ["11111111-0000-4000-8000-000000000001", "22222222-0000-4000-8000-000000000002"]
    console = Console(width=200, record=True, color_system=None)
    console.print(grants_table([_grant(i) for i in ids], "grants"))
    rows = [line for line in console.export_text().splitlines() if "demo-bank" in line]
    assert len(rows) == 2 and ids[0] in rows[0] and ids[1] in rows[1]
