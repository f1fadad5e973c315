"""Model quality metrics: AUC, KS, their curves, log-loss.

* **AUC** — the probability that a random default scores above a random non-default,
  computed from ranks (Mann–Whitney U) with ties counted half, equal to scikit-learn's
  ``roc_auc_score``.
* **KS** — ``max_t |TPR(t) − FPR(t)|`` over thresholds ``t`` (the Kolmogorov–Smirnov
  distance between the score distributions of defaults and non-defaults), the figure
  Chinese credit-risk teams quote next to AUC.  Thresholds are the distinct scores, so
  tied scores move together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def _check(scores: F64, labels: npt.NDArray[np.integer] | F64) -> tuple[F64, F64]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError("scores and labels must be 1-D arrays of the same length")
    return s, y


def auc(scores: F64, labels: npt.NDArray[np.integer] | F64) -> float:
    s, y = _check(scores, labels)
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks for ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class Curves:
    """ROC points and the KS curve over the distinct score thresholds (high to low)."""

    thresholds: F64
    tpr: F64
    fpr: F64

    @property
    def ks(self) -> float:
        return float(np.max(np.abs(self.tpr - self.fpr))) if self.tpr.size else float("nan")

    @property
    def ks_threshold(self) -> float:
        return float(self.thresholds[int(np.argmax(np.abs(self.tpr - self.fpr)))])


def curves(scores: F64, labels: npt.NDArray[np.integer] | F64) -> Curves:
    s, y = _check(scores, labels)
    n_pos = float((y == 1).sum())
    n_neg = float((y != 1).sum())
    if n_pos == 0 or n_neg == 0:
        empty = np.zeros(0)
        return Curves(empty, empty, empty)
    order = np.argsort(-s, kind="mergesort")
    s_desc, y_desc = s[order], y[order]
    # last index of each distinct threshold
    last = np.r_[np.nonzero(np.diff(s_desc))[0], len(s_desc) - 1]
    tp = np.cumsum(y_desc == 1)[last]
    fp = np.cumsum(y_desc != 1)[last]
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    thresholds = np.r_[np.inf, s_desc[last]]
    return Curves(thresholds, tpr, fpr)


def ks(scores: F64, labels: npt.NDArray[np.integer] | F64) -> float:
    return curves(scores, labels).ks


def log_loss(logits: F64, labels: npt.NDArray[np.integer] | F64) -> float:
    """Mean binary cross-entropy from logits, computed stably: log(1+e^z) − y·z."""
    z, y = _check(logits, labels)
    if z.size == 0:
        return float("nan")
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def sigmoid(z: F64) -> F64:
    out: F64 = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def summary(logits: F64, labels: npt.NDArray[np.integer] | F64) -> dict[str, float]:
    """AUC, KS, log-loss, row and default counts of one split."""
    y = np.asarray(labels)
    return {
        "auc": auc(logits, y),
        "ks": ks(logits, y),
        "log_loss": log_loss(logits, y),
        "rows": float(len(y)),
        "defaults": float((y == 1).sum()),
    }
