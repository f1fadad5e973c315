"""Joint-model scoring end to end through the real daemons (issue 5).

A module-scoped federation (separate processes, mTLS on loopback) imports the demo model
fitted on its generated data; an enterprise grants the bank a score; the bank scores
through the gateway.  Checked here: equality with the plaintext model (at the published
precision end to end; ≤ 1e-9 in the logit in ``test_scoring_attacks``), the signed
attestation with two JOSE libraries and the HTTP JWKS, drop-out re-runs and refusals,
bad input, and the provider's own refusal of a non-score token.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import grpc
import jwt
import pytest

from platform_node.models.demo import enterprise_rows, fit_demo_model
from provider_node.reconcile import reconcile
from tests.conftest import call_platform_as, run, start_provider, stop_provider
from tests.test_authorization_e2e import Enterprise, bank, claims, gateway, usccs
from veil.config import load_node_config
from veil.errors import from_status_bytes
from veil.request_ids import round_ids
from veil.scoring.plain import plain_logit
from veil.scoring.spec import parse_model
from veil.tls import PeerIdentity, secure_channel
from veil.tokens import KeySet, SigningKey, issue_request_token, verify_result
from veil.v1 import provider_scoring_pb2 as ppb
from veil.v1 import provider_scoring_pb2_grpc, scoring_pb2_grpc
from veil.v1 import scoring_pb2 as spb
from veil_cli.federation import INSTITUTION
from veil_cli.score_demo import (
    SCORE_LOAN,
    SCORE_PURPOSE,
    fetch_jwks,
    import_model,
    jwks_url,
    model_fields,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def document(federation: Any) -> dict[str, Any]:
    return fit_demo_model(federation.data)


@pytest.fixture(scope="module")
def model(federation: Any, document: dict[str, Any]) -> spb.ModelInfo:
    return run(import_model(str(federation.workdir / "admin.toml"), document))


@pytest.fixture(scope="module")
def scorer(federation: Any) -> Enterprise:
    return Enterprise(federation, usccs(federation, 3)[2])


@pytest.fixture(scope="module")
def score_grant(scorer: Enterprise, document: dict[str, Any]) -> Any:
    return scorer.grant(
        tuple(model_fields(document)),
        uses=["score"],
        purpose=SCORE_PURPOSE,
        loan_ref=SCORE_LOAN,
    )


def score(fed: Any, uscc: str, model_id: str, grant_id: str, **kw: Any) -> spb.ScoreResponse:
    return run(
        gateway(
            fed,
            "Score",
            spb.ScoreRequest(
                uscc=uscc,
                model_id=model_id,
                version=kw.get("version", 0),
                grant_id=grant_id,
                purpose=kw.get("purpose", SCORE_PURPOSE),
                loan_ref=kw.get("loan_ref", SCORE_LOAN),
            ),
            signer=bank(fed),
            service=scoring_pb2_grpc.ScoringServiceStub,
        )
    )


def score_grant_of(fed: Any, document: dict[str, Any], uscc: str) -> str:
    """The id of a fresh grant from ``uscc`` (enrolled now) to score with the model."""
    grant = Enterprise(fed, uscc).grant(
        tuple(model_fields(document)), uses=["score"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    return str(grant.grant_id)


def expected(fed: Any, document: dict[str, Any], uscc: str) -> tuple[float, Any]:
    spec = parse_model(document)
    rows = enterprise_rows(
        fed.data, spec.providers, {p: spec.fields_of(p) for p in spec.providers}, uscc
    )
    logit = plain_logit(spec, rows)
    return logit, spec.scale.apply(logit)


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        run(call)
    return info.value.code(), info.value.details() or ""


# --- the happy path ---------------------------------------------------------------------


def test_model_card_lists_features_by_provider_and_approval(model: spb.ModelInfo) -> None:
    card = json.loads(model.card_json)
    assert model.state == "approved" and model.version >= 1
    assert len(card["features_by_provider"]) == 7
    assert card["approved"]["by"].startswith("admin/") and card["training_window"]
    import datetime as dt

    approved_at = dt.datetime.fromisoformat(card["approved"]["at"])  # who approved it, when
    assert approved_at.tzinfo is not None and approved_at <= dt.datetime.now(dt.UTC)
    assert card["metrics"]["auc_in_sample"] > 0.6
    features = card["features_by_provider"]
    assert all(f["field"] for fs in features.values() for f in fs)  # every feature, by owner


def test_score_equals_the_plaintext_model_and_is_signed(
    federation: Any,
    document: dict[str, Any],
    model: spb.ModelInfo,
    scorer: Enterprise,
    score_grant: Any,
) -> None:
    answer = score(federation, scorer.uscc, model.model_id, score_grant.grant_id)
    _, want = expected(federation, document, scorer.uscc)
    assert (answer.pd, answer.score, answer.grade) == (want.pd, want.score, want.grade)
    assert sorted(answer.providers) == sorted(json.loads(model.card_json)["providers"])
    assert not answer.providers_missing and answer.log_index >= 0
    jwks = fetch_jwks(jwks_url(federation))
    claims_ = verify_result(answer.attestation, KeySet.from_jwks(jwks, label="platform"))
    assert claims_["kind"] == "score" and claims_["sub"] == scorer.uscc
    assert claims_["institution"] == INSTITUTION and claims_["grant_id"] == score_grant.grant_id
    assert (claims_["model_id"], claims_["model_version"]) == (model.model_id, model.version)
    assert claims_["result"] == {"pd": want.pd, "score": want.score, "grade": want.grade}
    assert claims_["log_index"] == answer.log_index and claims_["iat"] > 0


def test_attestation_verifies_with_jwcrypto_and_pyjwt_from_the_http_jwks(
    federation: Any, model: spb.ModelInfo, scorer: Enterprise, score_grant: Any
) -> None:
    from jwcrypto import jwk, jws

    answer = score(federation, scorer.uscc, model.model_id, score_grant.grant_id)
    jwks = fetch_jwks(jwks_url(federation))
    header = jwt.get_unverified_header(answer.attestation)
    assert header["alg"] in ("EdDSA", "ES256") and header["kid"]
    # jwcrypto: a second, independent JOSE implementation
    keyset = jwk.JWKSet.from_json(json.dumps(jwks))
    token = jws.JWS()
    token.deserialize(answer.attestation)
    token.verify(keyset.get_key(header["kid"]))
    body = json.loads(token.payload)
    assert body["result"]["grade"] == answer.grade and body["log_index"] == answer.log_index
    # pyjwt with the key from the JWKS
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    decoded = jwt.decode(answer.attestation, key.key, algorithms=[header["alg"]])
    assert decoded == body
    # an altered score fails both
    head, _payload, sig = answer.attestation.split(".")
    forged_body = dict(body, result=dict(body["result"], grade="AAA", pd=0.000001))
    import base64

    forged = ".".join(
        [
            head,
            base64.urlsafe_b64encode(json.dumps(forged_body).encode()).rstrip(b"=").decode(),
            sig,
        ]
    )
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, key.key, algorithms=[header["alg"]])
    bad = jws.JWS()
    bad.deserialize(forged)
    with pytest.raises(jws.InvalidJWSSignature):
        bad.verify(keyset.get_key(header["kid"]))


def test_jwks_http_is_the_grpc_jwks_and_refuses_other_paths(federation: Any) -> None:
    import urllib.error
    import urllib.request

    from veil.v1 import gateway_pb2, gateway_pb2_grpc

    url = jwks_url(federation)
    over_grpc = run(
        gateway(
            federation,
            "GetJwks",
            gateway_pb2.GatewayGetJwksRequest(),
            service=gateway_pb2_grpc.GatewayServiceStub,
        )
    )
    assert fetch_jwks(url) == json.loads(over_grpc.jwks_json)
    with urllib.request.urlopen(url, timeout=5) as answer:
        assert answer.headers["Content-Type"] == "application/jwk-set+json"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url.replace("jwks.json", "other"), timeout=5)
    assert info.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=5)
    assert info.value.code == 405


def test_several_enterprises_match_the_plaintext_model(
    federation: Any, document: dict[str, Any], model: spb.ModelInfo
) -> None:
    for uscc in usccs(federation, 8)[3:8]:
        answer = score(federation, uscc, model.model_id, score_grant_of(federation, document, uscc))
        _, want = expected(federation, document, uscc)
        assert (answer.pd, answer.score, answer.grade) == (want.pd, want.score, want.grade), uscc


# --- authorization -----------------------------------------------------------------------


def test_scoring_needs_a_grant_with_use_score(
    federation: Any, document: dict[str, Any], model: spb.ModelInfo, scorer: Enterprise
) -> None:
    fetch_only = scorer.grant(
        tuple(model_fields(document)),
        uses=["verify"],
        purpose=SCORE_PURPOSE,
        loan_ref=SCORE_LOAN,
    )
    code, why = code_of(
        gateway(
            federation,
            "Score",
            spb.ScoreRequest(
                uscc=scorer.uscc,
                model_id=model.model_id,
                grant_id=fetch_only.grant_id,
                purpose=SCORE_PURPOSE,
                loan_ref=SCORE_LOAN,
            ),
            signer=bank(federation),
            service=scoring_pb2_grpc.ScoringServiceStub,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "score" in why


def test_grant_not_covering_the_model_fields_is_refused(
    federation: Any, model: spb.ModelInfo, scorer: Enterprise
) -> None:
    narrow = scorer.grant(
        ("tax_in_arrears",), uses=["score"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    code, why = code_of(
        gateway(
            federation,
            "Score",
            spb.ScoreRequest(
                uscc=scorer.uscc,
                model_id=model.model_id,
                grant_id=narrow.grant_id,
                purpose=SCORE_PURPOSE,
                loan_ref=SCORE_LOAN,
            ),
            signer=bank(federation),
            service=scoring_pb2_grpc.ScoringServiceStub,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "does not cover" in why


def provider_partial(
    fed: Any, unit: str, request: ppb.PartialScoreRequest
) -> tuple[grpc.StatusCode, str]:
    node = fed.node(unit.replace("_", "-"))

    async def call() -> Any:
        async with secure_channel(
            node.address, fed.client_tls("platform"), PeerIdentity("provider", node.name)
        ) as channel:
            return await provider_scoring_pb2_grpc.ProviderScoringStub(channel).PartialScore(
                request, timeout=10
            )

    return code_of(call())


def roster(fed: Any, units: list[str]) -> list[Any]:
    from veil.v1 import masks_pb2, masks_pb2_grpc

    async def one(unit: str) -> Any:
        node = fed.node(unit.replace("_", "-"))
        async with secure_channel(
            node.address, fed.client_tls("platform"), PeerIdentity("provider", node.name)
        ) as channel:
            return await masks_pb2_grpc.MaskKeyServiceStub(channel).GetSignedMaskKey(
                masks_pb2.GetSignedMaskKeyRequest(), timeout=10
            )

    return [run(one(u)) for u in units]


def test_provider_refuses_a_fetch_token_and_a_lone_participant(
    federation: Any,
    document: dict[str, Any],
    model: spb.ModelInfo,
    scorer: Enterprise,
    score_grant: Any,
) -> None:
    """Playing a compromised platform: the tax provider checks the use and the roster."""
    from veil.crypto import PaillierKeys

    spec = parse_model(document)
    key_id = PaillierKeys.load(federation.workdir / "keys" / "scoring-paillier.key").key_id
    fields = spec.fields_of("tax")
    platform_key = SigningKey.load(federation.workdir / "keys" / "platform-token.key")

    def request(use: str, units: list[str]) -> ppb.PartialScoreRequest:
        rid = uuid.uuid4().hex
        c = claims(scorer.uscc, score_grant.grant_id, fields, request_id=rid, purpose=SCORE_PURPOSE)
        c = type(c)(**{**c.__dict__, "use": use, "loan_ref": SCORE_LOAN})
        return ppb.PartialScoreRequest(
            request_id=rid,
            uscc=scorer.uscc,
            model_id=model.model_id,
            version=model.version,
            key_id=key_id,
            fields=list(fields),
            request_token=issue_request_token(platform_key, c),
            grant_jws=score_grant.grant_jws,
            participants=roster(federation, units),
        )

    code, why = provider_partial(federation, "tax", request("verify", list(spec.providers)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, why = provider_partial(federation, "tax", request("score", ["tax"]))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "two participants" in why
    code, why = provider_partial(federation, "tax", request("score", ["tax", "utilities"]))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "does not allow" in why


def test_partial_scores_answers_each_item_or_its_own_refusal(
    federation: Any,
    document: dict[str, Any],
    model: spb.ModelInfo,
    scorer: Enterprise,
    score_grant: Any,
) -> None:
    """A batched PartialScores (what the platform sends when requests are in flight
    together): each item is checked, answered and ledgered on its own — a replayed id
    and a token for another use are refused in their places, the others answered."""
    from provider_node.ledger import Ledger
    from veil.crypto import PaillierKeys, ciphertext_from_bytes
    from veil.errors import from_status_bytes

    score(federation, scorer.uscc, model.model_id, score_grant.grant_id)  # installed
    spec = parse_model(document)
    keys = PaillierKeys.load(federation.workdir / "keys" / "scoring-paillier.key")
    fields = spec.fields_of("tax")
    platform_key = SigningKey.load(federation.workdir / "keys" / "platform-token.key")
    participants = roster(federation, list(spec.providers))

    def request(use: str, rid: str) -> ppb.PartialScoreRequest:
        c = claims(scorer.uscc, score_grant.grant_id, fields, request_id=rid, purpose=SCORE_PURPOSE)
        c = type(c)(**{**c.__dict__, "use": use, "loan_ref": SCORE_LOAN})
        return ppb.PartialScoreRequest(
            request_id=rid,
            uscc=scorer.uscc,
            model_id=model.model_id,
            version=model.version,
            key_id=keys.key_id,
            fields=list(fields),
            request_token=issue_request_token(platform_key, c),
            grant_jws=score_grant.grant_jws,
            participants=participants,
        )

    a, b, c = (uuid.uuid4().hex for _ in range(3))
    batch = [request("score", a), request("score", b), request("score", a), request("fetch", c)]
    node = federation.node("tax")

    async def call() -> ppb.PartialScoresResponse:
        async with secure_channel(
            node.address, federation.client_tls("platform"), PeerIdentity("provider", node.name)
        ) as channel:
            stub = provider_scoring_pb2_grpc.ProviderScoringStub(channel)
            answer: ppb.PartialScoresResponse = await stub.PartialScores(
                ppb.PartialScoresRequest(requests=batch), timeout=20
            )
            return answer

    results = run(call()).results
    assert [r.WhichOneof("outcome") for r in results] == ["answer", "answer", "error", "error"]
    for r, rid in zip(results[:2], (a, b), strict=True):
        assert r.answer.request_id == rid
        ciphertext_from_bytes(keys.public, r.answer.ciphertext)  # well-formed, in range
    assert results[0].answer.ciphertext != results[1].answer.ciphertext
    replayed, wrong_use = (from_status_bytes(r.error) for r in results[2:])
    assert replayed.code == grpc.StatusCode.UNAUTHENTICATED and "already presented" in str(replayed)
    assert wrong_use.code == grpc.StatusCode.PERMISSION_DENIED and "use" in str(wrong_use)
    ledger = Ledger.open(f"sqlite:///{federation.data / 'tax-ledger.db'}")
    rows = [(e.request_id, e.outcome) for e in ledger.entries() if e.request_id in (a, b, c)]
    assert sorted(rows) == sorted(
        [(a, "answered"), (b, "answered"), (a, "refused"), (c, "refused")]
    )


def test_concurrent_scores_each_match_the_plaintext_model(
    federation: Any, document: dict[str, Any], model: spb.ModelInfo
) -> None:
    """Requests in flight together share PartialScores calls at every provider; each
    still gets exactly its own enterprise's score."""
    import asyncio

    people = usccs(federation, 14)[9:14]
    grants = {}
    for uscc in people:
        grants[uscc] = Enterprise(federation, uscc).grant(
            tuple(model_fields(document)),
            uses=["score"],
            purpose=SCORE_PURPOSE,
            loan_ref=SCORE_LOAN,
        )
    asked = [people[i % len(people)] for i in range(15)]

    async def all_at_once() -> list[spb.ScoreResponse]:
        return list(
            await asyncio.gather(
                *(
                    gateway(
                        federation,
                        "Score",
                        spb.ScoreRequest(
                            uscc=uscc,
                            model_id=model.model_id,
                            grant_id=grants[uscc].grant_id,
                            purpose=SCORE_PURPOSE,
                            loan_ref=SCORE_LOAN,
                        ),
                        signer=bank(federation),
                        service=scoring_pb2_grpc.ScoringServiceStub,
                    )
                    for uscc in asked
                )
            )
        )

    answers = run(all_at_once())
    for uscc, answer in zip(asked, answers, strict=True):
        assert answer.uscc == uscc
        _, want = expected(federation, document, uscc)
        assert (answer.pd, answer.score, answer.grade) == (want.pd, want.score, want.grade), uscc


# --- bad input -------------------------------------------------------------------------


def test_unknown_model_and_version_are_not_found(
    federation: Any, model: spb.ModelInfo, scorer: Enterprise, score_grant: Any
) -> None:
    for model_id, version, needle in (
        ("no-such-model", 0, "unknown model"),
        (model.model_id, 99, "no version 99"),
    ):
        code, why = code_of(
            gateway(
                federation,
                "Score",
                spb.ScoreRequest(
                    uscc=scorer.uscc,
                    model_id=model_id,
                    version=version,
                    grant_id=score_grant.grant_id,
                    purpose=SCORE_PURPOSE,
                    loan_ref=SCORE_LOAN,
                ),
                signer=bank(federation),
                service=scoring_pb2_grpc.ScoringServiceStub,
            )
        )
        assert code == grpc.StatusCode.NOT_FOUND and needle in why


def test_model_with_an_unregistered_provider_is_refused(
    federation: Any, document: dict[str, Any], scorer: Enterprise
) -> None:
    other = json.loads(json.dumps(document))
    other["model_id"] = "with-customs"
    other["features"].append(
        {
            "name": "customs_grade",
            "provider": "customs",
            "field": "customs_grade",
            "encoding": {"type": "one_hot", "categories": ["dishonest"], "weights": [1.0]},
            "missing": {"weight": 0.0},
        }
    )
    info = run(import_model(str(federation.workdir / "admin.toml"), other))  # approval works…
    g = scorer.grant(
        tuple(model_fields(other)), uses=["score"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    code, why = code_of(
        gateway(
            federation,
            "Score",
            spb.ScoreRequest(
                uscc=scorer.uscc,
                model_id=info.model_id,
                grant_id=g.grant_id,
                purpose=SCORE_PURPOSE,
                loan_ref=SCORE_LOAN,
            ),
            signer=bank(federation),
            service=scoring_pb2_grpc.ScoringServiceStub,
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "customs" in why  # …scoring does not


def test_enterprise_unknown_to_a_provider_is_scored_with_its_missing_values(
    federation: Any, document: dict[str, Any], model: spb.ModelInfo
) -> None:
    """An enterprise without any housing-fund or utility account: those providers
    contribute their documented missing values, the score equals the plaintext model."""
    from veil.catalog import load_catalog
    from veil.store import ProviderStore, load_mapping

    catalog = load_catalog()
    hf = ProviderStore(
        f"sqlite:///{federation.data / 'housing_fund.db'}",
        load_mapping("housing_fund", catalog),
        catalog,
    )
    candidates = [u for u in usccs(federation, 60)[8:] if not hf.has_enterprise(u)]
    hf.close()
    assert candidates, "the generated population always has non-participants"
    uscc = candidates[0]
    ent = Enterprise(federation, uscc)
    g = ent.grant(
        tuple(model_fields(document)), uses=["score"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    answer = score(federation, uscc, model.model_id, g.grant_id)
    _, want = expected(federation, document, uscc)
    assert (answer.pd, answer.grade) == (want.pd, want.grade)
    assert "housing_fund" in answer.providers and not answer.providers_missing


# --- drop-out ----------------------------------------------------------------------------


def test_drop_out_reruns_without_an_imputable_provider_and_fails_for_a_required_one(
    federation: Any,
    document: dict[str, Any],
    model: spb.ModelInfo,
    scorer: Enterprise,
    score_grant: Any,
) -> None:
    spec = parse_model(document)
    stop_provider(federation, "utilities")
    try:
        answer = score(federation, scorer.uscc, model.model_id, score_grant.grant_id)
        rows = enterprise_rows(
            federation.data,
            [p for p in spec.providers if p != "utilities"],
            {p: spec.fields_of(p) for p in spec.providers},
            scorer.uscc,
        )
        want = spec.scale.apply(plain_logit(spec, rows))  # utilities: its missing values
        assert answer.providers_missing == ["utilities"] and "utilities" not in answer.providers
        assert (answer.pd, answer.grade) == (want.pd, want.grade)
        claims_ = jwt.decode(answer.attestation, options={"verify_signature": False})
        assert claims_["providers_missing"] == ["utilities"]
        # The re-run reached samr under a second round id; the log holds the request
        # once, with its rounds, and samr's reconciliation folds both rounds into it.
        report = run(reconcile(load_node_config(federation.configs / "samr.toml"), settle_s=5))
        rounds = round_ids(answer.request_id, 2)
        assert [m for m in report.mismatches if m.request_id in rounds] == []
    finally:
        start_provider(federation, "utilities")
    stop_provider(federation, "tax")  # required by the model card: never imputed
    try:
        code, why = code_of(
            gateway(
                federation,
                "Score",
                spb.ScoreRequest(
                    uscc=scorer.uscc,
                    model_id=model.model_id,
                    grant_id=score_grant.grant_id,
                    purpose=SCORE_PURPOSE,
                    loan_ref=SCORE_LOAN,
                ),
                signer=bank(federation),
                service=scoring_pb2_grpc.ScoringServiceStub,
            )
        )
        assert code == grpc.StatusCode.UNAVAILABLE and "'tax'" in why and "does not allow" in why
    finally:
        start_provider(federation, "tax")
    # everyone back: a full score again, once the platform's channels have reconnected
    deadline = time.monotonic() + 30
    while True:
        try:
            again = score(federation, scorer.uscc, model.model_id, score_grant.grant_id)
            if not again.providers_missing:
                break
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() < deadline, "providers did not come back"
        time.sleep(0.5)


def test_a_restarted_provider_fills_its_pool_for_its_installed_model_before_any_score(
    federation: Any, model: spb.ModelInfo, scorer: Enterprise, score_grant: Any
) -> None:
    """The tax node, restarted, starts filling the randomizer pool for the key of the
    model part it holds before the first score arrives: no randomizer is computed on the
    request path (provider_node/scoring.py, ``PartStore.newest_key``)."""
    from tests.conftest import scrape, serve_provider_metrics

    score(federation, scorer.uscc, model.model_id, score_grant.grant_id)
    address = serve_provider_metrics(federation, "tax")
    stop_provider(federation, "tax")
    start_provider(federation, "tax")
    ready = 'veil_randomizer_pool_ready{service="scoring"}'
    inline = 'veil_randomizers_inline_total{service="scoring"}'
    deadline = time.monotonic() + 60
    while (seen := scrape(address))[ready] < 16:  # half the pool of 32
        assert time.monotonic() < deadline, f"pool not filled before a score: {seen[ready]} ready"
        time.sleep(0.2)
    assert seen[inline] == 0
    while True:  # once the platform's channel to tax has reconnected
        try:
            answer = score(federation, scorer.uscc, model.model_id, score_grant.grant_id)
            if not answer.providers_missing:
                break
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() < deadline, "tax did not come back"
        time.sleep(0.5)
    assert "tax" in answer.providers
    assert scrape(address)[inline] == 0


def test_score_is_in_the_transparency_log(
    federation: Any, model: spb.ModelInfo, scorer: Enterprise, score_grant: Any
) -> None:
    from platform_node.scoring import result_digest
    from veil.audit.entry import decode_entry
    from veil.v1 import audit_pb2, audit_pb2_grpc

    answer = score(federation, scorer.uscc, model.model_id, score_grant.grant_id)

    async def entry() -> Any:
        node = federation.node("gateway")
        async with secure_channel(
            node.address, federation.client_tls("demo-auditor"), PeerIdentity("gateway", node.name)
        ) as channel:
            stub = audit_pb2_grpc.AuditServiceStub(channel)
            return await stub.GetEntries(
                audit_pb2.GetEntriesRequest(start=answer.log_index, end=answer.log_index + 1),
                timeout=10,
            )

    got = run(entry())
    logged = decode_entry(got.entries[0].leaf)
    assert logged.type == "enterprise.score" and logged.enterprise == scorer.uscc
    assert logged.detail["model"] == model.model_id
    claims_ = jwt.decode(answer.attestation, options={"verify_signature": False})
    assert logged.result_sha256 == result_digest(claims_)


def test_cli_model_and_score_commands(
    federation: Any,
    document: dict[str, Any],
    model: spb.ModelInfo,
    scorer: Enterprise,
    score_grant: Any,
    capsys: Any,
    tmp_path: Any,
) -> None:
    from veil_cli.main import main

    admin = str(federation.workdir / "admin.toml")
    client = str(federation.workdir / "client.toml")
    assert main(["model", "list", "--config", admin]) == 0
    assert main(["model", "show", model.model_id, "--json", "--config", admin]) == 0
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["model_id"] == model.model_id and shown["format"] == "veil-model/1"
    # what an institution sees: every field an enterprise's score grant must cover
    assert main(["score", "models", "--json", "--config", client]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    (mine,) = [m for m in listed if m["model_id"] == model.model_id]
    assert set(mine["fields"]) == set(parse_model(document).fields)
    code = main(
        [
            "score",
            "enterprise",
            scorer.uscc,
            "--model",
            model.model_id,
            "--grant",
            score_grant.grant_id,
            "--purpose",
            SCORE_PURPOSE,
            "--loan-ref",
            SCORE_LOAN,
            "--json",
            "--config",
            client,
        ]
    )
    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    token = tmp_path / "score.jws"
    token.write_text(answer["attestation"])
    assert main(["score", "verify", str(token), "--jwks-url", jwks_url(federation)]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["result"]["pd"] == answer["pd"] and verified["sub"] == scorer.uscc
    tampered = tmp_path / "bad.jws"
    head, body, sig = answer["attestation"].split(".")
    tampered.write_text(
        ".".join([head, body, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")])
    )
    assert main(["score", "verify", str(tampered), "--config", client]) == 1
    doc = tmp_path / "model.json"
    assert main(["model", "fit-demo", "--data", str(federation.data), "--out", str(doc)]) == 0
    assert main(["model", "import", str(doc), "--config", admin]) == 0
    assert "imported" in capsys.readouterr().out


def test_a_purpose_the_institution_was_not_admitted_for_is_refused_and_recorded(
    federation: Any, model: spb.ModelInfo, scorer: Enterprise, score_grant: Any
) -> None:
    from veil.v1 import authorization_pb2 as apb

    rid = uuid.uuid4().hex
    code, why = code_of(
        gateway(
            federation,
            "Score",
            spb.ScoreRequest(
                uscc=scorer.uscc,
                model_id=model.model_id,
                grant_id=score_grant.grant_id,
                purpose="credit_guarantee",  # demo-bank was admitted for lending only
                loan_ref=SCORE_LOAN,
                request_id=rid,
            ),
            signer=bank(federation),
            service=scoring_pb2_grpc.ScoringServiceStub,
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "credit_guarantee" in why
    uses = scorer.call(
        "ListGrantUses", apb.ListGrantUsesRequest(grant_id=score_grant.grant_id)
    ).uses
    (use,) = [u for u in uses if u.request_id == rid]
    assert use.outcome == "PERMISSION_DENIED" and not use.providers


# --- many scores in one call (ScoreMany) -------------------------------------------------


def score_many(fed: Any, requests: list[spb.ScoreRequest]) -> spb.ScoreManyResponse:
    answer: spb.ScoreManyResponse = run(
        gateway(
            fed,
            "ScoreMany",
            spb.ScoreManyRequest(requests=requests),
            signer=bank(fed),
            service=scoring_pb2_grpc.ScoringServiceStub,
        )
    )
    return answer


def test_score_many_scores_and_refuses_each_item_in_its_place(
    federation: Any, document: dict[str, Any], model: spb.ModelInfo, scorer: Enterprise
) -> None:
    """A bank re-scores five borrowers in one call, with two items a lone Score would
    refuse among them (a grant without use "score", an unknown model).  Each score equals
    the plaintext model and carries its own attestation and log entry; each refusal is
    the lone call's, in its place."""
    jwks = KeySet.from_jwks(fetch_jwks(jwks_url(federation)), label="platform")

    def ask(uscc: str, grant_id: str, model_id: str = model.model_id) -> spb.ScoreRequest:
        return spb.ScoreRequest(
            uscc=uscc,
            model_id=model_id,
            grant_id=grant_id,
            purpose=SCORE_PURPOSE,
            loan_ref=SCORE_LOAN,
            request_id=uuid.uuid4().hex,
        )

    good = []
    for uscc in usccs(federation, 14)[9:14]:
        good.append(ask(uscc, score_grant_of(federation, document, uscc)))
    verify_only = scorer.grant(
        tuple(model_fields(document)), uses=["verify"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    bad = [ask(scorer.uscc, verify_only.grant_id), ask(good[0].uscc, good[0].grant_id, "no-model")]
    requests = [good[0], bad[0], *good[1:4], bad[1], good[4]]
    answer = score_many(federation, requests)
    assert len(answer.results) == len(requests)
    indices = set()
    for request, result in zip(requests, answer.results, strict=True):
        if request in bad:
            error = from_status_bytes(result.error)
            want_code = (
                grpc.StatusCode.PERMISSION_DENIED
                if request is bad[0]
                else grpc.StatusCode.NOT_FOUND
            )
            assert error.code == want_code, error
            continue
        scored = result.answer
        _, want = expected(federation, document, request.uscc)
        assert (scored.pd, scored.score, scored.grade) == (want.pd, want.score, want.grade)
        claims_ = verify_result(scored.attestation, jwks)
        assert claims_["request_id"] == request.request_id == scored.request_id
        assert claims_["sub"] == request.uscc and claims_["log_index"] == scored.log_index
        indices.add(scored.log_index)
    assert len(indices) == len(good)  # a log entry each


def test_score_many_refuses_a_malformed_batch_as_a_whole(
    federation: Any, model: spb.ModelInfo, scorer: Enterprise, score_grant: Any
) -> None:
    one = spb.ScoreRequest(
        uscc=scorer.uscc,
        model_id=model.model_id,
        grant_id=score_grant.grant_id,
        purpose=SCORE_PURPOSE,
        loan_ref=SCORE_LOAN,
        request_id=uuid.uuid4().hex,
    )
    for requests, needle in (
        ([], "1 to 256 requests, not 0"),
        ([one] * 257, "not 257"),
        ([one, one], f"requests[1].request_id {one.request_id!r} repeats"),
    ):
        code, why = code_of(
            gateway(
                federation,
                "ScoreMany",
                spb.ScoreManyRequest(requests=requests),
                signer=bank(federation),
                service=scoring_pb2_grpc.ScoringServiceStub,
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and needle in why, why


def test_forwarded_scores_are_admitted_each_under_its_own_caller(
    federation: Any, document: dict[str, Any], model: spb.ModelInfo, scorer: Enterprise
) -> None:
    """Playing the gateway against the platform (``Forwarding.ScoreForwarded``): the
    second item replays the first one's assertion, the third claims an enterprise caller,
    the fourth uses a grant without use "score".  Each is scored or refused on its own;
    a bank's certificate may not send these."""
    from veil.v1 import forwarding_pb2 as fpb
    from veil.v1 import forwarding_pb2_grpc

    good = scorer.grant(
        tuple(model_fields(document)), uses=["score"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    verify_only = scorer.grant(
        tuple(model_fields(document)), uses=["verify"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    expires = int(time.time()) + 60
    jti = uuid.uuid4().hex

    def item(jti: str, grant_id: str = good.grant_id, kind: str = "institution") -> Any:
        return fpb.ForwardedScore(
            caller=fpb.ForwardedCaller(kind=kind, subject=INSTITUTION, jti=jti, expires=expires),
            request=spb.ScoreRequest(
                uscc=scorer.uscc,
                model_id=model.model_id,
                grant_id=grant_id,
                purpose=SCORE_PURPOSE,
                loan_ref=SCORE_LOAN,
                request_id=uuid.uuid4().hex,
            ),
        )

    batch = fpb.ForwardedScoreBatch(
        items=[
            item(jti),
            item(jti),
            item(uuid.uuid4().hex, kind="enterprise"),
            item(uuid.uuid4().hex, verify_only.grant_id),
            item(uuid.uuid4().hex),
        ]
    )

    def send(cert: str) -> Any:
        return run(
            call_platform_as(
                federation, cert, forwarding_pb2_grpc.ForwardingStub, "ScoreForwarded", batch
            )
        )

    answer = send("gateway")
    kinds = [r.WhichOneof("outcome") for r in answer.results]
    assert kinds == ["answer", "error", "error", "error", "answer"]
    codes = [from_status_bytes(r.error).code for r in answer.results[1:4]]
    assert codes == [
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.PERMISSION_DENIED,
    ]
    _, want = expected(federation, document, scorer.uscc)
    for result in (answer.results[0], answer.results[4]):
        assert (result.answer.pd, result.answer.score) == (want.pd, want.score)
    refused = send(INSTITUTION)
    assert isinstance(refused, grpc.aio.AioRpcError)
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
