"""A curious platform against the scoring protocol, and exact equality with plaintext.

The platform made every ``Enc(w)`` a provider multiplies, so it knows their randomness,
and it holds the private key.  It tries to recover a provider's low-entropy features
(the tax bureau's arrears flag, credit grade and payment-regularity bin: 3 × 7 × 7 = 147
possible vectors) from the one ciphertext it receives:

* **equality test** — recompute ``Π Enc(w)`` for every candidate and compare;
* **ratio test** — ``c · ĉ⁻¹ ≡ 1 (mod n)`` iff the randomness cancels, i.e. the candidate
  is right, whatever plaintext mask was added;
* **decryption** — decrypt ``c`` and match the partial score against the candidates'.

Unsafe variants are assembled from the provider's building blocks
(:func:`provider_node.scoring.unprotected_partial`, ``add_plain``, ``rerandomize``),
never from the node's request path, which always masks *and* re-randomizes
(:func:`provider_node.scoring.protect`).  Each attack succeeds on every enterprise for the
variant it targets and never on the protected answer — including answers captured from
the real tax provider daemon.  Also here: the logit equals the plaintext model within
1e-9, and a provider returning malformed ciphertexts is rejected by name.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gmpy2
import grpc
import pytest

from platform_node.models.demo import fit_demo_model, store_for
from platform_node.scoring import MasksDidNotCancel, combine_logit, install_request
from provider_node.scoring import InstalledPart, build_installed, protect, unprotected_partial
from tests.conftest import run
from veil.catalog import load_catalog
from veil.crypto import (
    Ciphertext,
    MaskKey,
    PaillierKeys,
    RandomnessPool,
    add_many,
    add_plain,
    ciphertext_bytes,
    ciphertext_from_bytes,
    encrypt,
    mul_plain,
    my_mask,
    rerandomize,
)
from veil.scoring.features import feature_value
from veil.scoring.part import SUM, VALUE
from veil.scoring.plain import plain_logit
from veil.scoring.spec import ModelSpec, parse_model

TARGET = "tax"
ENTERPRISES = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from veil_cli.commands.data import generate_to_dir

    data = tmp_path_factory.mktemp("attack-data")
    generate_to_dir(data, enterprises=1200, seed=23, progress=False)
    doc = fit_demo_model(data)
    doc["version"] = 1
    spec = parse_model(doc)
    keys = PaillierKeys.generate(2048)
    pool = RandomnessPool(keys.public, 16, short_exponent=True)
    catalog = load_catalog()
    parts = {
        u: build_installed(install_request(spec, u, keys.public, pool), u, catalog)
        for u in spec.providers
    }
    stores = {u: store_for(data, u, catalog) for u in spec.providers}
    masks = {u: MaskKey.generate() for u in spec.providers}
    labels = (data / "labels.csv").read_text().splitlines()[1:]
    usccs = [line.split(",")[0] for line in labels]
    return {
        "data": data,
        "spec": spec,
        "keys": keys,
        "pool": pool,
        "parts": parts,
        "stores": stores,
        "masks": masks,
        "usccs": usccs,
    }


def rows_of(world: dict[str, Any], unit: str, uscc: str) -> Any:
    return world["stores"][unit].fetch(uscc, world["parts"][unit].part.fields)


def mask_of(world: dict[str, Any], unit: str, rid: str, roster: Sequence[str] | None = None) -> int:
    peers = {
        u: k.public_bytes()
        for u, k in world["masks"].items()
        if u != unit and (roster is None or u in roster)
    }
    return my_mask(
        world["masks"][unit],
        unit,
        peers,
        request_id=rid,
        context="score",
        modulus=world["keys"].public.n,
    )


# --- exact equality with the plaintext model ---------------------------------------------


def answers_of(
    world: dict[str, Any], uscc: str, roster: Sequence[str], rid: str
) -> dict[str, Ciphertext]:
    """What the providers of ``roster`` send for one request (through the wire format)."""
    keys: PaillierKeys = world["keys"]
    return {
        u: ciphertext_from_bytes(
            keys.public,
            ciphertext_bytes(
                protect(
                    unprotected_partial(world["parts"][u], rows_of(world, u, uscc)),
                    mask_of(world, u, rid, roster),
                    world["pool"],
                )
            ),
        )
        for u in roster
    }


def test_logit_equals_the_plaintext_model_within_1e_9(world: dict[str, Any]) -> None:
    """The platform's own combination (:func:`platform_node.scoring.combine_logit`) of
    the protected answers, against the float64 plaintext model: every provider, and the
    drop-out re-run (the remaining roster, the missing provider's documented missing
    contributions added by the platform)."""
    spec: ModelSpec = world["spec"]
    keys: PaillierKeys = world["keys"]
    dropped = next(u for u in spec.providers if spec.may_impute(u))
    remaining = [u for u in spec.providers if u != dropped]
    worst = worst_dropout = 0.0
    for uscc in world["usccs"][:60]:
        rows = {u: rows_of(world, u, uscc) for u in spec.providers}
        answers = answers_of(world, uscc, spec.providers, uuid.uuid4().hex)
        logit = combine_logit(keys, spec, answers)
        worst = max(worst, abs(logit - plain_logit(spec, rows)))
        rerun = answers_of(world, uscc, remaining, uuid.uuid4().hex)
        logit = combine_logit(keys, spec, rerun, [dropped])
        without = {u: r for u, r in rows.items() if u != dropped}  # dropped: no rows at all
        worst_dropout = max(worst_dropout, abs(logit - plain_logit(spec, without)))
    assert worst <= 1e-9, worst
    assert worst_dropout <= 1e-9, worst_dropout


def test_answers_whose_masks_do_not_cancel_give_no_score(world: dict[str, Any]) -> None:
    """Never a silently wrong score: a round in which masks do not cancel (an answer from
    another roster or request, or a well-formed ciphertext of garbage) is refused."""
    spec: ModelSpec = world["spec"]
    keys: PaillierKeys = world["keys"]
    uscc = world["usccs"][3]
    rid = uuid.uuid4().hex
    answers = answers_of(world, uscc, spec.providers, rid)
    combine_logit(keys, spec, answers)  # the genuine round combines
    other_roster = answers_of(world, uscc, [u for u in spec.providers if u != "samr"], rid)
    stale = answers_of(world, uscc, spec.providers, uuid.uuid4().hex)
    for bad in (
        {**answers, TARGET: other_roster[TARGET]},  # masked for a roster without samr
        {**answers, TARGET: stale[TARGET]},  # masked for another request id
        {u: c for u, c in answers.items() if u != "utilities"},  # a lost answer, not re-run
        {**answers, TARGET: encrypt(keys.public, 12345, world["pool"])},  # garbage
    ):
        with pytest.raises(MasksDidNotCancel) as info:
            combine_logit(keys, spec, bad)
        assert info.value.code.name == "UNAVAILABLE"
        assert "do not combine" in info.value.message and TARGET in info.value.message


def test_a_lone_masked_answer_decrypts_to_noise(world: dict[str, Any]) -> None:
    keys: PaillierKeys = world["keys"]
    uscc = world["usccs"][0]
    c = protect(
        unprotected_partial(world["parts"][TARGET], rows_of(world, TARGET, uscc)),
        mask_of(world, TARGET, "r1"),
        world["pool"],
    )
    value = keys.decrypt_centred(c)
    assert abs(value) > 2**1000  # a partial score is < 2^110 in absolute value


# --- the attacks -------------------------------------------------------------------------


def candidates(part: InstalledPart) -> list[tuple[Any, ...]]:
    """Every value combination of the target's features (low entropy by design)."""
    domains: list[Sequence[Any]] = []
    for f in part.part.features:
        if f.linear:
            domains.append([None, 0.0, 1.0])  # the arrears flag: missing, no, yes
        elif f.categories:
            domains.append([None, *f.categories, "<other>"])
        else:
            domains.append([None, *[e - 0.5 for e in f.edges], f.edges[-1] + 1])  # one per bin
    return list(itertools.product(*domains))


def truth(part: InstalledPart, rows: Any) -> tuple[Any, ...]:
    """The true candidate: each feature's value mapped to its bin representative."""
    out = []
    for f in part.part.features:
        v = feature_value(f.spec, rows)
        if v is None or f.linear:
            out.append(v)
        elif f.categories:
            out.append(v if v in f.categories else "<other>")
        else:
            i = f.index(v)
            out.append(f.edges[i] - 0.5 if i < len(f.edges) else f.edges[-1] + 1)
    return tuple(out)


def recompute(part: InstalledPart, candidate: Sequence[Any]) -> Ciphertext:
    """What the platform can compute from the ciphertexts it sent: Π Enc(w) for a guess."""
    terms = []
    for f, v in zip(part.part.features, candidate, strict=True):
        name = f.spec.name
        if v is None:
            terms.append(part.missing[name])
        elif f.linear:
            terms.append(mul_plain(part.slope_cts[name], VALUE.to_int(v)))
        else:
            idx = (
                f.categories.index(v)
                if v in f.categories
                else (len(f.categories) if f.categories else f.index(v))
            )
            terms.append(part.tables[name][idx])
    return add_many(terms)


def plain_partial(spec: ModelSpec, part: InstalledPart, candidate: Sequence[Any]) -> int:
    """The partial score (×2^100) the platform expects for a guess: it knows the model."""
    total = 0
    compiled = {f.spec.name: f for f in spec.features}
    for f, v in zip(part.part.features, candidate, strict=True):
        c = compiled[f.spec.name]
        if v is None:
            total += SUM.to_int(c.missing)
        elif f.linear:
            total += VALUE.to_int(v) * SLOPE_INT(c.slope)
        else:
            total += SUM.to_int(c.contribution("<other>" if v == "<other>" else v))
    return total


def SLOPE_INT(x: float) -> int:
    from veil.scoring.part import SLOPE

    return SLOPE.to_int(x)


def equality_attack(
    part: InstalledPart, c: Ciphertext, cands: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    return [cand for cand in cands if recompute(part, cand).value == c.value]


def ratio_attack(
    part: InstalledPart, c: Ciphertext, cands: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    n, n2 = part.public_key.n_mpz, part.public_key.nsquare_mpz
    hits = []
    for cand in cands:
        ratio = gmpy2.mpz(c.value) * gmpy2.invert(recompute(part, cand).value, n2) % n2
        if ratio % n == 1:
            hits.append(cand)
    return hits


def decryption_attack(
    world: dict[str, Any], part: InstalledPart, c: Ciphertext, cands: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    keys: PaillierKeys = world["keys"]
    value = keys.decrypt(c)
    n = keys.public.n
    return [cand for cand in cands if plain_partial(world["spec"], part, cand) % n == value]


def variants(world: dict[str, Any], uscc: str) -> dict[str, Ciphertext]:
    part = world["parts"][TARGET]
    raw = unprotected_partial(part, rows_of(world, TARGET, uscc))
    mask = mask_of(world, TARGET, uuid.uuid4().hex)
    full = RandomnessPool(world["keys"].public, 0)  # statistically hiding randomizers
    try:
        return {
            "unsafe: neither": raw,
            "unsafe: masked, not re-randomized": add_plain(raw, mask),
            "unsafe: re-randomized, not masked": rerandomize(raw, full),
            "protected (what the node sends)": protect(raw, mask, full),
        }
    finally:
        full.close()


def test_attacks_recover_features_only_from_the_unsafe_variants(world: dict[str, Any]) -> None:
    """Over several enterprises: each unsafe variant gives the attacker the tax bureau's
    features (or, by decryption, its exact partial score, which pins them down up to
    values with equal weights); the protected answer gives nothing to any attack."""
    part: InstalledPart = world["parts"][TARGET]
    spec = world["spec"]
    cands = candidates(part)
    assert len(cands) >= 100
    won = dict.fromkeys(("neither", "masked only", "re-randomized only", "protected"), 0)
    for uscc in world["usccs"][:ENTERPRISES]:
        true = truth(part, rows_of(world, TARGET, uscc))
        v = variants(world, uscc)
        if equality_attack(part, v["unsafe: neither"], cands) == [true]:
            won["neither"] += 1
        if ratio_attack(part, v["unsafe: masked, not re-randomized"], cands) == [true]:
            won["masked only"] += 1
        found = decryption_attack(world, part, v["unsafe: re-randomized, not masked"], cands)
        score = plain_partial(spec, part, true)
        if true in found and all(plain_partial(spec, part, f) == score for f in found):
            won["re-randomized only"] += 1
        protected = v["protected (what the node sends)"]
        if (
            equality_attack(part, protected, cands)
            or ratio_attack(part, protected, cands)
            or decryption_attack(world, part, protected, cands)
        ):
            won["protected"] += 1
    assert won == {
        "neither": ENTERPRISES,
        "masked only": ENTERPRISES,
        "re-randomized only": ENTERPRISES,
        "protected": 0,
    }


def test_each_unsafe_variant_falls_to_its_own_attack(world: dict[str, Any]) -> None:
    part: InstalledPart = world["parts"][TARGET]
    cands = candidates(part)
    uscc = world["usccs"][1]
    true = truth(part, rows_of(world, TARGET, uscc))
    v = variants(world, uscc)
    assert equality_attack(part, v["unsafe: neither"], cands) == [true]
    assert (
        equality_attack(part, v["unsafe: masked, not re-randomized"], cands) == []
    )  # masks stop equality…
    assert ratio_attack(part, v["unsafe: masked, not re-randomized"], cands) == [
        true
    ]  # …not the ratio
    assert ratio_attack(part, v["unsafe: re-randomized, not masked"], cands) == []  # re-randomized…
    assert true in decryption_attack(world, part, v["unsafe: re-randomized, not masked"], cands)
    protected = v["protected (what the node sends)"]
    assert equality_attack(part, protected, cands) == []
    assert ratio_attack(part, protected, cands) == []
    assert decryption_attack(world, part, protected, cands) == []


def test_a_stale_ciphertext_cannot_be_serialized(world: dict[str, Any]) -> None:
    from veil.errors import StaleCiphertext

    part = world["parts"][TARGET]
    raw = unprotected_partial(part, rows_of(world, TARGET, world["usccs"][2]))
    with pytest.raises(StaleCiphertext):
        ciphertext_bytes(add_plain(raw, 12345))


# --- against the real daemons ----------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(federation: Any) -> dict[str, Any]:
    from tests.test_authorization_e2e import Enterprise, usccs
    from veil_cli.score_demo import SCORE_LOAN, SCORE_PURPOSE, import_model, model_fields

    doc = fit_demo_model(federation.data)
    info = run(import_model(str(federation.workdir / "admin.toml"), doc))
    ent = Enterprise(federation, usccs(federation, 2)[1])
    grant = ent.grant(
        tuple(model_fields(doc)), uses=["score"], purpose=SCORE_PURPOSE, loan_ref=SCORE_LOAN
    )
    return {"doc": doc, "info": info, "ent": ent, "grant": grant}


def test_answers_of_the_real_tax_node_resist_the_attacks(
    federation: Any, deployed: dict[str, Any]
) -> None:
    """The platform's own view: its private key, the Enc(w) it installed at the tax node,
    and the ciphertext the tax node returns to a well-formed request."""
    from sqlalchemy import create_engine, select

    from provider_node.scoring import installed_parts
    from tests.test_authorization_e2e import claims
    from tests.test_scoring_e2e import roster
    from veil.tls import PeerIdentity, secure_channel
    from veil.tokens import SigningKey, issue_request_token
    from veil.v1 import provider_scoring_pb2 as ppb
    from veil.v1 import provider_scoring_pb2_grpc
    from veil_cli.score_demo import SCORE_LOAN, SCORE_PURPOSE

    info, ent, grant = deployed["info"], deployed["ent"], deployed["grant"]
    from veil_cli.score_demo import score as score_call

    run(
        score_call(str(federation.workdir / "client.toml"), ent.uscc, info.model_id, grant.grant_id)
    )  # installs
    engine = create_engine(f"sqlite:///{federation.data / 'tax-ledger.db'}")
    with engine.connect() as conn:
        blob = conn.execute(
            select(installed_parts.c.request).where(installed_parts.c.model_id == info.model_id)
        ).scalar_one()
    part = build_installed(ppb.InstallModelRequest.FromString(blob), TARGET, load_catalog())
    keys = PaillierKeys.load(federation.workdir / "keys" / "scoring-paillier.key")
    spec = parse_model(deployed["doc"])
    world = {"keys": keys, "spec": spec.with_version(info.version)}
    cands = candidates(part)
    store = store_for(federation.data, TARGET, load_catalog())
    true = truth(part, store.fetch(ent.uscc, part.part.fields))
    assert true in cands
    fields = spec.fields_of(TARGET)
    token_key = SigningKey.load(federation.workdir / "keys" / "platform-token.key")
    node = federation.node("tax")
    rid = uuid.uuid4().hex
    c = claims(ent.uscc, grant.grant_id, fields, request_id=rid, purpose=SCORE_PURPOSE)
    c = type(c)(**{**c.__dict__, "use": "score", "loan_ref": SCORE_LOAN})
    request = ppb.PartialScoreRequest(
        request_id=rid,
        uscc=ent.uscc,
        model_id=info.model_id,
        version=info.version,
        key_id=keys.key_id,
        fields=list(fields),
        request_token=issue_request_token(token_key, c),
        grant_jws=grant.grant_jws,
        participants=roster(federation, list(spec.providers)),
    )

    async def call() -> Any:
        async with secure_channel(
            node.address, federation.client_tls("platform"), PeerIdentity("provider", "tax")
        ) as ch:
            return await provider_scoring_pb2_grpc.ProviderScoringStub(ch).PartialScore(
                request, timeout=15
            )

    answer = ciphertext_from_bytes(keys.public, run(call()).ciphertext)
    assert equality_attack(part, answer, cands) == []
    assert ratio_attack(part, answer, cands) == []
    assert decryption_attack(world, part, answer, cands) == []
    # sanity: the same attacks do find the truth in what the node would send unprotected
    raw = unprotected_partial(part, store.fetch(ent.uscc, part.part.fields))
    assert equality_attack(part, raw, cands) == [true]


# --- a provider that returns garbage ----------------------------------------------------------


FAKE = Path(__file__).with_name("_fake_scoring_provider.py")


@pytest.mark.parametrize("mode", ["out_of_range", "wrong_length", "not_coprime"])
def test_malformed_ciphertext_from_a_provider_is_rejected_and_named(
    federation: Any, deployed: dict[str, Any], mode: str
) -> None:
    from tests.conftest import start_provider, stop_provider
    from tests.test_scoring_e2e import score

    info, ent, grant = deployed["info"], deployed["ent"], deployed["grant"]
    score(federation, ent.uscc, info.model_id, grant.grant_id)  # installed everywhere
    stop_provider(federation, "utilities")
    node = federation.node("utilities")
    fake = subprocess.Popen(
        [sys.executable, str(FAKE), str(federation.configs / "utilities.toml"), mode],
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(FAKE.parent.parent)},
        cwd=FAKE.parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert fake.stdout is not None
        first = fake.stdout.readline().strip()
        assert first == b"ready", first + fake.stdout.read()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            score(federation, ent.uscc, info.model_id, grant.grant_id)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        details = err.value.details() or ""
        assert "'utilities'" in details and "malformed ciphertext" in details, details
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=20)
        start_provider(federation, "utilities")
    assert node.address  # the real node is back on its address
    deadline = time.monotonic() + 30
    while True:  # once the platform's channel has reconnected: a full score again
        try:
            if not score(federation, ent.uscc, info.model_id, grant.grant_id).providers_missing:
                break
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() < deadline, "utilities did not come back"
        time.sleep(0.5)


def test_rerun_ids_are_new_and_fit_the_stores() -> None:
    """A drop-out re-run asks under a new id (new masks; providers refuse a replayed one)
    that still fits the 64-character request-id columns of every store (PostgreSQL
    enforces them)."""
    from veil.request_ids import MAX_REQUEST_ID_LEN, rerun_id

    for rid in ("a" * 16, uuid.uuid4().hex, "b" * MAX_REQUEST_ID_LEN):
        ids = [rerun_id(rid, attempt) for attempt in range(12)]
        assert ids[0] == rid and len(set(ids)) == len(ids)
        assert all(16 <= len(i) <= MAX_REQUEST_ID_LEN for i in ids)
