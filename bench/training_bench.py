#!/usr/bin/env python3
"""Joint training benchmark: seconds per epoch and to convergence, through real processes.

Shapes (synthetic values, labels from a logistic model over a few of the features):

* ``fate``  — FATE's hetero-LR benchmark shape: 100,000 rows; 30 features at the label
  holder and 300 at one provider.  One feature party means the secure sum of partial
  scores has one term, so this shape runs with ``allow_single_feature_party`` (the
  platform then learns that provider's per-row partial scores, as FATE's guest learns a
  host's scores at validation); the cryptographic work is the same as with more parties.
* ``three`` — 3 providers × 10 features on 30,000 rows, labels only at the label party.

Each shape runs ``veil train``'s machinery (one process per feature party, mTLS on
loopback, 2048-bit Paillier) without federated binning (its cost is measured separately,
``--binning``), then fits scikit-learn's ``LogisticRegression`` centrally on the same
encoded features and split for the AUC parity.  Prints a table; ``--json`` for machines.

    python bench/training_bench.py [--shape fate|three|all] [--rows N] [--epochs E]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from veil.training.config import JobConfig, split_roles  # noqa: E402
from veil.training.encoding import design_matrix, fit_encoders  # noqa: E402
from veil.training.table import read_party_csv  # noqa: E402
from veil_cli.training_run import PartySpec, TrainingRun, train_files  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    rows: int
    label_features: int
    providers: tuple[int, ...]
    batch_size: int


SHAPES = {
    "fate": Shape("fate", 100_000, 30, (300,), 4096),
    "three": Shape("three", 30_000, 0, (10, 10, 10), 2048),
}


def generate(shape: Shape, out: Path, seed: int = 7) -> tuple[Path, list[PartySpec]]:
    """Write the shape's CSVs (cached in ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    labels = out / "labels.csv"
    specs = [PartySpec(f"p{i}", out / f"p{i}.csv") for i in range(len(shape.providers))]
    if labels.exists() and all(out.joinpath(f"{s.name}.csv").exists() for s in specs):
        return labels, specs
    rng = np.random.default_rng(seed)
    ids = np.arange(1_000_000, 1_000_000 + shape.rows)
    blocks = [rng.normal(size=(shape.rows, shape.label_features))] + [
        rng.normal(size=(shape.rows, d)) for d in shape.providers
    ]
    z = np.full(shape.rows, -1.5)
    for block in blocks:
        if block.shape[1]:
            k = min(8, block.shape[1])
            z += block[:, :k] @ rng.normal(scale=0.5, size=k)
    y = (rng.random(shape.rows) < 1 / (1 + np.exp(-z))).astype(np.int64)

    def write(path: Path, header: list[str], cols: list[np.ndarray], fmts: list[str]) -> None:
        with path.open("w") as fh:
            fh.write(",".join(header) + "\n")
            data = np.column_stack(cols)
            np.savetxt(fh, data, fmt=fmts, delimiter=",")

    lf = blocks[0]
    write(
        labels,
        ["ID", "y", *(f"g{j}" for j in range(lf.shape[1]))],
        [ids, y, lf],
        ["%d", "%d", *(["%.4f"] * lf.shape[1])],
    )
    for spec, block in zip(specs, blocks[1:], strict=True):
        write(
            out / f"{spec.name}.csv",
            ["ID", *(f"{spec.name}_x{j}" for j in range(block.shape[1]))],
            [ids, block],
            ["%d", *(["%.4f"] * block.shape[1])],
        )
    return labels, specs


def central_auc(
    labels: Path, specs: list[PartySpec], config: JobConfig
) -> tuple[float, float, float]:
    """scikit-learn on the same encoded features and split: test AUC fitted on the same
    training rows, test AUC fitted on training + validation rows, fit seconds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    tables = [read_party_csv(labels, id_column="ID", label_column="y")] + [
        read_party_csv(s.csv or Path(f"{s.name}.csv"), id_column="ID") for s in specs
    ]
    ids = sorted(set.intersection(*(set(t.ids) for t in tables)))
    aligned = []
    for t in tables:
        at = {i: k for k, i in enumerate(t.ids)}
        aligned.append(t.take([at[i] for i in ids]))
    outcomes = aligned[0].labels
    assert outcomes is not None
    y = outcomes.astype(float)
    roles = split_roles(outcomes, config.test_size, config.validation_size, config.seed)
    blocks = []
    for a in aligned:
        encs = fit_encoders(a.columns, np.nonzero(roles == 0)[0], config)
        blocks.append(design_matrix(encs, a.columns, len(ids)))
    x = np.hstack(blocks)
    test = roles == 2
    aucs, seconds = [], 0.0
    for fit in (roles == 0, roles != 2):
        started = time.perf_counter()
        model = LogisticRegression(C=1.0, max_iter=2000).fit(x[fit], y[fit])
        seconds = time.perf_counter() - started
        aucs.append(float(roc_auc_score(y[test], model.decision_function(x[test]))))
    return aucs[0], aucs[1], seconds


def run_shape(shape: Shape, data: Path, epochs: int, binning: bool) -> dict[str, Any]:
    labels, specs = generate(shape, data / shape.name)
    config = JobConfig(
        max_epochs=epochs,
        batch_size=shape.batch_size,
        binning=binning,
        allow_single_feature_party=len(specs) == 1,
    )
    with tempfile.TemporaryDirectory(prefix="veil-train-bench-") as tmp:
        run = TrainingRun(Path(tmp), specs, "ID")
        started = time.perf_counter()
        result = asyncio.run(
            train_files(
                run,
                labels,
                "y",
                config,
                progress=_echo,
            )
        )
        wall = time.perf_counter() - started
    history = result.history
    per_epoch = [h.seconds for h in history]
    best = result.best_epoch
    sk_auc, sk_all, sk_seconds = central_auc(labels, specs, config)
    t = result.timings
    return {
        "shape": shape.name,
        "rows": shape.rows,
        "train_rows": result.counts["train"],
        "label_features": shape.label_features,
        "providers": list(shape.providers),
        "batch_size": result.batch_size,
        "binning": binning,
        "psi_s": round(t.get("BlindIds", 0) + t.get("EvaluateOprf", 0) + t.get("AlignRows", 0), 2),
        "binning_s": round(t.get("BinStatistics", 0), 2),
        "encrypt_features_s": round(t.get("EncryptFeatures", 0), 2),
        "setup_s": round(result.setup_seconds, 2),
        "epoch_s_mean": round(float(np.mean(per_epoch)), 2),
        "epoch_s_max": round(float(np.max(per_epoch)), 2),
        "forward_s": round(t.get("Forward", 0) / len(history), 2),
        "backward_s": round(t.get("Backward", 0) / len(history), 2),
        "epochs": result.epochs,
        "best_epoch": best,
        "stopped_early": result.stopped_early,
        "to_convergence_s": round(sum(per_epoch[: best + 1]), 2),
        "total_s": round(wall, 2),
        "test_auc": round(result.metrics["test"]["auc"], 4),
        "sklearn_test_auc": round(sk_auc, 4),
        "sklearn_train_val_test_auc": round(sk_all, 4),
        "auc_gap": round(sk_auc - result.metrics["test"]["auc"], 4),
        "sklearn_fit_s": round(sk_seconds, 2),
    }


def _echo(event: str, data: dict[str, Any]) -> None:
    if event == "epoch":
        print(
            f"  epoch {data['epoch']}: {data['seconds']:.2f}s "
            f"val loss {data['validation_loss']:.4f} val AUC {data['validation_auc']:.4f}",
            file=sys.stderr,
            flush=True,
        )
    elif event in ("setup", "aligned"):
        print(f"  {event}: {data}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=(*SHAPES, "all"), default="all")
    parser.add_argument("--rows", type=int, help="override the shape's row count")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--binning", action="store_true", help="include federated WOE/IV")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "veil-train-bench"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = list(SHAPES) if args.shape == "all" else [args.shape]
    rows = []
    for name in names:
        shape = SHAPES[name]
        if args.rows:
            shape = Shape(shape.name + f"-{args.rows}", args.rows, *list(vars(shape).values())[2:])
        print(f"{shape.name}: {shape.rows} rows ...", file=sys.stderr, flush=True)
        rows.append(run_shape(shape, Path(args.data), args.epochs, args.binning))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    cols = [
        ("shape", "shape"),
        ("rows", "rows"),
        ("train_rows", "train"),
        ("batch_size", "batch"),
        ("psi_s", "PSI s"),
        ("encrypt_features_s", "Enc(X) s"),
        ("setup_s", "setup s"),
        ("epoch_s_mean", "s/epoch"),
        ("forward_s", "fwd s/ep"),
        ("backward_s", "bwd s/ep"),
        ("best_epoch", "best"),
        ("to_convergence_s", "to conv. s"),
        ("test_auc", "AUC"),
        ("sklearn_test_auc", "sklearn AUC"),
        ("sklearn_train_val_test_auc", "sklearn (train+val) AUC"),
    ]
    print(" | ".join(h for _, h in cols))
    for r in rows:
        print(" | ".join(str(r[k]) for k, _ in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
