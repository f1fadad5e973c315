"""Joint training: the shared maths and protocol pieces, in-process (no daemons)."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score, roc_curve

from veil.certs import init_dev_pki
from veil.config import TLSConfig
from veil.crypto import (
    MaskKey,
    PaillierKeys,
    add_plain,
    ciphertext_bytes,
    ciphertext_from_bytes,
    dot,
    encrypt,
    rerandomize,
)
from veil.errors import FailedPrecondition, InvalidArgument
from veil.training import psi
from veil.training.binning import quantile_edges, woe_iv
from veil.training.config import (
    JobConfig,
    epoch_batches,
    job_batch_size,
    min_batch_size,
    split_roles,
)
from veil.training.encoding import ColumnEncoder, design_matrix, fit_encoders
from veil.training.metrics import auc, curves, ks, log_loss
from veil.training.optim import Optimizer
from veil.training.packing import (
    FR,
    FX,
    Packing,
    pack_rows,
    quantize_features,
    quantize_residuals,
    unpack_sums,
)
from veil.training.randomizers import NonHolderRandomizers
from veil.training.secure_sum import combine_scores, masked_scores
from veil.training.stages import Stage, check_stage
from veil.training.table import read_party_csv


@pytest.fixture(scope="module")
def keys() -> PaillierKeys:
    return PaillierKeys.generate(2048)


# --- metrics ----------------------------------------------------------------------------


def test_auc_ks_logloss_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + y, 1)  # rounded: many ties
    assert auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    assert ks(s, y) == pytest.approx(float(np.max(tpr - fpr)), abs=1e-12)
    c = curves(s, y)
    assert c.tpr[0] == 0 and c.tpr[-1] == 1 and c.fpr[-1] == 1
    z = rng.normal(size=500)
    assert log_loss(z, y) == pytest.approx(sk_log_loss(y, 1 / (1 + np.exp(-z))), rel=1e-9)


# --- binning, WOE, IV -------------------------------------------------------------------


def test_woe_iv_formula_and_degenerate_cases() -> None:
    woe, iv = woe_iv([100, 100], [10, 30])
    bad, good = 40.0, 160.0
    w0 = np.log((10.5 / bad) / (90.5 / good))
    w1 = np.log((30.5 / bad) / (70.5 / good))
    assert woe == pytest.approx([w0, w1])
    assert iv == pytest.approx((10.5 / bad - 90.5 / good) * w0 + (30.5 / bad - 70.5 / good) * w1)
    assert woe_iv([10, 10], [0, 0]) == ([0.0, 0.0], 0.0)  # no defaults: no evidence
    woe, iv_empty = woe_iv([100, 100, 0], [10, 30, 0])  # an empty (missing) bin: WOE 0
    assert woe == pytest.approx([w0, w1, 0.0]) and iv_empty == pytest.approx(iv)


def test_quantile_edges_respect_minimum_bin_size() -> None:
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(size=990), [50.0] * 10]
    edges = quantile_edges(x, 10, min_count=40)
    counts = np.bincount(np.searchsorted(edges, x, side="right"))
    assert len(edges) <= 9 and counts.min() >= 40
    assert quantile_edges(np.array([0.0, 1.0] * 50), 10, 5) == [1.0]  # one bin per value


# --- encoders ---------------------------------------------------------------------------


def test_encoders_standardise_one_hot_and_drop_useless_columns() -> None:
    cfg = JobConfig(min_category_count=2)
    cols = {
        "num": ["1", "2", "", "4", "5", "6"],
        "cat": ["A", "B", "A", "", "B", "C"],
        "const": ["7"] * 6,
        "empty": ["", "NA", "null", "", "nan", "None"],
    }
    encs = fit_encoders(cols, np.arange(6), cfg)
    num, cat, const, empty = encs
    assert (num.status, const.status, empty.status) == ("ok", "constant", "all_missing")
    assert num.missing_indicator and num.mean == pytest.approx(3.6)
    assert cat.categories == ["A", "B"] and cat.missing_column  # "C" is rare: all zeros
    x = design_matrix(encs, cols, 6)
    assert x.shape == (6, 2 + 3)
    assert x[2, 0] == 0.0 and x[2, 1] == 1.0  # missing: mean (0) plus the indicator
    assert x[:, 0].mean() == pytest.approx(0.0)
    assert list(x[5, 2:]) == [0.0, 0.0, 0.0]  # rare category
    assert cat.bins(["A", "C", ""]).tolist() == [0, 2, 3]  # categories, other, missing
    again = ColumnEncoder.from_json(num.to_json())
    assert np.array_equal(again.encode(cols["num"]), num.encode(cols["num"]))


def test_woe_encoding_uses_the_bin_table() -> None:
    enc = ColumnEncoder.fit(
        "v", [str(v) for v in range(100)], JobConfig(encoding="woe", max_bins=4)
    )
    table = [float(i) for i in range(enc.n_bins)]
    enc.set_woe(table, [25, 25, 25, 25, 0])
    assert enc.encode(["0", "99", ""]).ravel().tolist() == [0.0, 3.0, 0.0]  # empty bin → 0


# --- packing: the encrypted gradient is exact -------------------------------------------


def test_packed_encrypted_gradient_equals_plaintext(keys: PaillierKeys) -> None:
    rng = np.random.default_rng(5)
    x = np.clip(rng.normal(size=(60, 45)), -8, 8)
    r = rng.uniform(-1, 1, size=60)
    xq, rq = quantize_features(x), quantize_residuals(r)
    packing = Packing(45, keys.public.bits)
    assert packing.slots == 36 and packing.chunks == 2
    rand = NonHolderRandomizers(keys.public, expected=120)
    sums: list[int] = []
    for c in range(packing.chunks):
        cts = [encrypt(keys.public, k, rand) for k in pack_rows(xq, packing, c)]  # type: ignore[arg-type]
        g = dot(cts, [int(v) for v in rq])
        g = add_plain(g, -int(rq.sum()) * packing.offset_weight(c))
        g = ciphertext_from_bytes(keys.public, ciphertext_bytes(rerandomize(g)))
        sums.extend(unpack_sums(keys.decrypt_centred(g), len(packing.chunk_columns(c))))
    assert sums == (xq.T @ rq).tolist()  # exact integer arithmetic
    approx = np.asarray(sums) / 2 ** (FX + FR)
    assert np.allclose(approx, x.T @ r, atol=60 * (2 ** -(FX + 1) + 2 ** -(FR + 1)) * 8)


def test_features_outside_the_packing_range_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        quantize_features(np.array([[16.0]]))
    with pytest.raises(InvalidArgument):
        unpack_sums(1 << 300, 2)  # bits beyond the used slots: malformed


# --- secure sum -------------------------------------------------------------------------


def test_pairwise_masks_cancel_only_in_the_full_sum() -> None:
    names = ["court", "samr", "tax"]
    mk = {n: MaskKey.generate() for n in names}
    peers = {n: mk[n].public_bytes() for n in names}
    rng = np.random.default_rng(2)
    u = {n: rng.normal(size=300) for n in names}
    sent = {
        n: masked_scores(u[n], mk[n], n, peers, request_id="job|run|d", context="forward|0|0|x")
        for n in names
    }
    total = combine_scores(sent, 300)
    assert np.allclose(total, sum(u.values()), atol=3 * 2**-24)
    # one party's contribution alone says nothing about its scores
    alone = combine_scores({"tax": sent["tax"]}, 300)
    assert abs(np.corrcoef(alone, u["tax"])[0, 1]) < 0.2
    # a party masking another context (e.g. other rows) breaks the sum instead of leaking
    other = masked_scores(
        u["tax"], mk["tax"], "tax", peers, request_id="job|run|d", context="forward|0|0|y"
    )
    assert not np.allclose(combine_scores({**sent, "tax": other}, 300), total, atol=1)


# --- PSI --------------------------------------------------------------------------------


def test_blinding_commutes_and_hides_ids() -> None:
    a, b = psi.Blinder(), psi.Blinder()
    pts = [psi.hash_to_point(f"91{i:016d}") for i in range(20)]
    assert a.apply(b.apply(pts)) == b.apply(a.apply(pts))
    assert set(a.apply(pts)).isdisjoint(pts)
    with pytest.raises(InvalidArgument):
        psi.split_points(b"x" * 33)


def test_group_secret_opens_only_for_its_recipient() -> None:
    leader, peer, other = MaskKey.generate(), MaskKey.generate(), MaskKey.generate()
    secret = secrets.token_bytes(psi.GROUP_SECRET_BYTES)
    box = psi.seal_group_secret(secret, leader, "a", "b", peer.public_bytes(), "job")
    assert psi.open_group_secret(box, peer, "b", "a", leader.public_bytes(), "job") == secret
    with pytest.raises(InvalidArgument):
        psi.open_group_secret(box, other, "b", "a", leader.public_bytes(), "job")
    with pytest.raises(InvalidArgument):
        psi.open_group_secret(box, peer, "b", "a", leader.public_bytes(), "another-job")


# --- config, split, stages --------------------------------------------------------------


def test_split_and_batches_are_deterministic() -> None:
    y = (np.arange(1000) % 10 == 0).astype(np.int8)  # 10 % defaults
    r1, r2 = split_roles(y, 0.3, 0.2, 4), split_roles(y, 0.3, 0.2, 4)
    assert np.array_equal(r1, r2)
    assert [int((r1 == k).sum()) for k in (0, 1, 2)] == [560, 140, 300]
    assert [int(y[r1 == k].sum()) for k in (0, 1, 2)] == [56, 14, 30]  # stratified
    batches = epoch_batches(1000, 300, 4, 0)
    assert [len(b) for b in batches] == [300, 300, 400]  # the short tail is merged
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert not np.array_equal(batches[0], epoch_batches(1000, 300, 4, 1)[0])
    assert min_batch_size(300) == 1200


def test_config_refuses_unknown_and_weak_settings() -> None:
    with pytest.raises(InvalidArgument, match="unknown"):
        JobConfig.from_json('{"learning_rat": 0.1}')
    with pytest.raises(InvalidArgument, match="paillier_bits"):
        JobConfig(paillier_bits=1024)
    cfg = JobConfig(seed=9, l2=None)
    assert JobConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(InvalidArgument, match="batch_size"):
        JobConfig(batch_size=8)  # below the floor every party enforces


def test_batch_size_auto_and_floor() -> None:
    assert JobConfig().batch_size == 0  # auto: about 32 batches per epoch, at most 512
    assert job_batch_size(0, 1600, 7) == 50
    assert job_batch_size(0, 100_000, 7) == 512
    assert job_batch_size(0, 600, 30) == 120  # never below 4 rows per feature
    assert job_batch_size(256, 1600, 7) == 256  # an explicit size is kept ...
    assert job_batch_size(256, 1600, 100) == 400  # ... unless below the floor


def test_stage_order_is_enforced() -> None:
    check_stage("Forward", Stage.ENCRYPTED)
    with pytest.raises(FailedPrecondition, match="out of order"):
        check_stage("Backward", Stage.ENCRYPTED)
    with pytest.raises(FailedPrecondition, match="closed"):
        check_stage("Forward", Stage.CLOSED)


def test_adam_at_each_party_equals_adam_on_the_whole_vector() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=6)
    full = Optimizer.create("adam", 0.1, 0.05, 0.01, np.ones(6))
    left = Optimizer.create("adam", 0.1, 0.05, 0.01, np.ones(2))
    right = Optimizer.create("adam", 0.1, 0.05, 0.01, np.ones(4))
    wl, wr = w[:2].copy(), w[2:].copy()
    for step in range(5):
        g = rng.normal(size=6)
        w = full.step(w, g, step)
        wl, wr = left.step(wl, g[:2], step), right.step(wr, g[2:], step)
    assert np.allclose(w, np.r_[wl, wr], atol=0)


# --- bad input in a party's CSV ----------------------------------------------------------


def test_duplicate_ids_are_refused_without_quoting_them(tmp_path: Path) -> None:
    p = tmp_path / "tax.csv"
    p.write_text("ID,x\n91AAA,1\n91BBB,2\n91AAA,3\n")
    with pytest.raises(InvalidArgument, match="1 duplicate ID") as err:
        read_party_csv(p, id_column="ID")
    assert "91AAA" not in err.value.message and "line 4" in err.value.message


def test_labels_must_be_binary(tmp_path: Path) -> None:
    p = tmp_path / "labels.csv"
    p.write_text("ID,y\na,0\nb,1\nc,2\n")
    with pytest.raises(InvalidArgument, match=r"line 4: label '2'.*not 0 or 1"):
        read_party_csv(p, id_column="ID", label_column="y")
    p.write_text("ID,y\na,0\nb,0\n")
    with pytest.raises(InvalidArgument, match="both 0 and 1"):
        read_party_csv(p, id_column="ID", label_column="y")


def test_numeric_columns_are_read_as_arrays(tmp_path: Path) -> None:
    p = tmp_path / "p.csv"
    p.write_text("ID,a,b\nx,1.5,A\ny,,B\nz,NA,C\n")
    t = read_party_csv(p, id_column="ID")
    a = t.columns["a"]
    assert isinstance(a, np.ndarray) and a[0] == 1.5 and np.isnan(a[1:]).all()
    assert t.columns["b"] == ["A", "B", "C"]


# --- the feature party refuses out-of-order and replayed steps ---------------------------


def test_feature_party_refuses_replayed_forward(tmp_path: Path, keys: PaillierKeys) -> None:
    from provider_node.training import FeatureParty
    from veil.v1 import training_pb2 as pb

    paths = init_dev_pki(tmp_path / "certs", [("provider", "tax")])["tax"]
    tls = TLSConfig(ca=paths.ca, cert=paths.cert, key=paths.key)
    csv = tmp_path / "tax.csv"
    csv.write_text("ID,x\n" + "".join(f"{i},{i % 7}\n" for i in range(200)))
    party = FeatureParty(
        "tax", lambda: read_party_csv(csv, id_column="ID"), tls, tmp_path / "state"
    )
    with pytest.raises(FailedPrecondition, match="out of order"):
        party.forward(pb.ForwardRequest(epoch=0, batch=0, rows=b"\0\0\0\0"))
    with pytest.raises(FailedPrecondition, match="at least two feature parties"):
        party.open_job(
            pb.OpenJobRequest(
                job_id="ab" * 8,
                run_id="cd" * 8,
                party="tax",
                feature_parties=["tax"],
                config_json=JobConfig().to_json(),
                resume_epoch=-1,
            )
        )
