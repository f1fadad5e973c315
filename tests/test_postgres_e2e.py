"""Verification and scoring through the real daemons with PostgreSQL as the store (the
production setting): the platform's registries, budgets, model registry and transparency
log, and the tax bureau's ledger and replay claims, each in a PostgreSQL schema of their
own.

The batched provider calls rely on a refused item writing nothing and leaving the
batch's one transaction usable (``Guard.claim`` last, ``insert_if_new`` one statement);
on PostgreSQL a failed statement would abort the whole transaction, so this is checked
here on PostgreSQL, through the daemons.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tomli_w

from tests.conftest import POSTGRES_URL, run
from tests.test_verification_e2e import (
    ONE_EACH,
    TRUTH,
    Bank,
    Enterprise,
    Platform,
    ask,
    expected,
    usccs,
)
from veil.errors import from_status_bytes
from veil.v1 import verification_pb2 as vpb
from veil.v1 import verification_pb2_grpc

pytestmark = pytest.mark.postgres

VAT = {"field": "tax_vat_paid_last_year", "op": "ge", "unit": "CNY"}
ALL_SIX = {"all": [claim for claim, _ in ONE_EACH.values()]}  # a condition at each provider


def _on_schema(schema: str) -> str:
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="module")
def pg_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A whole federation whose platform store and tax ledger are PostgreSQL schemas."""
    import tomllib

    from tests.conftest import E2E_ENTERPRISES
    from veil.store import make_engine
    from veil_cli.authz_setup import onboard_institution
    from veil_cli.commands.data import generate_to_dir
    from veil_cli.commands.demo import wait_for_aggregation
    from veil_cli.federation import INSTITUTION, Federation

    tag = uuid.uuid4().hex[:10]
    schemas = {"platform": f"platform_{tag}", "tax": f"tax_ledger_{tag}"}
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        for schema in schemas.values():
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    workdir: Path = tmp_path_factory.mktemp("pg-federation")
    fed = Federation(workdir)
    fed.prepare()
    for node, section in (("platform", "store"), ("tax", "ledger")):
        path = fed.configs / f"{node}.toml"
        doc = tomllib.loads(path.read_text())
        doc[section]["url"] = _on_schema(schemas[node])
        path.write_text(tomli_w.dumps(doc))
    generate_to_dir(
        fed.data, enterprises=E2E_ENTERPRISES, seed=11, units=fed.providers, progress=False
    )
    fed.schemas = schemas  # type: ignore[attr-defined]
    try:
        run(fed.launch())
        run(wait_for_aggregation(workdir / "admin.toml"))
        run(onboard_institution(fed, INSTITUTION))
        yield fed
    finally:
        fed.stop()
        with admin.begin() as conn:
            for schema in schemas.values():
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def _tables(schema: str) -> set[str]:
    from sqlalchemy import text

    from veil.store import make_engine

    engine = make_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            )
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def test_checks_single_composite_and_batched_run_on_postgresql(pg_federation: Any) -> None:
    fed = pg_federation
    bank = Bank(fed)
    try:
        subjects = []
        for uscc in usccs(fed, 4):
            ent = Enterprise(fed, uscc)
            subjects.append((ent, ent.grant()))
        # the state really is in PostgreSQL
        assert {"registry_grants", "verification_budget"} <= _tables(fed.schemas["platform"])
        assert any("ledger" in t for t in _tables(fed.schemas["tax"]))

        # one at a time: single and composite, each equal to the plaintext evaluation
        for ent, grant in subjects:
            for claim in ({**VAT, "value": "120000"}, ALL_SIX):
                answer = bank.verify(ent.uscc, grant, claim)
                assert TRUTH[answer.result] is expected(fed, ent.uscc, answer), claim
                assert answer.log_index >= 0 and answer.signed_result

        # sixteen single checks in flight: their provider calls batch (VerifyClaimMany)
        requests = [
            ask(ent.uscc, grant, {**VAT, "value": value}, uuid.uuid4().hex)
            for value in ("40000", "180000", "320000", "460000")
            for ent, grant in subjects
        ]

        async def all_at_once() -> list[vpb.VerifyResponse]:
            stub = verification_pb2_grpc.VerificationServiceStub
            return list(await asyncio.gather(*(bank._call("Verify", r, stub) for r in requests)))

        answers = bank.loop.run_until_complete(all_at_once())
        for request, answer in zip(requests, answers, strict=True):
            assert answer.request_id == request.request_id
            assert TRUTH[answer.result] is expected(fed, request.uscc, answer)
    finally:
        bank.close()


def test_a_refused_item_leaves_the_batch_transaction_usable_on_postgresql(
    pg_federation: Any,
) -> None:
    """A replayed request id in the middle of a ``VerifyClaimMany`` batch is refused in
    its place; the items before and after it are answered and recorded: the refusal
    wrote nothing and did not abort the PostgreSQL transaction."""
    from provider_node.ledger import Ledger

    fed = pg_federation
    (uscc,) = usccs(fed, 1)
    ent = Enterprise(fed, uscc)
    platform = Platform(fed, ent, ent.grant())
    fields = ["tax_vat_paid_last_year"]
    rids = [uuid.uuid4().hex for _ in range(3)]

    def item(rid: str) -> vpb.ProviderVerifyRequest:
        return vpb.ProviderVerifyRequest(
            request_id=rid,
            uscc=uscc,
            claim_json=json.dumps({**VAT, "value": "10000"}),
            request_token=platform.token("tax", fields, rid),
            grant_jws=platform.grant_jws,
        )

    answer = platform.verify_claim_many("tax", [item(rids[0]), item(rids[0]), item(rids[1])])
    assert [r.WhichOneof("outcome") for r in answer.results] == ["answer", "error", "answer"]
    replayed = from_status_bytes(answer.results[1].error)
    assert replayed.code == grpc.StatusCode.UNAUTHENTICATED
    assert "already presented" in replayed.message
    # the claims committed: presenting the answered ids again is refused as a replay
    again = platform.verify_claim_many("tax", [item(rids[1]), item(rids[2])])
    assert [r.WhichOneof("outcome") for r in again.results] == ["error", "answer"]
    ledger = Ledger.open(_on_schema(fed.schemas["tax"]))
    try:
        mine = [e for e in reversed(ledger.entries(1000)) if e.request_id in rids]
    finally:
        ledger.engine.dispose()
    assert [(e.request_id, e.outcome) for e in mine] == [
        (rids[0], "answered"),
        (rids[0], "refused"),
        (rids[1], "answered"),
        (rids[1], "refused"),
        (rids[2], "answered"),
    ]


def test_scores_run_on_postgresql(pg_federation: Any) -> None:
    """The demo model, imported into the PostgreSQL model registry, scores enterprises
    one at a time and all at once, each equal to the plaintext model, each in the log."""
    from platform_node.models.demo import fit_demo_model
    from platform_node.models.registry import models
    from tests.test_authorization_e2e import bank, gateway
    from tests.test_scoring_e2e import SCORE_LOAN, SCORE_PURPOSE, score_grant_of
    from tests.test_scoring_e2e import expected as plain_score
    from veil.v1 import scoring_pb2 as spb
    from veil.v1 import scoring_pb2_grpc
    from veil_cli.score_demo import import_model

    fed = pg_federation
    document = fit_demo_model(fed.data)
    model = run(import_model(str(fed.workdir / "admin.toml"), document))
    assert models.name in _tables(fed.schemas["platform"])
    subjects = [(u, score_grant_of(fed, document, u)) for u in usccs(fed, 10)[6:10]]
    signer = bank(fed)

    def request(uscc: str, grant: str) -> spb.ScoreRequest:
        return spb.ScoreRequest(
            uscc=uscc,
            model_id=model.model_id,
            grant_id=grant,
            purpose=SCORE_PURPOSE,
            loan_ref=SCORE_LOAN,
        )

    def call(uscc: str, grant: str) -> Any:
        return gateway(
            fed,
            "Score",
            request(uscc, grant),
            signer=signer,
            service=scoring_pb2_grpc.ScoringServiceStub,
        )

    async def all_at_once() -> list[Any]:
        return list(await asyncio.gather(*(call(u, g) for u, g in subjects)))

    one_by_one = [run(call(u, g)) for u, g in subjects]
    together = run(all_at_once())
    for answers in (one_by_one, together):
        for (uscc, _), answer in zip(subjects, answers, strict=True):
            _, want = plain_score(fed, document, uscc)
            assert (answer.pd, answer.score, answer.grade) == (want.pd, want.score, want.grade)
            assert answer.log_index >= 0
    indexes = [a.log_index for a in one_by_one + together]
    assert len(set(indexes)) == len(indexes)  # each its own log entry
