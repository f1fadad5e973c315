"""Data verification (数据核验) end to end through the real daemons (issue 4).

A bank verifies declared facts through the gateway; the platform routes each claim to
the providers holding its fields; single-provider answers are signed by the provider,
checks across providers are combined under encryption; every answer is signed by the
platform.  Answers are compared with the plaintext evaluation on the generated data;
every bad input of the issue is tried; a curious platform's view of a composite check is
inspected; the binary-search attack is run against the grid and the budget.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from jwcrypto import jwk, jws

from platform_node.budgets import BudgetPolicy, Question, VerificationBudgets
from platform_node.verification import result_digest
from tests.conftest import call_platform_as, run
from tests.test_composite import explain_all
from veil.attestation import verify_answer, verify_contributions
from veil.catalog import load_catalog
from veil.claims import Truth, claim_from_json, evaluate, t_all
from veil.client_auth import assertion_interceptors
from veil.composite import Combined, Protocol, ciphertexts_digest, decide
from veil.crypto import (
    PaillierKeys,
    add_many,
    ciphertext_from_bytes,
    public_key_bytes,
)
from veil.errors import BadSignature, WrongAudience, WrongTokenType, from_status_bytes
from veil.store import ProviderStore, load_mapping, make_engine
from veil.tls import PeerIdentity, secure_channel
from veil.tokens import KeySet, RequestClaims, SigningKey, issue_request_token, verify_result
from veil.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    authorization_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    masks_pb2,
    masks_pb2_grpc,
    verification_pb2_grpc,
)
from veil.v1 import authorization_pb2 as apb
from veil.v1 import verification_pb2 as vpb
from veil_cli.authz_setup import enroll_enterprise
from veil_cli.calls import call_gateway
from veil_cli.client import load_client_config
from veil_cli.commands.enterprise import make_grant_jws
from veil_cli.federation import INSTITUTION

CATALOG = load_catalog()
PURPOSE = "loan_origination"
LOAN = "LOAN-VERIFY-1"
SIX = ("housing_fund", "real_estate", "samr", "social_insurance", "tax", "utilities")
FIELDS = (
    "tax_in_arrears",
    "tax_abnormal_taxpayer",
    "tax_vat_paid_last_year",
    "tax_consecutive_normal_months",
    "si_in_arrears",
    "si_pension_headcount_band",
    "hf_consecutive_normal_months",
    "hf_total_contribution_last_year",
    "util_water_in_arrears",
    "util_elec_in_arrears",
    "util_gas_in_arrears",
    "util_elec_avg_12m",
    "re_certificate_no",
    "re_area",
    "samr_report_year",
    "samr_headcount",
    "samr_external_guarantee",
)
NO_ARREARS_ANYWHERE = {
    "all": [
        {"field": "tax_in_arrears", "op": "eq", "value": False},
        {"field": "si_in_arrears", "op": "eq", "value": False},
        {"field": "hf_consecutive_normal_months", "op": "ge", "value": 1, "unit": "month"},
        {"field": "util_water_in_arrears", "op": "eq", "value": False},
        {"field": "util_elec_in_arrears", "op": "eq", "value": False},
        {"field": "util_gas_in_arrears", "op": "eq", "value": False},
        {"exists": "re_properties"},
        {
            "exists": "samr_annual_report",
            "where": [
                {"field": "samr_report_year", "op": "eq", "value": 2024},
                {"field": "samr_external_guarantee", "op": "eq", "value": False},
            ],
        },
    ]
}
SINGLE_CLAIMS: list[dict[str, Any]] = [
    {"field": "tax_in_arrears", "op": "eq", "value": False},
    {"field": "tax_vat_paid_last_year", "op": "ge", "value": "100000", "unit": "CNY"},
    {"field": "si_pension_headcount_band", "op": "in", "values": ["b2", "b3", "b4"]},
    {
        "field": "hf_consecutive_normal_months",
        "op": "between",
        "low": 6,
        "high": 36,
        "unit": "month",
    },
    {
        "exists": "samr_annual_report",
        "where": [
            {"field": "samr_report_year", "op": "eq", "value": 2024},
            {"field": "samr_headcount", "op": "ge", "value": 10, "unit": "person"},
        ],
    },
    {
        "field": "util_elec_avg_12m",
        "op": "within",
        "value": "30000",
        "relative": "0.5",
        "unit": "kWh",
    },
]
COMPOSITE_CLAIMS: list[dict[str, Any]] = [
    NO_ARREARS_ANYWHERE,
    {
        "any": [
            {"field": "tax_in_arrears", "op": "eq", "value": True},
            {"field": "si_in_arrears", "op": "eq", "value": True},
            {"field": "util_elec_in_arrears", "op": "eq", "value": True},
        ]
    },
    {
        "at_least": 3,
        "of": [
            {"field": "tax_consecutive_normal_months", "op": "ge", "value": 12, "unit": "month"},
            {"field": "si_pension_headcount_band", "op": "ge", "value": "b3"},
            {"field": "hf_consecutive_normal_months", "op": "ge", "value": 12, "unit": "month"},
            {"field": "util_elec_avg_12m", "op": "ge", "value": "5000", "unit": "kWh"},
            {"exists": "re_properties"},
        ],
    },
    {
        "sum": ["tax_vat_paid_last_year", "hf_total_contribution_last_year"],
        "op": "ge",
        "value": "300000",
        "unit": "CNY",
    },
    {"not": NO_ARREARS_ANYWHERE},
]


# --- helpers -----------------------------------------------------------------------------


def usccs(fed: Any, n: int) -> list[str]:
    with (fed.data / "labels.csv").open(newline="") as fh:
        return [row["uscc"] for _, row in zip(range(n), csv.DictReader(fh), strict=False)]


class Bank:
    """The demo institution, calling the gateway with a fresh client assertion per call
    over one long-lived channel (its own event loop: a TLS handshake per call would only
    load the machine)."""

    def __init__(self, fed: Any) -> None:
        self.fed = fed
        self.identity = load_client_config(fed.workdir / "client.toml").require_identity()
        self.loop = asyncio.new_event_loop()
        node = fed.node("gateway")

        async def open_channel() -> grpc.aio.Channel:
            return secure_channel(
                node.address,
                fed.client_tls(INSTITUTION),
                PeerIdentity("gateway", node.name),
                interceptors=assertion_interceptors(self.identity),
            )

        self.channel = self.loop.run_until_complete(open_channel())

    async def _call(self, method: str, request: Any, service: Any) -> Any:
        return await getattr(service(self.channel), method)(
            request, timeout=20.0, wait_for_ready=True
        )

    def call(self, method: str, request: Any, service: Any) -> Any:
        return self.loop.run_until_complete(self._call(method, request, service))

    def close(self) -> None:
        self.loop.run_until_complete(self.channel.close(None))
        self.loop.close()

    def verify(self, uscc: str, grant: str, claim: Any, **kw: Any) -> vpb.VerifyResponse:
        request = vpb.VerifyRequest(
            uscc=uscc,
            grant_id=grant,
            purpose=kw.get("purpose", PURPOSE),
            loan_ref=kw.get("loan_ref", LOAN),
            claim_json=claim if isinstance(claim, str) else json.dumps(claim),
            request_id=kw.get("request_id", ""),
            plaintext_baseline=kw.get("plaintext_baseline", False),
        )
        return self.call("Verify", request, verification_pb2_grpc.VerificationServiceStub)

    def verify_with_assertion(self, token: str, request: vpb.VerifyRequest) -> Any:
        """One Verify carrying ``token`` as its client assertion (no fresh one)."""
        node = self.fed.node("gateway")

        async def once() -> Any:
            async with secure_channel(
                node.address, self.fed.client_tls(INSTITUTION), PeerIdentity("gateway", node.name)
            ) as channel:
                stub = verification_pb2_grpc.VerificationServiceStub(channel)
                try:
                    return await stub.Verify(
                        request, metadata=(("authorization", f"Bearer {token}"),), timeout=20.0
                    )
                except grpc.aio.AioRpcError as err:
                    return err

        return self.loop.run_until_complete(once())

    def refused(self, uscc: str, grant: str, claim: Any, **kw: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            self.verify(uscc, grant, claim, **kw)
        return info.value

    def search(self, request_id: str) -> list[dict[str, Any]]:
        answer = self.call(
            "SearchEntries",
            audit_pb2.SearchEntriesRequest(request_id=request_id),
            audit_pb2_grpc.AuditServiceStub,
        )
        return [json.loads(e.leaf) for e in answer.entries]


class Enterprise:
    def __init__(self, fed: Any, uscc: str) -> None:
        self.fed = fed
        self.uscc = uscc
        self.config = str(enroll_enterprise(fed, uscc, f"企业{uscc[-4:]}"))

    def grant(self, fields: tuple[str, ...] = FIELDS, uses: tuple[str, ...] = ("verify",)) -> str:
        jws_text = make_grant_jws(
            self.config,
            institution=INSTITUTION,
            fields=list(fields),
            uses=list(uses),
            purpose=PURPOSE,
            loan_ref=LOAN,
            days=30,
        )
        info = run(
            call_gateway(
                self.config,
                authorization_pb2_grpc.AuthorizationServiceStub,
                "CreateGrant",
                apb.CreateGrantRequest(grant_jws=jws_text),
            )
        )
        return str(info.grant_id)

    def grant_jws(self, grant_id: str) -> str:
        grants = run(
            call_gateway(
                self.config,
                authorization_pb2_grpc.AuthorizationServiceStub,
                "ListGrants",
                apb.ListGrantsRequest(),
            )
        )
        return next(g.grant_jws for g in grants.grants if g.grant_id == grant_id)


def records(fed: Any, uscc: str) -> dict[str, list[dict[str, Any]]]:
    """The enterprise's rows at every provider, read straight from their stores."""
    out: dict[str, list[dict[str, Any]]] = {}
    for unit in SIX:
        mapping = load_mapping(unit, CATALOG)
        store = ProviderStore(f"sqlite:///{fed.data / (unit + '.db')}", mapping, CATALOG)
        try:
            fields = [
                f.id
                for f in CATALOG.fields_for_provider(unit)
                if f.verifiable and f.dataset_id in mapping.tables
            ]
            out.update(store.fetch(uscc, fields))
        finally:
            store.close()
    return out


def expected(fed: Any, uscc: str, answer: vpb.VerifyResponse) -> Truth:
    """The plaintext evaluation of the claim as verified (snapped), on the raw records."""
    return evaluate(claim_from_json(answer.claim_json, CATALOG), records(fed, uscc), CATALOG)


TRUTH = {
    vpb.VERIFICATION_RESULT_TRUE: Truth.TRUE,
    vpb.VERIFICATION_RESULT_FALSE: Truth.FALSE,
    vpb.VERIFICATION_RESULT_NO_RECORD: Truth.NO_RECORD,
}


@pytest.fixture(scope="module")
def bank(federation: Any) -> Iterator[Bank]:
    client = Bank(federation)
    yield client
    client.close()


@pytest.fixture(scope="module")
def sample(federation: Any) -> list[tuple[Enterprise, str]]:
    """Six enterprises, each with a grant to verify FIELDS."""
    out = []
    for uscc in usccs(federation, 6):
        ent = Enterprise(federation, uscc)
        out.append((ent, ent.grant()))
    return out


# --- correctness against the plaintext evaluation ----------------------------------------


def test_single_provider_answers_equal_the_plaintext_evaluation(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    seen = set()
    for ent, grant in sample:
        for claim in SINGLE_CLAIMS:
            answer = bank.verify(ent.uscc, grant, claim)
            assert answer.protocol == vpb.VERIFICATION_PROTOCOL_SINGLE
            assert TRUTH[answer.result] is expected(federation, ent.uscc, answer), claim
            assert len(answer.providers) == 1 and len(answer.provider_attestations) == 1
            seen.add(TRUTH[answer.result])
    assert seen == {Truth.TRUE, Truth.FALSE, Truth.NO_RECORD}  # the sample exercises all three


def test_composite_answers_equal_the_plaintext_evaluation(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    protocols = set()
    for ent, grant in sample:
        for claim in COMPOSITE_CLAIMS:
            answer = bank.verify(ent.uscc, grant, claim)
            protocols.add(answer.protocol)
            assert TRUTH[answer.result] is expected(federation, ent.uscc, answer), claim
            assert not answer.provider_attestations  # no single provider's answer leaves
    assert protocols == {
        vpb.VERIFICATION_PROTOCOL_ALL,
        vpb.VERIFICATION_PROTOCOL_ANY,
        vpb.VERIFICATION_PROTOCOL_COUNT,
        vpb.VERIFICATION_PROTOCOL_SUM,
    }


def test_no_record_at_one_provider_is_no_record_never_false(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    without_hf = [
        (e, g) for e, g in sample if not records(federation, e.uscc)["housing_fund_contributions"]
    ]
    assert without_hf, "the sample should hold an enterprise without housing-fund records"
    ent, grant = without_hf[0]
    hf = {"field": "hf_consecutive_normal_months", "op": "ge", "value": 1, "unit": "month"}
    assert bank.verify(ent.uscc, grant, hf).result == vpb.VERIFICATION_RESULT_NO_RECORD
    assert bank.verify(ent.uscc, grant, {"not": hf}).result == vpb.VERIFICATION_RESULT_NO_RECORD
    rows = records(federation, ent.uscc)
    if rows["tax_arrears"] and rows["tax_arrears"][0]["tax_in_arrears"] is False:
        both = {"all": [{"field": "tax_in_arrears", "op": "eq", "value": False}, hf]}
        answer = bank.verify(ent.uscc, grant, both)
        assert answer.protocol == vpb.VERIFICATION_PROTOCOL_ALL
        assert answer.result == vpb.VERIFICATION_RESULT_NO_RECORD


def test_owns_the_property_with_this_certificate_and_area_within_one_percent(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    """Existence: "owns the unit with certificate number C, area within ±1 % of A",
    answered by the real estate registry on its records (true / false / no record)."""

    def properties(uscc: str) -> list[dict[str, Any]]:
        return list(records(federation, uscc)["re_properties"])

    def ask(ent: Enterprise, grant: str, cert: str, area: Decimal) -> vpb.VerifyResponse:
        claim = {
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
        }
        answer = bank.verify(ent.uscc, grant, claim)
        assert answer.protocol == vpb.VERIFICATION_PROTOCOL_SINGLE
        assert answer.providers == ["real_estate"]
        assert TRUTH[answer.result] is expected(federation, ent.uscc, answer)
        return answer

    owner = next(
        (
            (e, g, r)
            for e, g in sample
            for r in properties(e.uscc)
            if r["re_certificate_no"] and r["re_area"] and r["re_area"] >= 100
        ),
        None,
    )
    if owner is None:  # not in the sample: look further in the population
        uscc, row = next(
            (u, r)
            for u in usccs(federation, 80)[40:]
            for r in properties(u)
            if r["re_certificate_no"] and r["re_area"] and r["re_area"] >= 100
        )
        ent = Enterprise(federation, uscc)
        owner = (ent, ent.grant(), row)
    ent, grant, row = owner
    cert, area = str(row["re_certificate_no"]), Decimal(str(row["re_area"]))
    # declared 0.5 % above the registered area: within ±1 % (≥ 100 m², so the 1 m² grid
    # cannot cut the registered area out of the interval)
    assert ask(ent, grant, cert, area * Decimal("1.005")).result == vpb.VERIFICATION_RESULT_TRUE
    # declared 5 % above: false; another certificate number: false
    assert ask(ent, grant, cert, area * Decimal("1.05")).result == vpb.VERIFICATION_RESULT_FALSE
    other = cert.replace(cert[-3], "0" if cert[-3] != "0" else "1")
    assert other != cert
    if other not in {str(r["re_certificate_no"]) for r in properties(ent.uscc)}:
        assert ask(ent, grant, other, area).result == vpb.VERIFICATION_RESULT_FALSE
    # an enterprise the registry holds no property of: no record, never false
    without = next(((e, g) for e, g in sample if not properties(e.uscc)), None)
    if without is None:
        uscc = next(u for u in usccs(federation, 80)[40:] if not properties(u))
        e = Enterprise(federation, uscc)
        without = (e, e.grant())
    assert ask(*without, cert, area).result == vpb.VERIFICATION_RESULT_NO_RECORD


# --- signed results -------------------------------------------------------------------------


def test_signed_result_verifies_with_the_published_jwks(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    ent, grant = sample[0]
    fresh = {"field": "tax_vat_paid_last_year", "op": "ge", "value": "770000", "unit": "CNY"}
    answer = bank.verify(ent.uscc, grant, {"all": [*NO_ARREARS_ANYWHERE["all"], fresh]})
    assert not answer.cached
    published = bank.call(
        "GetJwks", gateway_pb2.GatewayGetJwksRequest(), gateway_pb2_grpc.GatewayServiceStub
    )
    # any standard JOSE library: jwcrypto
    token = jws.JWS()
    token.deserialize(answer.signed_result)
    keyset = jwk.JWKSet.from_json(published.jwks_json)
    kid = token.jose_header["kid"]
    token.verify(keyset.get_key(kid))
    claims = json.loads(token.payload)
    assert claims["kind"] == "verification" and claims["sub"] == ent.uscc
    assert claims["institution"] == INSTITUTION and claims["grant_id"] == grant
    assert claims["claims_sha256"] == hashlib.sha256(answer.claim_json.encode()).hexdigest()
    assert claims["claims_sha256"] == answer.claims_sha256
    assert claims["result"] == TRUTH[answer.result].value
    assert claims["log_index"] == answer.log_index and claims["time"].endswith("Z")
    # Veil's own verifier agrees, and a changed result no longer verifies
    keys = KeySet.from_jwks(json.loads(published.jwks_json))
    assert verify_result(answer.signed_result, keys)["result"] == claims["result"]
    head, _, sig = answer.signed_result.split(".")
    forged = dict(claims, result="true" if claims["result"] != "true" else "false")
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignature):
        verify_result(f"{head}.{forged_body}.{sig}", keys)
    # the transparency log commits to exactly this result (and holds no answer in clear)
    (entry,) = bank.search(answer.request_id)
    assert entry["type"] == "enterprise.verify" and entry["outcome"] == "OK"
    assert entry["result_sha256"] == result_digest(claims)
    assert sorted(entry["providers"]) == list(SIX)
    assert "true" not in json.dumps(entry["detail"]) and "false" not in json.dumps(entry["detail"])
    # nor the question: an unsalted claim hash would give the asked threshold away to
    # anyone trying the grid values of the listed fields
    assert answer.claims_sha256 not in json.dumps(entry)
    assert "770000" not in json.dumps(entry)


def test_provider_answers_verify_with_their_published_keys(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    ent, grant = sample[1]
    claim = {"field": "tax_vat_paid_last_year", "op": "ge", "value": "880000", "unit": "CNY"}
    answer = bank.verify(ent.uscc, grant, claim)
    assert not answer.cached
    policy = bank.call(
        "GetVerificationPolicy",
        vpb.GetVerificationPolicyRequest(),
        verification_pb2_grpc.VerificationServiceStub,
    )
    keys = KeySet.from_jwks(json.loads(policy.provider_keys_json)["tax"])
    claims = verify_answer(answer.provider_attestations[0], keys, unit="tax")
    assert claims["sub"] == ent.uscc and claims["jti"] == answer.request_id
    assert claims["claims_sha256"] == answer.claims_sha256
    assert claims["result"] == TRUTH[answer.result].value
    assert policy.grid["CNY"] == "10000" and policy.paillier_bits == 2048


def test_policy_is_public(federation: Any) -> None:
    node = federation.node("gateway")

    async def call() -> vpb.VerificationPolicy:
        async with secure_channel(
            node.address, federation.client_tls(INSTITUTION), PeerIdentity("gateway", node.name)
        ) as channel:
            stub = verification_pb2_grpc.VerificationServiceStub(channel)
            return await stub.GetVerificationPolicy(vpb.GetVerificationPolicyRequest(), timeout=5)

    assert run(call()).default_budget == 20


def test_cli_verify_checks_the_signed_result_and_prints_the_policy(
    federation: Any, sample: list[tuple[Enterprise, str]], capsys: Any, tmp_path: Any
) -> None:
    from veil_cli.main import main

    ent, grant = sample[1]
    client = str(federation.workdir / "client.toml")
    claim_file = tmp_path / "claim.json"
    claim_file.write_text(json.dumps(NO_ARREARS_ANYWHERE), encoding="utf-8")
    args = ["--grant", grant, "--purpose", PURPOSE, "--loan-ref", LOAN, "--config", client]
    assert main(["verify", ent.uscc, "--claim", f"@{claim_file}", "--json", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    signed = out["signed_result_claims"]  # the CLI checked the signature with the JWKS
    claim = claim_from_json(out["claimJson"], CATALOG)
    want = evaluate(claim, records(federation, ent.uscc), CATALOG)
    assert signed["result"] == want.value and signed["sub"] == ent.uscc
    assert out["protocol"] == "VERIFICATION_PROTOCOL_ALL" and signed["grant_id"] == grant
    # a claim the catalog refuses: exit 1, the reason on stderr, nothing asked
    bad = json.dumps({"field": "samr_legal_rep", "op": "eq", "value": "x"})
    assert main(["verify", ent.uscc, "--claim", bad, *args]) == 1
    assert "does not allow verification" in capsys.readouterr().err
    assert main(["verify", "--policy", "--config", client]) == 0
    policy = json.loads(capsys.readouterr().out)
    assert policy["grid"]["CNY"] == "10000" and policy["paillierBits"] == 2048


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "needle"),
    [
        ({"field": "tax_colour", "op": "eq", "value": "red"}, "unknown catalog field 'tax_colour'"),
        ({"field": "tax_in_arrears", "op": "eq", "value": "no"}, "boolean"),
        ({"field": "tax_vat_paid_last_year", "op": "ge", "value": "1"}, "unit 'CNY'"),
        (
            {"field": "tax_vat_paid_last_year", "op": "ge", "value": "1", "unit": "CNY_10k"},
            "CNY_10k",
        ),
        ({"field": "tax_in_arrears", "op": "ge", "value": True}, "does not apply"),
        ({"field": "samr_legal_rep", "op": "eq", "value": "x"}, "does not allow verification"),
        ({}, "non-empty"),
        ("", "empty"),
        ({"all": []}, "non-empty list"),
        (
            {
                "not": {
                    "not": {
                        "not": {
                            "not": {
                                "not": {
                                    "not": {"field": "tax_in_arrears", "op": "eq", "value": False}
                                }
                            }
                        }
                    }
                }
            },
            "deeper than",
        ),
        (
            {
                "all": [
                    {"field": "tax_in_arrears", "op": "eq", "value": False},
                    {
                        "any": [
                            {"field": "si_in_arrears", "op": "eq", "value": False},
                            {"field": "util_gas_in_arrears", "op": "eq", "value": False},
                        ]
                    },
                ]
            },
            "each answered by one provider",
        ),
        (
            {
                "field": "tax_vat_paid_last_year",
                "op": "between",
                "low": "1230001",
                "high": "1230002",
                "unit": "CNY",
            },
            "narrower than the verification grid",
        ),
    ],
)
def test_bad_claims_are_invalid_argument(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]], claim: Any, needle: str
) -> None:
    ent, grant = sample[0]
    err = bank.refused(ent.uscc, grant, claim)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (err.details() or "")


def test_malformed_request_ids_are_refused(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    ent, grant = sample[0]
    for rid in ("too-short", "has spaces in it, quite long", "x" * 65):
        err = bank.refused(ent.uscc, grant, SINGLE_CLAIMS[0], request_id=rid)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "request_id" in (err.details() or "")


def test_verification_needs_a_grant_covering_verify_of_those_fields(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    ent, grant = sample[2]
    fetch_only = ent.grant(("tax_in_arrears",), uses=("fetch",))
    err = bank.refused(
        ent.uscc, fetch_only, {"field": "tax_in_arrears", "op": "eq", "value": False}
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "verify" in (err.details() or "")
    err = bank.refused(
        ent.uscc,
        grant,
        {"field": "tax_cit_paid_last_year", "op": "ge", "value": "1", "unit": "CNY"},
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "tax_cit_paid_last_year" in (err.details() or "")
    err = bank.refused(ent.uscc, str(uuid.uuid4()), SINGLE_CLAIMS[0])
    assert err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    err = bank.refused(ent.uscc, grant, SINGLE_CLAIMS[0], loan_ref="ANOTHER-LOAN")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = bank.refused(ent.uscc, grant, NO_ARREARS_ANYWHERE, plaintext_baseline=True)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_provider_timing_out_fails_the_whole_check_naming_it(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    ent, grant = sample[3]
    claim = {
        "all": [
            *NO_ARREARS_ANYWHERE["all"],
            {"field": "tax_vat_paid_last_year", "op": "ge", "value": "990000", "unit": "CNY"},
        ]
    }
    question = Question(grant, INSTITUTION, ent.uscc, "", ())
    budgets = VerificationBudgets(
        make_engine(f"sqlite:///{federation.data / 'platform.db'}"), BudgetPolicy()
    )
    used_before = budgets.used(question, "util_gas_in_arrears")
    single = {"field": "util_elec_avg_12m", "op": "ge", "value": "12300", "unit": "kWh"}
    used_single = budgets.used(question, "util_elec_avg_12m")
    pid = federation.processes["utilities"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        err = bank.refused(ent.uscc, grant, claim)
        elapsed = time.monotonic() - t0
        t0 = time.monotonic()
        err_single = bank.refused(ent.uscc, grant, single)
        elapsed_single = time.monotonic() - t0
    finally:
        os.kill(pid, signal.SIGCONT)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "utilities" in (err.details() or "") and "not answered" in (err.details() or "")
    assert elapsed < 9.0
    # a single-provider question to it fails the same way: UNAVAILABLE naming it
    assert err_single.code() == grpc.StatusCode.UNAVAILABLE
    assert "'utilities'" in (err_single.details() or ""), err_single.details()
    assert elapsed_single < 9.0
    # nothing was learned, so nothing was spent
    assert budgets.used(question, "util_gas_in_arrears") == used_before
    assert budgets.used(question, "util_elec_avg_12m") == used_single
    # once it is back, all is well
    answer = bank.verify(ent.uscc, grant, claim)
    assert TRUTH[answer.result] is expected(federation, ent.uscc, answer)
    answer = bank.verify(ent.uscc, grant, single)
    assert not answer.cached and TRUTH[answer.result] is expected(federation, ent.uscc, answer)


# --- reconstruction defence ----------------------------------------------------------------


def test_repeated_question_is_answered_from_the_cache_without_spending(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    from provider_node.ledger import Ledger

    ent, grant = sample[4]
    claim = {"field": "tax_vat_paid_last_year", "op": "ge", "value": "654321", "unit": "CNY"}
    first = bank.verify(ent.uscc, grant, claim)
    ledger = Ledger.open(f"sqlite:///{federation.data / 'tax-ledger.db'}")
    rows_before = len(ledger.entries(100_000))
    # the same question, written differently (it snaps to the same grid point)
    again = bank.verify(ent.uscc, grant, {**claim, "value": "650000.00"})
    assert again.cached and not first.cached
    assert again.result == first.result and again.claims_sha256 == first.claims_sha256
    assert again.log_index != first.log_index and again.signed_result != first.signed_result
    assert len(ledger.entries(100_000)) == rows_before  # the provider was not asked again
    assert again.provider_attestations == first.provider_attestations


def test_budget_exhaustion_is_resource_exhausted_with_quota_failure(
    federation: Any, bank: Bank
) -> None:
    ent = Enterprise(federation, usccs(federation, 8)[7])
    grant = ent.grant(("tax_consecutive_normal_months",))
    field = "tax_consecutive_normal_months"
    for months in range(20):
        bank.verify(ent.uscc, grant, {"field": field, "op": "ge", "value": months, "unit": "month"})
    rid = uuid.uuid4().hex
    err = bank.refused(
        ent.uscc, grant, {"field": field, "op": "ge", "value": 99, "unit": "month"}, request_id=rid
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    failures = []
    for detail in status.details:
        quota = error_details_pb2.QuotaFailure()
        if detail.Unpack(quota):
            failures.extend(quota.violations)
    assert [v.subject for v in failures] == [
        f"institution:{INSTITUTION}/enterprise:{ent.uscc}/field:{field}"
    ]
    # the refusal is recorded in the transparency log
    (entry,) = bank.search(rid)
    assert entry["outcome"] == "RESOURCE_EXHAUSTED" and entry["providers"] == []
    # identical questions are still answered, from the cache
    assert bank.verify(
        ent.uscc, grant, {"field": field, "op": "ge", "value": 3, "unit": "month"}
    ).cached


def test_a_refused_question_still_consumes_its_assertion(federation: Any, bank: Bank) -> None:
    """The platform consumes the assertion in the transaction that admits the question,
    and commits that part also when a later check refuses: a refusal (here an unknown
    field, then a spent budget) is never a way to use the same assertion again."""
    ent = Enterprise(federation, usccs(federation, 8)[6])
    grant = ent.grant(("tax_consecutive_normal_months",))

    def ask(claim: Any) -> vpb.VerifyRequest:
        return vpb.VerifyRequest(
            uscc=ent.uscc,
            grant_id=grant,
            purpose=PURPOSE,
            loan_ref=LOAN,
            claim_json=json.dumps(claim),
        )

    good = {"field": "tax_consecutive_normal_months", "op": "ge", "value": 1, "unit": "month"}
    token = bank.identity.assertion()
    first = bank.verify_with_assertion(
        token, ask({"field": "no_such_field", "op": "eq", "value": 1})
    )
    assert isinstance(first, grpc.aio.AioRpcError)
    assert first.code() == grpc.StatusCode.INVALID_ARGUMENT
    again = bank.verify_with_assertion(token, ask(good))
    assert isinstance(again, grpc.aio.AioRpcError)
    assert again.code() == grpc.StatusCode.UNAUTHENTICATED and "replay" in (again.details() or "")
    fresh = bank.verify_with_assertion(bank.identity.assertion(), ask(good))
    assert isinstance(fresh, vpb.VerifyResponse) and fresh.signed_result


def test_binary_search_cannot_pin_a_value_closer_than_the_grid(federation: Any, bank: Bank) -> None:
    """The attack: binary search on last year's VAT with 'VAT ≥ t?' questions.  It ends
    with an interval of one grid cell (10,000 CNY) holding the value; every finer
    question snaps back onto the cell's edges, is answered from the cache, and says
    nothing new."""
    for uscc in usccs(federation, 40)[10:]:
        vat = records(federation, uscc)["tax_payments"]
        if vat and vat[0]["tax_vat_paid_last_year"] and vat[0]["tax_vat_paid_last_year"] > 50_000:
            hidden = Decimal(str(vat[0]["tax_vat_paid_last_year"]))
            break
    else:  # pragma: no cover - the generated data always has such an enterprise
        pytest.fail("no enterprise with VAT paid")
    ent = Enterprise(federation, uscc)
    grant = ent.grant(("tax_vat_paid_last_year",))
    field = "tax_vat_paid_last_year"

    known_lo, known_hi = Decimal(0), Decimal(10**12)  # what the answers really imply

    def at_least(t: Decimal) -> tuple[bool, bool]:
        nonlocal known_lo, known_hi
        answer = bank.verify(
            ent.uscc, grant, {"field": field, "op": "ge", "value": str(t), "unit": "CNY"}
        )
        asked = Decimal(json.loads(answer.claim_json)["value"])  # the snapped threshold
        yes = answer.result == vpb.VERIFICATION_RESULT_TRUE
        if yes:
            known_lo = max(known_lo, asked)
        else:
            known_hi = min(known_hi, asked)
        return yes, answer.cached

    lo, hi = Decimal(0), Decimal(2**27)  # the attacker's belief: lo ≤ VAT < hi
    fresh = 0
    for _ in range(60):
        mid = (lo + hi) / 2
        yes, cached = at_least(mid)
        fresh += not cached
        if yes:  # the attacker believes the question was exactly 'VAT ≥ mid'
            lo = mid
        else:
            hi = mid
    grid = Decimal(10_000)
    cell = (hidden // grid) * grid
    # sixty questions, but only the first ~14 were new: the rest snapped onto grid points
    # already asked and came from the cache, free and uninformative
    assert fresh <= 20
    # everything the answers imply: the value's grid cell, and nothing finer
    assert (known_lo, known_hi) == (cell, cell + grid)
    assert known_lo <= hidden < known_hi and known_hi - known_lo == grid
    # the attacker's own narrow belief is wrong more often than not: answers were to the
    # snapped questions, not to the ones it asked
    for offset in (Decimal(1), Decimal(2_500), Decimal(4_999), Decimal(5_001), Decimal(9_999)):
        yes, cached = at_least(cell + offset)
        assert cached, "a question inside the cell is one already answered"
        assert yes == (offset < 5_000)  # it was answered at the nearest edge of the cell
    assert (known_lo, known_hi) == (cell, cell + grid)


# --- the curious (and the compromised) platform ------------------------------------------------


class Platform:
    """Plays the platform against the providers directly: its TLS certificate, its
    request-token key and its Paillier key (what a curious platform holds)."""

    def __init__(self, fed: Any, ent: Enterprise, grant: str) -> None:
        self.fed = fed
        self.ent = ent
        self.grant = grant
        self.grant_jws = ent.grant_jws(grant)
        self.token_key = SigningKey.load(fed.workdir / "keys" / "platform-token.key")
        self.paillier = PaillierKeys.load(fed.workdir / "keys" / "platform-paillier.key")

    async def _provider(self, unit: str, stub_class: Any, method: str, request: Any) -> Any:
        node = self.fed.node(unit.replace("_", "-"))
        async with secure_channel(
            node.address, self.fed.client_tls("platform"), PeerIdentity("provider", node.name)
        ) as channel:
            return await getattr(stub_class(channel), method)(request, timeout=10.0)

    def roster(self, units: tuple[str, ...]) -> list[masks_pb2.SignedMaskKey]:
        return [
            run(
                self._provider(
                    u,
                    masks_pb2_grpc.MaskKeyServiceStub,
                    "GetSignedMaskKey",
                    masks_pb2.GetSignedMaskKeyRequest(),
                )
            )
            for u in units
        ]

    def token(self, unit: str, fields: list[str], rid: str, use: str = "verify") -> str:
        now = int(time.time())
        return issue_request_token(
            self.token_key,
            RequestClaims(
                provider=unit,
                uscc=self.ent.uscc,
                institution=INSTITUTION,
                fields=tuple(sorted(fields)),
                use=use,
                purpose=PURPOSE,
                loan_ref=LOAN,
                grant_id=self.grant,
                request_id=rid,
                issued_at=now,
                expires=now + 60,
            ),
        )

    def contribute_request(
        self,
        unit: str,
        conditions: list[dict[str, Any]],
        fields: list[str],
        roster: list[masks_pb2.SignedMaskKey],
        rid: str,
        **kw: Any,
    ) -> vpb.ContributeRequest:
        return vpb.ContributeRequest(
            request_id=rid,
            uscc=self.ent.uscc,
            request_token=kw.get("token") or self.token(unit, fields, rid, kw.get("use", "verify")),
            grant_jws=kw.get("grant_jws", self.grant_jws),
            protocol=vpb.VERIFICATION_PROTOCOL_ALL,
            conditions_json=[json.dumps(c) for c in conditions],
            total_conditions=len(conditions),
            paillier_n=public_key_bytes(self.paillier.public),
            participants=roster,
            claims_sha256=kw.get("claims_sha256", "0" * 64),
        )

    def contribute(
        self,
        unit: str,
        conditions: list[dict[str, Any]],
        fields: list[str],
        roster: list[masks_pb2.SignedMaskKey],
        rid: str,
        **kw: Any,
    ) -> Any:
        request = self.contribute_request(unit, conditions, fields, roster, rid, **kw)
        return run(
            self._provider(
                unit, verification_pb2_grpc.ProviderVerificationStub, "Contribute", request
            )
        )

    def contribute_many(self, unit: str, requests: list[vpb.ContributeRequest]) -> Any:
        return run(
            self._provider(
                unit,
                verification_pb2_grpc.ProviderVerificationStub,
                "ContributeMany",
                vpb.ContributeManyRequest(requests=requests),
            )
        )

    def verify_claim_many(self, unit: str, requests: list[vpb.ProviderVerifyRequest]) -> Any:
        return run(
            self._provider(
                unit,
                verification_pb2_grpc.ProviderVerificationStub,
                "VerifyClaimMany",
                vpb.ProviderVerifyManyRequest(requests=requests),
            )
        )

    def answer_keys(self, unit: str) -> KeySet:
        keys = run(
            self._provider(
                unit,
                verification_pb2_grpc.ProviderVerificationStub,
                "GetAnswerKeys",
                vpb.GetAnswerKeysRequest(),
            )
        )
        return KeySet.from_jwks(json.loads(keys.jwks_json))


ONE_EACH: dict[str, tuple[dict[str, Any], list[str]]] = {
    "tax": ({"field": "tax_in_arrears", "op": "eq", "value": False}, ["tax_in_arrears"]),
    "social_insurance": ({"field": "si_in_arrears", "op": "eq", "value": False}, ["si_in_arrears"]),
    "housing_fund": (
        {"field": "hf_consecutive_normal_months", "op": "ge", "value": 1, "unit": "month"},
        ["hf_consecutive_normal_months"],
    ),
    "utilities": (
        {"field": "util_elec_in_arrears", "op": "eq", "value": False},
        ["util_elec_in_arrears"],
    ),
    "real_estate": ({"exists": "re_properties"}, ["re_certificate_no"]),
    "samr": (
        {
            "exists": "samr_annual_report",
            "where": [{"field": "samr_report_year", "op": "eq", "value": 2024}],
        },
        ["samr_report_year"],
    ),
}


def test_curious_platform_view_of_a_composite_does_not_determine_any_answer(
    federation: Any, sample: list[tuple[Enterprise, str]]
) -> None:
    """Every message the platform receives in a six-provider 'all' check, decrypted with
    its own private key, is explained equally well by any other assignment of answers to
    providers that gives the same result: it cannot tell who said what."""
    # an enterprise for which the check is false (the interesting case: true is all-true)
    for ent, grant in sample:  # noqa: B007 - the loop picks the pair
        rows = records(federation, ent.uscc)
        truths = {
            u: evaluate(claim_from_json(json.dumps(c), CATALOG), rows, CATALOG)
            for u, (c, _) in ONE_EACH.items()
        }
        if Truth.FALSE in truths.values() or Truth.NO_RECORD in truths.values():
            break
    platform = Platform(federation, ent, grant)
    roster = platform.roster(SIX)
    rid = uuid.uuid4().hex
    answers = {
        unit: platform.contribute(unit, [ONE_EACH[unit][0]], ONE_EACH[unit][1], roster, rid)
        for unit in SIX
    }
    n = platform.paillier.public.n
    pk = platform.paillier.public
    cts = {u: [ciphertext_from_bytes(pk, c) for c in a.ciphertexts] for u, a in answers.items()}
    width = {len(c) for a in answers.values() for c in a.ciphertexts}
    assert width == {(2 * n.bit_length() + 7) // 8}  # fixed width: sizes say nothing either
    for unit, a in answers.items():  # the rest of each message: a signature, no answer
        payload = a.attestation.split(".")[1]
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert body["result"] == "masked" and body["iss"] == unit
        assert set(body) == {"iss", "result", "iat", "answers"}
        (signed,) = body["answers"]
        assert set(signed) == {"jti", "sub", "claims_sha256", "ciphertexts_sha256"}
        assert signed["ciphertexts_sha256"] == ciphertexts_digest(list(a.ciphertexts))
    seen = {u: [platform.paillier.decrypt(c) for c in cs] for u, cs in cts.items()}
    for values in seen.values():  # each provider's message alone: a uniform number mod n
        assert all(2**256 < v < n - 2**256 for v in values)
    assert all(len(cs) == 1 for cs in cts.values())  # one ciphertext per provider
    total = platform.paillier.decrypt(add_many([cts[u][0] for u in SIX]))
    result, _ = decide(Protocol.ALL, total)
    assert result is t_all(truths.values())
    if result is Truth.FALSE:
        # pretend a different provider (and only it) failed, or all of them did
        liar = next(u for u in SIX if truths[u] is not Truth.FALSE)
        for alternative in (
            {u: [Truth.TRUE] for u in SIX} | {liar: [Truth.FALSE]},
            {u: [Truth.FALSE] for u in SIX},
        ):
            explain_all(seen, alternative, n)


def test_compromised_platform_cannot_strip_masks_or_skip_the_grant(
    federation: Any, sample: list[tuple[Enterprise, str]]
) -> None:
    from veil.crypto import MaskKey, sign_mask_key

    ent, grant = sample[5]
    platform = Platform(federation, ent, grant)
    roster = platform.roster(("tax", "utilities"))
    cond, fields = ONE_EACH["tax"]

    def refused(**kw: Any) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            platform.contribute(
                "tax", [cond], fields, kw.pop("roster", roster), uuid.uuid4().hex, **kw
            )
        return info.value

    # a mask key of the platform's own making, signed with the platform's TLS key
    own = MaskKey.generate()
    signed = sign_mask_key(
        own, federation.certs / "platform.key", (federation.certs / "platform.pem").read_bytes()
    )
    forged = masks_pb2.SignedMaskKey(
        node="utilities",
        unit="utilities",
        public_key=signed.public_key,
        signature=signed.signature,
        certificate_pem=signed.cert_pem,
    )
    err = refused(roster=[roster[0], forged])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "mask key" in (err.details() or "")
    # another provider's genuine key relabelled as a third provider's
    relabelled = masks_pb2.SignedMaskKey()
    relabelled.CopyFrom(roster[1])
    relabelled.unit = "samr"
    err = refused(roster=[roster[0], relabelled])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = refused(roster=[roster[0]])  # alone, the mask would be zero
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = refused(use="fetch")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "verify" in (err.details() or "")
    err = refused(grant_jws="")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # and with everything valid it answers
    assert platform.contribute("tax", [cond], fields, roster, uuid.uuid4().hex).ciphertexts


def test_a_purpose_the_institution_was_not_admitted_for_is_refused_and_recorded(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    ent, grant = sample[1]
    rid = uuid.uuid4().hex
    err = bank.refused(
        ent.uscc, grant, NO_ARREARS_ANYWHERE, purpose="credit_guarantee", request_id=rid
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "credit_guarantee" in (err.details() or "")
    uses = run(
        call_gateway(
            ent.config,
            authorization_pb2_grpc.AuthorizationServiceStub,
            "ListGrantUses",
            apb.ListGrantUsesRequest(grant_id=grant),
        )
    ).uses
    (use,) = [u for u in uses if u.request_id == rid]
    assert use.outcome == "PERMISSION_DENIED" and not use.providers
    (entry,) = bank.search(rid)
    assert entry["outcome"] == "PERMISSION_DENIED" and not entry["providers"]


# --- batched contributions (ContributeMany) ------------------------------------------------


def test_contribute_many_answers_and_refuses_each_item_in_its_place(
    federation: Any, sample: list[tuple[Enterprise, str]]
) -> None:
    """One batch to a provider: two valid items, a replay of the first one's request id
    and a request token made out to another provider.  Each gets its own answer or
    refusal, in order; each is in the provider's ledger; the answers are genuine
    contributions (they combine with the other participant's to the plaintext answer)."""
    from provider_node.ledger import Ledger

    ent, grant = sample[4]
    platform = Platform(federation, ent, grant)
    units = ("tax", "utilities")
    roster = platform.roster(units)
    rid1, rid2, rid3 = (uuid.uuid4().hex for _ in range(3))
    digest1, digest2 = "1" * 64, "2" * 64

    def item(unit: str, rid: str, digest: str = "0" * 64, **kw: Any) -> vpb.ContributeRequest:
        cond, fields = ONE_EACH[unit]
        return platform.contribute_request(
            unit, [cond], fields, roster, rid, claims_sha256=digest, **kw
        )

    foreign = platform.token("utilities", ONE_EACH["tax"][1], rid3)  # aud: another provider
    batch = [
        item("tax", rid1, digest1),
        item("tax", rid2, digest2),
        item("tax", rid1, digest1),  # the same request id again
        item("tax", rid3, token=foreign),
    ]
    answer = platform.contribute_many("tax", batch)
    kinds = [r.WhichOneof("outcome") for r in answer.results]
    assert kinds == ["answer", "answer", "error", "error"]
    replayed = from_status_bytes(answer.results[2].error)
    assert replayed.code == grpc.StatusCode.UNAUTHENTICATED
    assert type(replayed).__name__ == "Replayed" and "already presented" in replayed.message
    wrong = from_status_bytes(answer.results[3].error)
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED and isinstance(wrong, WrongAudience)
    # the valid items: signed by the provider in one attestation, each for its own
    # request and ciphertexts; the refused items are not in it
    keys = platform.answer_keys("tax")
    (attestation,) = {r.answer.attestation for r in answer.results[:2]}
    signed = verify_contributions(attestation, keys, unit="tax")
    assert set(signed) == {rid1, rid2}
    for result, rid, digest in zip(
        answer.results[:2], (rid1, rid2), (digest1, digest2), strict=True
    ):
        contribution = result.answer
        assert contribution.request_id == rid and len(contribution.ciphertexts) == 1
        assert signed[rid]["sub"] == ent.uscc and signed[rid]["claims_sha256"] == digest
        assert signed[rid]["ciphertexts_sha256"] == ciphertexts_digest(
            list(contribution.ciphertexts)
        )
    with pytest.raises(WrongTokenType):  # not a single answer, to be shown as one
        verify_answer(attestation, keys, unit="tax")
    # the other participant answers both checks in one batch too; each pair combines
    others = platform.contribute_many("utilities", [item("utilities", r) for r in (rid1, rid2)])
    rows = records(federation, ent.uscc)
    truths = [
        evaluate(claim_from_json(json.dumps(ONE_EACH[u][0]), CATALOG), rows, CATALOG) for u in units
    ]
    for i in (0, 1):
        parts = [answer.results[i].answer, others.results[i].answer]
        combined = Combined(platform.paillier, Protocol.ALL, [a.ciphertexts for a in parts])
        assert decide(Protocol.ALL, combined.read()) == (t_all(truths), {})
    # one ledger row per item, in order, answered or refused with its reason
    ledger = Ledger.open(f"sqlite:///{federation.data / 'tax-ledger.db'}")
    mine = [e for e in reversed(ledger.entries(1000)) if e.request_id in (rid1, rid2, rid3)]
    assert [(e.request_id, e.outcome) for e in mine] == [
        (rid1, "answered"),
        (rid2, "answered"),
        (rid1, "refused"),
        (rid3, "refused"),
    ]
    assert {e.method for e in mine} == {"Contribute"}
    assert "already presented" in mine[2].detail and "aud" in mine[3].detail
    assert all(e.datasets for e in mine)
    # an empty batch is refused as a whole
    with pytest.raises(grpc.aio.AioRpcError) as info:
        platform.contribute_many("tax", [])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- batched single-provider claims (VerifyClaimMany) ------------------------------------


def test_verify_claim_many_answers_and_refuses_each_item_in_its_place(
    federation: Any, sample: list[tuple[Enterprise, str]]
) -> None:
    """One batch of claims to the tax bureau: two valid claims, a replay of the first
    one's request id, a request token made out to another provider and a field the
    bureau does not hold.  Each gets its own answer or refusal, in order; each answer is
    the plaintext evaluation, signed on its own (the bank receives it as the provider's
    attestation); each item is in the ledger."""
    from provider_node.ledger import Ledger

    ent, grant = sample[4]
    platform = Platform(federation, ent, grant)
    rid1, rid2, rid3, rid4 = (uuid.uuid4().hex for _ in range(4))
    vat_fields = ["tax_vat_paid_last_year"]
    claims: list[dict[str, Any]] = [
        {"field": "tax_in_arrears", "op": "eq", "value": False},
        {"field": "tax_vat_paid_last_year", "op": "ge", "value": "100000", "unit": "CNY"},
    ]

    def item(claim: dict[str, Any], rid: str, fields: list[str], **kw: Any) -> Any:
        return vpb.ProviderVerifyRequest(
            request_id=rid,
            uscc=ent.uscc,
            claim_json=json.dumps(claim),
            request_token=kw.get("token") or platform.token("tax", fields, rid),
            grant_jws=platform.grant_jws,
        )

    batch = [
        item(claims[0], rid1, ["tax_in_arrears"]),
        item(claims[1], rid2, vat_fields),
        item(claims[0], rid1, ["tax_in_arrears"]),  # the same request id again
        item(claims[1], rid3, vat_fields, token=platform.token("utilities", vat_fields, rid3)),
        item({"field": "si_in_arrears", "op": "eq", "value": False}, rid4, ["si_in_arrears"]),
    ]
    answer = platform.verify_claim_many("tax", batch)
    kinds = [r.WhichOneof("outcome") for r in answer.results]
    assert kinds == ["answer", "answer", "error", "error", "error"]
    replayed = from_status_bytes(answer.results[2].error)
    assert replayed.code == grpc.StatusCode.UNAUTHENTICATED and "already presented" in str(replayed)
    wrong = from_status_bytes(answer.results[3].error)
    assert wrong.code == grpc.StatusCode.UNAUTHENTICATED and isinstance(wrong, WrongAudience)
    not_held = from_status_bytes(answer.results[4].error)
    assert not_held.code == grpc.StatusCode.INVALID_ARGUMENT and "not held" in not_held.message
    keys = platform.answer_keys("tax")
    rows = records(federation, ent.uscc)
    for result, rid, claim in zip(answer.results[:2], (rid1, rid2), claims, strict=True):
        truth = evaluate(claim_from_json(json.dumps(claim), CATALOG), rows, CATALOG)
        assert result.answer.request_id == rid and TRUTH[result.answer.result] is truth
        signed = verify_answer(result.answer.attestation, keys, unit="tax")
        assert signed["jti"] == rid and signed["sub"] == ent.uscc
        assert signed["result"] == truth.value
    ledger = Ledger.open(f"sqlite:///{federation.data / 'tax-ledger.db'}")
    mine = [e for e in reversed(ledger.entries(1000)) if e.request_id in (rid1, rid2, rid3, rid4)]
    assert [(e.request_id, e.outcome) for e in mine] == [
        (rid1, "answered"),
        (rid2, "answered"),
        (rid1, "refused"),
        (rid3, "refused"),
        (rid4, "refused"),
    ]
    assert {e.method for e in mine} == {"VerifyClaim"}
    assert "already presented" in mine[2].detail and "aud" in mine[3].detail
    # an empty or oversized batch is refused as a whole
    for requests in ([], [batch[1]] * 257):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            platform.verify_claim_many("tax", requests)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "a batch carries at" in (info.value.details() or "")


def test_concurrent_single_checks_share_calls_to_their_provider(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    """Twenty-four single-provider checks in flight at once reach the tax bureau in
    fewer calls than checks (``VerifyClaimMany``), and each is answered as the plaintext
    evaluation with the provider's own signed answer."""
    import urllib.error

    from tests.conftest import scrape, serve_provider_metrics, start_provider, stop_provider

    address = serve_provider_metrics(federation, "tax")
    try:
        scrape(address)
    except (urllib.error.URLError, OSError):  # the node runs without /metrics yet
        stop_provider(federation, "tax")
        start_provider(federation, "tax")
    method = "/veil.v1.ProviderVerification/VerifyClaimMany"
    calls = f'veil_rpc_total{{code="OK",method="{method}"}}'
    before = scrape(address).get(calls, 0.0)
    vat = {"field": "tax_vat_paid_last_year", "op": "ge", "unit": "CNY"}
    requests = [
        ask(ent.uscc, grant, {**vat, "value": value}, uuid.uuid4().hex)
        for value in ("30000", "170000", "310000", "450000")  # asked nowhere else: not cached
        for ent, grant in sample
    ]

    async def all_at_once() -> list[vpb.VerifyResponse]:
        stub = verification_pb2_grpc.VerificationServiceStub
        return list(await asyncio.gather(*(bank._call("Verify", r, stub) for r in requests)))

    answers = bank.loop.run_until_complete(all_at_once())
    keys = Platform(federation, *sample[0]).answer_keys("tax")
    results = []
    for request, answer in zip(requests, answers, strict=True):
        assert answer.request_id == request.request_id and answer.providers == ["tax"]
        assert not answer.cached
        truth = TRUTH[answer.result]
        assert truth is expected(federation, request.uscc, answer), request.claim_json
        (attestation,) = answer.provider_attestations
        assert verify_answer(attestation, keys, unit="tax")["jti"] == request.request_id
        results.append(truth)
    assert len(set(results)) > 1  # the answers differ: a mix-up would show
    made = scrape(address)[calls] - before
    assert 1 <= made <= len(requests) // 2, f"{made} calls for {len(requests)} checks"


CONCURRENT_CLAIMS: list[dict[str, Any]] = [
    {
        "all": [
            {"field": "tax_in_arrears", "op": "eq", "value": False},
            {"field": "si_in_arrears", "op": "eq", "value": False},
            {"field": "hf_consecutive_normal_months", "op": "ge", "value": 3, "unit": "month"},
            {"field": "util_elec_in_arrears", "op": "eq", "value": False},
            {"exists": "re_properties"},
            {
                "exists": "samr_annual_report",
                "where": [{"field": "samr_report_year", "op": "eq", "value": 2024}],
            },
        ]
    },
    {
        "at_least": 4,
        "of": [
            {"field": "tax_consecutive_normal_months", "op": "ge", "value": 7, "unit": "month"},
            {"field": "si_pension_headcount_band", "op": "ge", "value": "b2"},
            {"field": "hf_consecutive_normal_months", "op": "ge", "value": 7, "unit": "month"},
            {"field": "util_elec_avg_12m", "op": "ge", "value": "8000", "unit": "kWh"},
            {"exists": "re_properties"},
            {
                "exists": "samr_annual_report",
                "where": [{"field": "samr_headcount", "op": "ge", "value": 20, "unit": "person"}],
            },
        ],
    },
]


def test_concurrent_composite_checks_are_each_answered_correctly(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    """Twelve six-provider checks in flight at once (their contributions to each provider
    travel together in batches): every one is answered as the plaintext evaluation."""
    requests = [
        vpb.VerifyRequest(
            uscc=ent.uscc,
            grant_id=grant,
            purpose=PURPOSE,
            loan_ref=LOAN,
            claim_json=json.dumps(claim),
            request_id=uuid.uuid4().hex,
        )
        for ent, grant in sample
        for claim in CONCURRENT_CLAIMS
    ]

    async def all_at_once() -> list[vpb.VerifyResponse]:
        stub = verification_pb2_grpc.VerificationServiceStub
        return list(await asyncio.gather(*(bank._call("Verify", r, stub) for r in requests)))

    answers = bank.loop.run_until_complete(all_at_once())
    results = []
    for request, answer in zip(requests, answers, strict=True):
        assert answer.request_id == request.request_id and not answer.cached
        assert len(answer.providers) == 6
        truth = TRUTH[answer.result]
        assert truth is expected(federation, request.uscc, answer), request.claim_json
        results.append(truth)
    assert len(set(results)) > 1  # the answers differ: a mix-up would show


# --- many checks in one call (VerifyMany) ------------------------------------------------


def verify_many(bank: Bank, requests: list[vpb.VerifyRequest]) -> vpb.VerifyManyResponse:
    answer: vpb.VerifyManyResponse = bank.call(
        "VerifyMany",
        vpb.VerifyManyRequest(requests=requests),
        verification_pb2_grpc.VerificationServiceStub,
    )
    return answer


def ask(uscc: str, grant: str, claim: Any, request_id: str = "") -> vpb.VerifyRequest:
    return vpb.VerifyRequest(
        uscc=uscc,
        grant_id=grant,
        purpose=PURPOSE,
        loan_ref=LOAN,
        claim_json=claim if isinstance(claim, str) else json.dumps(claim),
        request_id=request_id,
    )


def test_verify_many_answers_and_refuses_each_item_in_its_place(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    """A bank checks its borrowers in one call: six-provider checks for every sampled
    enterprise, a single-provider check, and three items a lone Verify would refuse (an
    unknown field, another enterprise's grant, a malformed USCC).  Each answer equals
    the plaintext evaluation and carries its own signed result and log entry; each
    refusal is the lone call's, in its place, and recorded too."""
    published = bank.call(
        "GetJwks", gateway_pb2.GatewayGetJwksRequest(), gateway_pb2_grpc.GatewayServiceStub
    )
    keys = KeySet.from_jwks(json.loads(published.jwks_json))
    (ent0, grant0), (ent1, _) = sample[0], sample[1]
    fresh = {"field": "tax_vat_paid_last_year", "op": "ge", "value": "480000", "unit": "CNY"}
    good = [
        ask(ent.uscc, grant, {"all": [*NO_ARREARS_ANYWHERE["all"], fresh]}, uuid.uuid4().hex)
        for ent, grant in sample
    ]
    good.append(ask(ent0.uscc, grant0, SINGLE_CLAIMS[1], uuid.uuid4().hex))
    bad = [
        ask(ent0.uscc, grant0, {"field": "no_such_field", "op": "eq", "value": 1}),
        ask(ent1.uscc, grant0, SINGLE_CLAIMS[0], uuid.uuid4().hex),  # grant of another
        ask("91330000ABCDEFGHIJ", grant0, SINGLE_CLAIMS[0], uuid.uuid4().hex),
    ]
    lone = [bank.refused(r.uscc, r.grant_id, r.claim_json) for r in bad]
    requests = [*good[:3], bad[0], *good[3:5], bad[1], *good[5:], bad[2]]
    answer = verify_many(bank, requests)
    assert len(answer.results) == len(requests)
    protocols = set()
    for request, result in zip(requests, answer.results, strict=True):
        if request in bad:
            assert result.WhichOneof("outcome") == "error"
            error = from_status_bytes(result.error)
            expect = lone[bad.index(request)]
            assert error.code == expect.code() and error.message == expect.details()
            continue
        assert result.WhichOneof("outcome") == "answer"
        verified = result.answer
        assert verified.request_id == request.request_id and verified.uscc == request.uscc
        assert TRUTH[verified.result] is expected(federation, request.uscc, verified)
        claims = verify_result(verified.signed_result, keys)
        assert claims["request_id"] == request.request_id and claims["sub"] == request.uscc
        assert claims["result"] == TRUTH[verified.result].value
        (entry,) = bank.search(request.request_id)
        assert entry["outcome"] == "OK" and entry["result_sha256"] == result_digest(claims)
        protocols.add(verified.protocol)
    assert protocols == {vpb.VERIFICATION_PROTOCOL_ALL, vpb.VERIFICATION_PROTOCOL_SINGLE}
    for request, code in zip(bad[1:], ("PERMISSION_DENIED", "INVALID_ARGUMENT"), strict=True):
        (entry,) = bank.search(request.request_id)
        assert entry["outcome"] == code and entry["providers"] == []


def test_verify_many_refuses_a_malformed_batch_as_a_whole(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    ent, grant = sample[2]
    rid = uuid.uuid4().hex
    cases = [
        ([], "1 to 256 requests, not 0"),
        ([ask(ent.uscc, grant, SINGLE_CLAIMS[0])] * 257, "not 257"),
        (
            [
                ask(ent.uscc, grant, SINGLE_CLAIMS[0], rid),
                ask(ent.uscc, grant, SINGLE_CLAIMS[1], rid),
            ],
            f"requests[1].request_id {rid!r} repeats",
        ),
        ([ask(ent.uscc, grant, SINGLE_CLAIMS[0], "x" * 200)], "requests[0]: request_id"),
    ]
    for requests, needle in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            verify_many(bank, requests)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert needle in (info.value.details() or ""), info.value.details()
    assert bank.search(rid) == []  # nothing of a refused batch was asked or recorded


def test_verify_many_spends_each_items_budget_and_consumes_one_assertion(
    federation: Any, bank: Bank
) -> None:
    """Twenty-two distinct questions on one field in one batch: the first twenty spend
    the budget and are answered, the last two are RESOURCE_EXHAUSTED with QuotaFailure;
    the batch's assertion is consumed once, so sending it again is a replay."""
    ent = Enterprise(federation, usccs(federation, 12)[11])
    field = "tax_consecutive_normal_months"
    grant = ent.grant((field,))
    requests = [
        ask(ent.uscc, grant, {"field": field, "op": "ge", "value": m, "unit": "month"})
        for m in range(22)
    ]
    token = bank.identity.assertion()
    node = federation.node("gateway")

    async def many(token: str) -> Any:
        async with secure_channel(
            node.address, federation.client_tls(INSTITUTION), PeerIdentity("gateway", node.name)
        ) as channel:
            stub = verification_pb2_grpc.VerificationServiceStub(channel)
            try:
                return await stub.VerifyMany(
                    vpb.VerifyManyRequest(requests=requests),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=30.0,
                )
            except grpc.aio.AioRpcError as err:
                return err

    answer = bank.loop.run_until_complete(many(token))
    kinds = [r.WhichOneof("outcome") for r in answer.results]
    assert kinds == ["answer"] * 20 + ["error"] * 2
    for result in answer.results[20:]:
        error = from_status_bytes(result.error)
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        subjects = [
            v.subject
            for extra in error.extra
            if isinstance(extra, error_details_pb2.QuotaFailure)
            for v in extra.violations
        ]
        assert subjects == [f"institution:{INSTITUTION}/enterprise:{ent.uscc}/field:{field}"]
    replayed = bank.loop.run_until_complete(many(token))
    assert isinstance(replayed, grpc.aio.AioRpcError)
    assert replayed.code() == grpc.StatusCode.UNAUTHENTICATED


def test_cli_verify_batch_checks_every_signed_result_and_names_refused_lines(
    federation: Any, sample: list[tuple[Enterprise, str]], capsys: Any, tmp_path: Any
) -> None:
    from veil_cli.main import main

    client = str(federation.workdir / "client.toml")
    lines = [
        {"uscc": ent.uscc, "grant": grant, "purpose": PURPOSE, "loan_ref": LOAN, "claim": claim}
        for ent, grant in sample[:3]
        for claim in (NO_ARREARS_ANYWHERE, SINGLE_CLAIMS[0])
    ]
    ok = tmp_path / "book.jsonl"
    ok.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    assert main(["verify", "--batch", str(ok), "--json", "--config", client]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["uscc"] for o in out] == [line["uscc"] for line in lines]
    for o in out:
        want = evaluate(
            claim_from_json(o["claimJson"], CATALOG), records(federation, o["uscc"]), CATALOG
        )
        assert TRUTH[vpb.VerificationResult.Value(o["result"])] is want
    # one refused line: exit 1, the line's error in its place, the others answered
    lines[1]["claim"] = {"field": "no_such_field", "op": "eq", "value": 1}
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    assert main(["verify", "--batch", str(mixed), "--json", "--config", client]) == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[1]["error"] == "INVALID_ARGUMENT" and "no_such_field" in out[1]["message"]
    assert all("result" in o for i, o in enumerate(out) if i != 1)
    # a malformed file is refused before anything is asked, naming the line
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(lines[0]) + "\n{not json\n", encoding="utf-8")
    assert main(["verify", "--batch", str(broken), "--config", client]) == 1
    assert f"{broken}:2: not JSON" in capsys.readouterr().err


# --- the gateway's coalesced calls (Forwarding.VerifyForwarded) --------------------------


def test_concurrent_verify_calls_each_get_their_own_answer_or_refusal(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    """Twenty Verify calls in flight at once, refused ones among them: the gateway sends
    those arriving while one is outstanding to the platform together; each call still
    gets exactly the answer or the refusal it would have got alone."""
    fresh = {"field": "tax_vat_paid_last_year", "op": "ge", "value": "260000", "unit": "CNY"}
    bad_claim = {"field": "no_such_field", "op": "eq", "value": 1}
    (ent0, grant0), (ent1, _) = sample[0], sample[1]
    calls = []
    for i in range(20):
        ent, grant = sample[i % len(sample)]
        if i % 5 == 3:
            calls.append((ent0.uscc, grant0, bad_claim, "INVALID_ARGUMENT"))
        elif i % 5 == 4:
            calls.append((ent1.uscc, grant0, SINGLE_CLAIMS[0], "PERMISSION_DENIED"))
        else:
            calls.append((ent.uscc, grant, {"all": [*NO_ARREARS_ANYWHERE["all"], fresh]}, None))

    async def one(uscc: str, grant: str, claim: Any) -> Any:
        try:
            return await bank._call(
                "Verify",
                ask(uscc, grant, claim, uuid.uuid4().hex),
                verification_pb2_grpc.VerificationServiceStub,
            )
        except grpc.aio.AioRpcError as err:
            return err

    async def all_at_once() -> list[Any]:
        return list(await asyncio.gather(*(one(u, g, c) for u, g, c, _ in calls)))

    outcomes = bank.loop.run_until_complete(all_at_once())
    for (uscc, _, _, refused), outcome in zip(calls, outcomes, strict=True):
        if refused is not None:
            assert isinstance(outcome, grpc.aio.AioRpcError) and outcome.code().name == refused
            continue
        assert isinstance(outcome, vpb.VerifyResponse) and outcome.uscc == uscc
        assert TRUTH[outcome.result] is expected(federation, uscc, outcome)


def test_forwarded_items_are_admitted_each_under_its_own_caller(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    """Playing the gateway against the platform: a coalesced batch whose second item
    replays the first one's assertion (as a second gateway replica might forward it) and
    whose third claims an enterprise caller.  Each is answered or refused on its own, the
    replay recorded as a lone replayed Verify would be; only gateways may send these."""
    from veil.v1 import forwarding_pb2 as fpb
    from veil.v1 import forwarding_pb2_grpc

    ent, grant = sample[3]
    expires = int(time.time()) + 60
    jti_a, jti_b = uuid.uuid4().hex, uuid.uuid4().hex

    def item(jti: str, kind: str = "institution") -> fpb.ForwardedVerify:
        return fpb.ForwardedVerify(
            caller=fpb.ForwardedCaller(kind=kind, subject=INSTITUTION, jti=jti, expires=expires),
            request=ask(ent.uscc, grant, SINGLE_CLAIMS[1], uuid.uuid4().hex),
        )

    batch = fpb.ForwardedVerifyBatch(
        items=[item(jti_a), item(jti_a), item(uuid.uuid4().hex, "enterprise"), item(jti_b)]
    )

    def send(cert: str) -> Any:
        return run(
            call_platform_as(
                federation, cert, forwarding_pb2_grpc.ForwardingStub, "VerifyForwarded", batch
            )
        )

    answer = send("gateway")
    kinds = [r.WhichOneof("outcome") for r in answer.results]
    assert kinds == ["answer", "error", "error", "answer"]
    replayed = from_status_bytes(answer.results[1].error)
    assert replayed.code == grpc.StatusCode.UNAUTHENTICATED and "replay" in replayed.message
    wrong_kind = from_status_bytes(answer.results[2].error)
    assert wrong_kind.code == grpc.StatusCode.PERMISSION_DENIED
    (entry,) = bank.search(batch.items[1].request.request_id)
    assert entry["outcome"] == "UNAUTHENTICATED" and entry["providers"] == []
    for i in (0, 3):
        verified = answer.results[i].answer
        assert TRUTH[verified.result] is expected(federation, ent.uscc, verified)
    # a bank's certificate is not a gateway's
    refused = send(INSTITUTION)
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


# --- a restarted provider -----------------------------------------------------------------


def test_a_restarted_provider_fills_its_pool_for_the_platform_key_before_any_request(
    federation: Any, bank: Bank, sample: list[tuple[Enterprise, str]]
) -> None:
    """The tax node remembers the platform's public key it has answered under and, when
    restarted, fills its randomizer pool before the first check arrives: no randomizer
    is computed in full on the request path (provider_node/warm_pools.py)."""
    from platform_node.verification import VerificationSettings
    from provider_node.warm_pools import KnownKeys
    from tests.conftest import scrape, serve_provider_metrics, start_provider, stop_provider
    from veil.config import load_node_config

    ent, grant = sample[0]
    bank.verify(ent.uscc, grant, NO_ARREARS_ANYWHERE)
    platform = load_node_config(federation.configs / "platform.toml")
    platform_key = PaillierKeys.load(VerificationSettings.from_config(platform).paillier_key)
    tax = load_node_config(federation.configs / "tax.toml")
    ledger = make_engine(str(tax.section("ledger").get("url", tax.store_url)))
    remembered = KnownKeys(ledger, "verification").newest()
    ledger.dispose()
    assert remembered is not None and remembered.n == platform_key.public.n

    address = serve_provider_metrics(federation, "tax")
    stop_provider(federation, "tax")
    start_provider(federation, "tax")
    ready = 'veil_randomizer_pool_ready{service="verification"}'
    inline = 'veil_randomizers_inline_total{service="verification"}'
    deadline = time.monotonic() + 60
    while (seen := scrape(address))[ready] < 32:  # half the default pool of 64
        assert time.monotonic() < deadline, f"pool not filled before a request: {seen[ready]} ready"
        time.sleep(0.2)
    assert seen[inline] == 0
    answer = bank.verify(ent.uscc, grant, NO_ARREARS_ANYWHERE)
    assert TRUTH[answer.result] is expected(federation, ent.uscc, answer)
    assert scrape(address)[inline] == 0
