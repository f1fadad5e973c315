"""The model report: PNG plots and a Markdown page a risk officer can read.

``write_report(doc, curves, out_dir)`` writes

* ``roc.png`` — ROC curves (train, validation, test) with their AUC;
* ``ks.png`` — the KS curve of the test split: cumulative share of defaults and of
  non-defaults against the share of enterprises ranked riskiest first, and the maximum gap;
* ``iv.png`` — information value per column (colour by party, the selection threshold);
* ``training.png`` — training and validation log-loss per epoch;
* ``report.md`` — metrics, row counts at each stage of alignment, features per party, the
  IV table with WOE per bin, the epochs, and the settings.

Plots use matplotlib's non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from veil.training.binning import iv_strength
from veil.training.encoding import ColumnEncoder

FIGSIZE = (6.4, 4.8)
DPI = 110


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return "—" if not math.isfinite(x) else f"{x:.{digits}f}"
    return str(x)


def _epoch(index: Any) -> str:
    """An epoch index of the model document (from 0) as people count it (from 1)."""
    return str(int(index) + 1) if isinstance(index, int) and index >= 0 else "—"


def plot_roc(
    curves: Mapping[str, Mapping[str, Sequence[float]]], metrics: Mapping[str, Any], path: Path
) -> None:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for split in ("train", "validation", "test"):
        c = curves.get(split)
        if not c:
            continue
        ax.plot(c["fpr"], c["tpr"], label=f"{split} (AUC {metrics[split]['auc']:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate (defaults caught)", title="ROC")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_ks(curve: Mapping[str, Sequence[float]], ks: float, path: Path) -> None:
    tpr, fpr = list(curve["tpr"]), list(curve["fpr"])
    n = len(tpr)
    share = [i / (n - 1) for i in range(n)] if n > 1 else [0.0]
    gaps = [abs(a - b) for a, b in zip(tpr, fpr, strict=True)]
    at = max(range(n), key=lambda i: gaps[i]) if n else 0
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(share, tpr, label="defaults (cumulative share)")
    ax.plot(share, fpr, label="non-defaults (cumulative share)")
    if n:
        ax.vlines(share[at], fpr[at], tpr[at], colors="red", label=f"KS = {ks:.3f}")
    ax.set(
        xlabel="threshold rank (share of distinct scores, riskiest first)",
        ylabel="cumulative share",
        title="KS curve (test)",
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_iv(rows: Sequence[Mapping[str, Any]], threshold: float, path: Path) -> None:
    items = [r for r in rows if r.get("iv") is not None]
    items.sort(key=lambda r: r["iv"])
    items = items[-40:]
    parties = sorted({r["party"] for r in items})
    colours = {p: f"C{i % 10}" for i, p in enumerate(parties)}
    fig, ax = plt.subplots(figsize=(6.4, max(3.0, 0.25 * len(items) + 1.2)))
    ax.barh(
        [f"{r['party']}.{r['column']}" for r in items],
        [r["iv"] for r in items],
        color=[colours[r["party"]] for r in items],
    )
    if threshold > 0:
        ax.axvline(
            threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold:g}"
        )
        ax.legend(loc="lower right")
    ax.set(xlabel="information value", title="IV per column (federated binning)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_history(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    epochs = [h["epoch"] + 1 for h in history]  # counted from 1, as the progress lines
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train log-loss")
    ax.plot(
        epochs, [h["validation_loss"] for h in history], marker="o", label="validation log-loss"
    )
    ax.set(xlabel="epoch", ylabel="log-loss", title="training")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


MAX_BIN_TABLES = 30


def bin_tables(doc: Mapping[str, Any]) -> list[str]:
    """The scorecard's binning table (分箱表) of each selected column, highest IV first:
    bin (value range or category), rows, defaults, default rate and WOE.  The bin
    definitions come from the exported model (the platform owns it); the counts from
    federated binning."""
    lines: list[str] = []
    rows = [r for r in doc["iv"] if r.get("selected") and r.get("counts") is not None]
    rows.sort(key=lambda r: -(r.get("iv") or 0.0))
    for r in rows[:MAX_BIN_TABLES]:
        part = doc["parties"].get(r["party"], {})
        raw = next((c for c in part.get("columns", []) if c["name"] == r["column"]), None)
        if raw is None:
            continue
        labels = ColumnEncoder.from_json(raw).bin_labels()
        counts, bads, woe = r["counts"], r["bads"], r["woe"]
        if len(labels) != len(counts):
            continue
        if not lines:
            lines += [
                "",
                "### Bins of the selected columns",
                "",
                "WOE = ln(share of defaults / share of non-defaults) in the bin; an empty bin "
                "has WOE 0.",
            ]
            config = doc["training"].get("config", {})
            if config.get("encoding") == "woe":
                share = float(config.get("min_bin_fraction", 0.02))
                lines[-1] += (
                    f" The model encodes every bin holding fewer than {share:.0%} of the "
                    "training rows as WOE 0 (its provider must not see a small bin's WOE)."
                )
        lines += [
            "",
            f"**{r['party']}.{r['column']}** (IV {_fmt(r.get('iv'))})",
            "",
            "| bin | rows | defaults | default rate | WOE |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, n, bad, w in zip(labels, counts, bads, woe, strict=True):
            rate = f"{bad / n:.2%}" if n else "—"
            lines.append(f"| {label} | {n} | {bad} | {rate} | {w:+.3f} |")
    return lines


def write_report(
    doc: Mapping[str, Any],
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    out_dir: Path,
) -> Path:
    """Write the plots and ``report.md`` into ``out_dir``; returns the Markdown's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = doc["metrics"]
    training = doc["training"]
    history = training.get("history", [])
    threshold = float(training.get("config", {}).get("iv_threshold", 0.0))
    plot_roc(curves, metrics, out_dir / "roc.png")
    plot_ks(curves["test"], float(metrics["test"]["ks"]), out_dir / "ks.png")
    has_iv = any(r.get("iv") is not None for r in doc["iv"])
    if has_iv:
        plot_iv(doc["iv"], threshold, out_dir / "iv.png")
    if history:
        plot_history(history, out_dir / "training.png")

    lines = [
        f"# Joint model report — job `{doc['job_id']}`",
        "",
        f"Vertical federated logistic regression; label party **{doc['label_party']}**; "
        f"created {doc['created']}.",
        "",
        "## Metrics",
        "",
        "| split | rows | defaults | AUC | KS | log-loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split in ("train", "validation", "test"):
        m = metrics[split]
        lines.append(
            f"| {split} | {int(m['rows'])} | {int(m['defaults'])} | {_fmt(m['auc'])} | "
            f"{_fmt(m['ks'])} | {_fmt(m['log_loss'])} |"
        )
    lines += ["", "![ROC](roc.png)", "", "![KS](ks.png)", ""]
    rows = training.get("rows", {})
    lines += ["## Rows", "", "| stage | rows |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in rows.items()]
    lines += [
        "",
        "## Features per party",
        "",
        "| party | role | encoded features |",
        "|---|---|---:|",
    ]
    for name, part in doc["parties"].items():
        lines.append(f"| {name} | {part.get('role', '')} | {part['features']} |")
    lines += [
        "",
        "## Information value",
        "",
        "WOE per bin (last bin: missing values) from federated binning: each provider summed "
        "the platform's encrypted labels per bin; only the platform saw the counts.",
        "",
        "| party | column | kind | status | bins | IV | strength | selected | WOE per bin |",
        "|---|---|---|---|---:|---:|---|---|---|",
    ]
    for r in sorted(doc["iv"], key=lambda r: -(r.get("iv") or -1.0)):
        woe = r.get("woe")
        woe_text = " ".join(f"{w:+.2f}" for w in woe) if woe else "—"
        iv = r.get("iv")
        lines.append(
            f"| {r['party']} | {r['column']} | {r['kind']} | {r['status']} | {r['bins']} | "
            f"{_fmt(iv)} | {iv_strength(iv) if iv is not None else '—'} | "
            f"{'yes' if r.get('selected') else 'no'} | {woe_text} |"
        )
    if has_iv:
        lines += ["", "![IV](iv.png)"]
        lines += bin_tables(doc)
    if history:
        lines += [
            "",
            "## Training",
            "",
            "| epoch | learning rate | train log-loss | validation log-loss | validation AUC "
            "| seconds | best |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        for h in history:
            lines.append(
                f"| {h['epoch'] + 1} | {_fmt(h['learning_rate'], 5)} | {_fmt(h['train_loss'])} | "
                f"{_fmt(h['validation_loss'])} | {_fmt(h['validation_auc'])} | "
                f"{_fmt(h['seconds'], 2)} | {'*' if h['improved'] else ''} |"
            )
        lines += ["", "![training](training.png)"]
    lines += [
        "",
        "## Settings",
        "",
        f"Best epoch {_epoch(training.get('best_epoch'))} of {training.get('epochs')} "
        f"({'stopped early' if training.get('stopped_early') else 'ran to the limit'}); "
        f"batch size {training.get('batch_size')}; "
        f"setup {_fmt(training.get('setup_seconds'), 1)} s, "
        f"total {_fmt(training.get('seconds'), 1)} s.",
        "",
        "```",
        *(f"{k} = {v}" for k, v in sorted(training.get("config", {}).items())),
        "```",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
