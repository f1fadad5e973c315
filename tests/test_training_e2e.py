"""Joint training end to end: real party processes, mTLS on loopback, the CLI.

Covers: ``veil train`` (progress, JSON summary, model, report), quality parity with
scikit-learn on the same encoded features and split (synthetic data, scikit-learn's
breast-cancer set split across two parties, the generated population), the model in the
scoring registry's format, bad input (mismatched IDs, constant / all-missing columns,
duplicate IDs, non-binary labels), a party that disconnects mid-training and the resumed
job, and a caller that is not the platform.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from veil.certs import init_dev_pki
from veil.config import TLSConfig
from veil.errors import Unavailable
from veil.tls import PeerIdentity, secure_channel
from veil.training.config import ROLE_TEST, JobConfig, split_roles
from veil.training.encoding import design_matrix, fit_encoders
from veil.training.model import score_document, to_veil_model
from veil.training.table import PartyTable, read_party_csv
from veil.v1 import training_pb2 as pb
from veil.v1 import training_pb2_grpc
from veil_cli.commands.train import document
from veil_cli.training_run import PartySpec, TrainingRun, train_files

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(240)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """2,000 enterprises: labels + one own feature at the label party, two providers.

    Party ``a`` lacks every 50th enterprise, party ``b`` holds one the others do not;
    ``a2`` has missing values, ``b`` a constant and an all-missing column.
    """
    d = tmp_path_factory.mktemp("train-data")
    rng = np.random.default_rng(1)
    n = 2000
    x = rng.normal(size=(n, 6))
    cat = rng.choice(["A", "B", "C", "D"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    z = -1 + x @ np.array([1, -0.5, 0.8, 0.3, -1.2, 0.6]) + np.where(cat == "D", 1.0, 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    ids = [f"E{i:06d}" for i in range(n)]
    return {
        "labels": write_csv(
            d / "labels.csv",
            ["ID", "y", "own1"],
            [[ids[i], y[i], f"{x[i, 0]:.4f}"] for i in range(n)],
        ),
        "a": write_csv(
            d / "a.csv",
            ["ID", "a1", "a2", "grade"],
            [
                [ids[i], f"{x[i, 1]:.4f}", "" if i % 17 == 0 else f"{x[i, 2]:.4f}", cat[i]]
                for i in range(n)
                if i % 50
            ],
        ),
        "b": write_csv(
            d / "b.csv",
            ["ID", "b1", "b2", "b3", "const", "empty"],
            [
                [ids[i], f"{x[i, 3]:.4f}", f"{x[i, 4]:.4f}", f"{x[i, 5]:.4f}", "7", ""]
                for i in range(n)
            ]
            + [["X999999", "1", "2", "3", "7", ""]],
        ),
    }


def central_auc(
    tables: Mapping[str, PartyTable], label_party: str, config: JobConfig
) -> tuple[float, list[str], np.ndarray, float]:
    """scikit-learn, trained centrally on the same encoded features and split.

    Returns its test AUC when fitted on the same training rows as the federated gradient,
    the test IDs and labels, and its test AUC when fitted on training *and* validation
    rows (everything but test: more data than the federated model, which holds the
    validation rows out for early stopping).
    """
    ids = sorted(set.intersection(*(set(t.ids) for t in tables.values())))
    aligned = {}
    for name, t in tables.items():
        at = {i: k for k, i in enumerate(t.ids)}
        aligned[name] = t.take([at[i] for i in ids])
    labels = aligned[label_party].labels
    assert labels is not None
    y = labels.astype(float)
    roles = split_roles(labels, config.test_size, config.validation_size, config.seed)
    blocks = []
    for a in aligned.values():
        encs = fit_encoders(a.columns, np.nonzero(roles == 0)[0], config)
        blocks.append(design_matrix(encs, a.columns, len(ids)))
    x = np.hstack(blocks)
    test = roles == ROLE_TEST
    aucs = []
    for fit in (roles == 0, roles != ROLE_TEST):
        model = LogisticRegression(C=1.0, max_iter=5000).fit(x[fit], y[fit])
        aucs.append(float(roc_auc_score(y[test], model.decision_function(x[test]))))
    test_ids = [i for i, r in zip(ids, roles, strict=True) if r == ROLE_TEST]
    return aucs[0], test_ids, y[test], aucs[1]


def veil(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "veil_cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )


# --- the CLI ------------------------------------------------------------------------------


def test_veil_train_cli_end_to_end(synthetic: dict[str, Path], tmp_path: Path) -> None:
    """The command exactly as documented, with default settings (plus --work-dir, to
    inspect everything the processes wrote)."""
    out = tmp_path / "model.json"
    work = tmp_path / "work"
    proc = veil(
        "train",
        "--labels", str(synthetic["labels"]),
        "--party", f"a={synthetic['a']}",
        "--party", f"b={synthetic['b']}",
        "--id-column", "ID",
        "--label-column", "y",
        "--test-size", "0.3",
        "--seed", "0",
        "--out", str(out),
        "--work-dir", str(work),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "epoch 1/30" in proc.stderr  # progress per epoch
    # mismatched IDs: trained on the intersection, counts reported
    rows = summary["rows"]
    assert rows["label_party"] == 2000 and rows["party:a"] == 1960 and rows["party:b"] == 2001
    assert rows["intersection"] == 1960 == rows["train"] + rows["validation"] + rows["test"]
    # ... and the IDs outside it (X999999 only at b; every 50th ID not at a) appear in
    # nothing any process printed or wrote: logs, checkpoints, job state, model, report
    outside = ["X999999", *(f"E{i:06d}" for i in range(0, 2000, 50))]
    written = [proc.stdout, proc.stderr]
    written += [f.read_text(errors="replace") for f in tmp_path.rglob("*") if f.is_file()]
    assert len(written) > 10
    assert not [i for i in outside if any(i in text for text in written)]
    # default settings: about 32 mini-batches per epoch, converged before the last epoch
    doc = json.loads(out.read_text())
    assert doc["training"]["batch_size"] == rows["train"] // 32
    assert summary["stopped_early"] and summary["epochs"] < 30
    history = doc["training"]["history"]  # early stopping: 3 epochs without improvement
    assert [h["improved"] for h in history[-3:]] == [False] * 3 and history[0]["improved"]
    assert summary["best_epoch"] == max(h["epoch"] for h in history if h["improved"])
    for h in history:  # the learning-rate schedule 0.02 / (1 + 0.2·epoch)
        assert h["learning_rate"] == pytest.approx(0.02 / (1 + 0.2 * h["epoch"]))
    assert summary["features"] == {"platform": 1, "a": 7, "b": 3}
    status = {(r["party"], r["column"]): r["status"] for r in doc["iv"]}
    assert status[("b", "const")] == "constant" and status[("b", "empty")] == "all_missing"
    assert all(r["iv"] is not None for r in doc["iv"] if r["status"] == "ok")
    report = Path(summary["report"])
    for name in ("report.md", "roc.png", "ks.png", "iv.png", "training.png"):
        assert (report.parent / name).stat().st_size > 0
    assert (report.parent / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()  # the binning table per selected column, empty bins at WOE 0
    assert "**b.b1** (IV " in text and "| (missing) | 0 | 0 | — | +0.000 |" in text
    # the exported model reproduces the federated test metrics in the clear ...
    config = JobConfig.from_json(json.dumps(doc["training"]["config"]))
    tables = {
        "platform": read_party_csv(synthetic["labels"], id_column="ID", label_column="y"),
        "a": read_party_csv(synthetic["a"], id_column="ID"),
        "b": read_party_csv(synthetic["b"], id_column="ID"),
    }
    sk_auc, test_ids, y_test, sk_all = central_auc(tables, "platform", config)
    logits = score_document(doc, tables, test_ids)
    assert roc_auc_score(y_test, logits) == pytest.approx(summary["test_auc"], abs=1e-6)
    # ... and matches scikit-learn trained centrally on the same features and split
    assert abs(summary["test_auc"] - sk_auc) <= 0.01, (summary["test_auc"], sk_auc)
    assert abs(summary["test_auc"] - sk_all) <= 0.01, (summary["test_auc"], sk_all)


def test_bad_input_fails_cleanly(synthetic: dict[str, Path], tmp_path: Path) -> None:
    dup = tmp_path / "dup.csv"
    dup.write_text(synthetic["b"].read_text() + "E000003,1,2,3,7,\n")
    common = ["--id-column", "ID", "--label-column", "y", "--epochs", "2"]
    proc = veil(
        "train", "--labels", str(synthetic["labels"]), "--party", f"a={synthetic['a']}",
        "--party", f"tax={dup}", *common, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "feature party 'tax' did not start" in proc.stderr
    assert "1 duplicate ID in column 'ID'" in proc.stderr and "E000003" not in proc.stderr
    labels = tmp_path / "labels.csv"
    text = synthetic["labels"].read_text()
    labels.write_text(re.sub(r"\nE000005,[01],", "\nE000005,yes,", text, count=1))
    proc = veil(
        "train", "--labels", str(labels), "--party", f"a={synthetic['a']}",
        "--party", f"b={synthetic['b']}", *common, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1 and "label 'yes'" in proc.stderr and "not 0 or 1" in proc.stderr
    proc = veil(
        "train", "--labels", str(synthetic["labels"]), "--party", f"a={synthetic['a']}",
        *common, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1 and "at least two feature parties" in proc.stderr


# --- disconnect and resume ----------------------------------------------------------------


def _train(
    workdir: Path,
    synthetic: dict[str, Path],
    config: JobConfig,
    *,
    resume: bool = False,
    kill_after_epoch: int | None = None,
) -> Any:
    run = TrainingRun(
        workdir, [PartySpec("a", synthetic["a"]), PartySpec("b", synthetic["b"])], "ID"
    )

    def progress(event: str, data: dict[str, Any]) -> None:
        if event == "epoch" and data["epoch"] == kill_after_epoch:
            run.kill("b")

    return asyncio.run(
        train_files(run, synthetic["labels"], "y", config, resume=resume, progress=progress)
    )


def test_disconnect_fails_naming_the_party_and_resumes(
    synthetic: dict[str, Path], tmp_path: Path
) -> None:
    config = JobConfig(max_epochs=4, patience=10, batch_size=512, binning=False)
    reference = _train(tmp_path / "reference", synthetic, config)
    with pytest.raises(
        Unavailable,
        match=r"feature party 'b' disconnected during Forward \(epoch 3, batch 1\); "
        r"it can resume after epoch 2",
    ):
        _train(tmp_path / "job", synthetic, config, kill_after_epoch=1)
    resumed = _train(tmp_path / "job", synthetic, config, resume=True)
    assert resumed.resumed_from == 1 and resumed.epochs == 4
    # resuming from the checkpoint gives exactly the uninterrupted model
    assert resumed.intercept == reference.intercept
    for name in ("platform", "a", "b"):
        got = [c["weights"] for c in resumed.parts[name]["columns"]]
        want = [c["weights"] for c in reference.parts[name]["columns"]]
        assert got == want, name
    assert resumed.metrics["test"]["auc"] == reference.metrics["test"]["auc"]


def test_only_the_platform_may_call_a_party(synthetic: dict[str, Path], tmp_path: Path) -> None:
    run = TrainingRun(
        tmp_path, [PartySpec("a", synthetic["a"]), PartySpec("b", synthetic["b"])], "ID"
    )
    run.prepare()
    bank = init_dev_pki(run.certs, [("institution", "bank")])["bank"]
    run.start()
    try:
        asyncio.run(run.wait_healthy())

        async def call(tls: TLSConfig) -> grpc.StatusCode:
            async with secure_channel(run.address("a"), tls, PeerIdentity("provider", "a")) as ch:
                stub = training_pb2_grpc.TrainingServiceStub(ch)
                try:
                    await stub.Backward(pb.BackwardRequest(), timeout=5)
                except grpc.aio.AioRpcError as err:
                    return err.code()
            return grpc.StatusCode.OK

        as_bank = TLSConfig(ca=bank.ca, cert=bank.cert, key=bank.key)
        assert asyncio.run(call(as_bank)) == grpc.StatusCode.PERMISSION_DENIED
        # the platform itself is admitted, but a step out of order is refused
        assert asyncio.run(call(run.tls("platform"))) == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        run.stop()


# --- quality parity on public and generated data -------------------------------------------


def test_parity_breast_cancer_split_across_two_parties(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = data.data, data.target
    ids = [f"P{i:04d}" for i in range(len(y))]
    names = [n.replace(" ", "_") for n in data.feature_names]
    labels = write_csv(
        tmp_path / "labels.csv", ["ID", "y"], [[ids[i], int(y[i])] for i in range(len(y))]
    )
    a = write_csv(
        tmp_path / "a.csv", ["ID", *names[:15]], [[ids[i], *x[i, :15]] for i in range(len(y))]
    )
    b = write_csv(
        tmp_path / "b.csv", ["ID", *names[15:]], [[ids[i], *x[i, 15:]] for i in range(len(y))]
    )
    config = JobConfig(batch_size=64, max_epochs=60, patience=5, learning_rate=0.05)
    run = TrainingRun(tmp_path / "run", [PartySpec("a", a), PartySpec("b", b)], "ID")
    result = asyncio.run(train_files(run, labels, "y", config))
    tables = {
        "platform": read_party_csv(labels, id_column="ID", label_column="y"),
        "a": read_party_csv(a, id_column="ID"),
        "b": read_party_csv(b, id_column="ID"),
    }
    sk_auc, _, _, sk_all = central_auc(tables, "platform", config)
    assert result.features == {"platform": 0, "a": 15, "b": 15}
    test_auc = result.metrics["test"]["auc"]
    assert abs(test_auc - sk_auc) <= 0.01 and abs(test_auc - sk_all) <= 0.01, (
        test_auc,
        sk_auc,
        sk_all,
    )


POPULATION_UNITS = ("samr", "social_insurance", "tax", "utilities")


def export_population(data_dir: Path, out: Path) -> dict[str, Any]:
    """Each provider's CSV of the demo model's features (as its own node would compute
    them), for the enterprises it holds; column definitions for ``veil-model/1``."""
    from platform_node.models.demo import TEMPLATE, feature_table, read_labels, store_for
    from veil.catalog import load_catalog

    catalog = load_catalog()
    labels = read_labels(data_dir / "labels.csv")
    files: dict[str, Any] = {"labels": write_csv(
        out / "labels.csv", ["uscc", "default"], sorted(labels.items())
    )}  # fmt: skip
    definitions: dict[str, dict[str, dict[str, Any]]] = {}
    for unit in POPULATION_UNITS:
        store = store_for(data_dir, unit, catalog)
        try:
            held = [u for u in sorted(labels) if store.has_enterprise(u)]
        finally:
            store.close()
        templates = [t for t in TEMPLATE if t.provider == unit]
        values = feature_table(data_dir, templates, held, catalog)
        rows = [
            [u, *("" if values[t.name][i] is None else values[t.name][i] for t in templates)]
            for i, u in enumerate(held)
        ]
        files[unit] = write_csv(out / f"{unit}.csv", ["uscc", *(t.name for t in templates)], rows)
        definitions[unit] = {t.name: _definition(t) for t in templates}
    files["definitions"] = definitions
    return files


def _definition(t: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"name": t.name, "provider": t.provider, "field": t.field}
    if t.aggregate:
        d["aggregate"] = t.aggregate
    if t.divide_by:
        d["divide_by"] = t.divide_by
    transform = {**({"log": True} if t.log else {}), **({"clip": list(t.clip)} if t.clip else {})}
    if transform:
        d["transform"] = transform
    return d


def test_parity_on_the_generated_population_and_scoring_format(tmp_path: Path) -> None:
    from platform_node.models.demo import enterprise_rows
    from veil.scoring import parse_model
    from veil.scoring.plain import plain_logit
    from veil_cli.commands.data import generate_to_dir

    data = tmp_path / "population"
    generate_to_dir(data, enterprises=3000, seed=5, units=POPULATION_UNITS, progress=False)
    files = export_population(data, tmp_path)
    config = JobConfig(batch_size=256, max_epochs=30, patience=5)
    specs = [PartySpec(u, files[u]) for u in POPULATION_UNITS]
    run = TrainingRun(tmp_path / "run", specs, "uscc", uscc=True)
    result = asyncio.run(train_files(run, files["labels"], "default", config))
    tables = {"platform": read_party_csv(files["labels"], id_column="uscc", label_column="default")}
    tables |= {u: read_party_csv(files[u], id_column="uscc") for u in POPULATION_UNITS}
    sk_auc, test_ids, _, sk_all = central_auc(tables, "platform", config)
    test_auc = result.metrics["test"]["auc"]
    assert test_auc > 0.75
    # Same training rows: parity.  (scikit-learn on training + validation rows sees 25 %
    # more data; with ~55 defaults in the test split that moves the AUC by about 0.01 on
    # its own, so it is reported, not asserted, here.)
    assert abs(test_auc - sk_auc) <= 0.01, (test_auc, sk_auc, sk_all)
    # the model in the scoring registry's format evaluates like the trained model
    for part in result.parts.values():
        part["party"] = part["party"].replace("-", "_")
    result.parts = {k.replace("-", "_"): v for k, v in result.parts.items()}
    doc = document(result)
    model = to_veil_model(doc, files["definitions"], model_id="sme-joint")
    spec = parse_model(model)
    assert spec.providers == tuple(sorted(POPULATION_UNITS))
    fields = {u: spec.fields_of(u) for u in POPULATION_UNITS}
    trained = score_document(doc, tables, test_ids[:25])
    for uscc, z in zip(test_ids[:25], trained, strict=True):
        rows = enterprise_rows(data, POPULATION_UNITS, fields, uscc)
        assert plain_logit(spec, rows) == pytest.approx(float(z), abs=1e-6)


def test_woe_encoding_with_iv_selection(synthetic: dict[str, Path], tmp_path: Path) -> None:
    # party a with a few missing values of a1: a missing bin far below 2 % of the rows
    lines = synthetic["a"].read_text().splitlines()
    for k in range(1, 7):
        ident, _a1, *rest = lines[k].split(",")
        lines[k] = ",".join([ident, "", *rest])
    party_a = tmp_path / "a.csv"
    party_a.write_text("\n".join(lines) + "\n")
    config = JobConfig(encoding="woe", iv_threshold=0.05, max_epochs=15, batch_size=256)
    run = TrainingRun(tmp_path, [PartySpec("a", party_a), PartySpec("b", synthetic["b"])], "ID")
    result = asyncio.run(train_files(run, synthetic["labels"], "y", config))
    by_party: dict[str, int] = {}
    for row in result.iv_table:
        if row["status"] in ("constant", "all_missing"):
            assert not row["selected"] and row["iv"] is None
            continue
        assert row["selected"] == (row["iv"] >= 0.05)  # every usable column was binned
        by_party[row["party"]] = by_party.get(row["party"], 0) + int(row["selected"])
    assert 0 < sum(by_party.values()) < 7  # some, not all, columns pass the threshold
    assert result.features == by_party  # WOE: one encoded feature per selected column
    for part in result.parts.values():
        for col in part["columns"]:
            assert col["status"] != "ok" or (col["encoding"] == "woe" and len(col["woe"]) > 1)
    # a bin below the minimum bin size gets WOE 0 before the table goes to its feature
    # party (its WOE would give away its few rows' labels); the IV table keeps the truth
    min_rows = math.ceil(config.min_bin_fraction * result.counts["train"])
    for row in result.iv_table:
        if not row["selected"]:
            continue
        col = next(c for c in result.parts[row["party"]]["columns"] if c["name"] == row["column"])
        for n, shown, true in zip(row["counts"], col["woe"], row["woe"], strict=True):
            assert shown == (0.0 if n < min_rows else pytest.approx(true))
    a1 = next(r for r in result.iv_table if r["column"] == "a1")
    assert a1["selected"] and 0 < a1["counts"][-1] < min_rows and a1["woe"][-1] != 0
    doc = document(result)
    tables = {
        "platform": read_party_csv(synthetic["labels"], id_column="ID", label_column="y"),
        "a": read_party_csv(party_a, id_column="ID"),
        "b": read_party_csv(synthetic["b"], id_column="ID"),
    }
    _, test_ids, y_test, _ = central_auc(tables, "platform", replace(config, encoding="standard"))
    z = score_document(doc, tables, test_ids)
    assert roc_auc_score(y_test, z) == pytest.approx(result.metrics["test"]["auc"], abs=1e-6)
    assert result.metrics["test"]["auc"] > 0.8
