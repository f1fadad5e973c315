"""Binning, weight of evidence and information value: the scorecard maths.

For a feature cut into bins ``b`` (the last bin of every feature holds its missing
values), with ``bad_b`` defaults and ``good_b`` non-defaults among the ``n_b`` training
rows of the bin, and ``B = Σ bad_b``, ``G = Σ good_b``::

    WOE_b = ln( ((bad_b + ½) / B) / ((good_b + ½) / G) )
    IV    = Σ_b ( (bad_b + ½)/B − (good_b + ½)/G ) · WOE_b

(the ½ is Laplace smoothing, so a pure bin has a finite WOE).  A bin with no training rows
(often the missing-value bin) has no evidence either way: its WOE is 0, the value the WOE
encoder gives it too, not the smoothed ``ln(G/B)`` that would mark it as risky or safe.
Rule of thumb used by credit-risk teams for IV: < 0.02 useless, 0.02–0.1 weak, 0.1–0.3 medium,
0.3–0.5 strong, > 0.5 suspicious (check for leakage).

In the federated protocol only the label party knows ``bad_b``: it learns the per-bin
counts by decrypting sums the feature party computed over its encrypted labels
(``docs/training.md``, "Binning"); this module is the arithmetic both ends share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

IV_BANDS = ((0.02, "useless"), (0.1, "weak"), (0.3, "medium"), (0.5, "strong"))


def iv_strength(iv: float) -> str:
    for bound, name in IV_BANDS:
        if iv < bound:
            return name
    return "suspicious"


def quantile_edges(values: F64, max_bins: int, min_count: int) -> list[float]:
    """Interior bin edges of the non-missing ``values``: at most ``max_bins`` quantile bins,
    merged until every bin holds at least ``min_count`` values.

    Bins are ``[e_{k−1}, e_k)`` with open ends (``bisect_right``), as ``veil-model/1``
    reads them.  A variable with few distinct values gets one bin per value.
    """
    v = values[~np.isnan(values)]
    if v.size == 0:
        return []
    qs = np.quantile(v, np.linspace(0.0, 1.0, max_bins + 1)[1:-1], method="lower")
    edges = sorted({float(q) for q in qs if float(q) > float(v.min())})
    distinct = np.unique(v)
    if distinct.size <= max_bins:
        edges = [float(x) for x in distinct[1:]]
    # merge bins that are too small, smallest first
    while edges:
        counts = np.bincount(
            np.searchsorted(np.asarray(edges), v, side="right"), minlength=len(edges) + 1
        )
        small = int(np.argmin(counts))
        if counts[small] >= min_count:
            break
        # remove the edge between the small bin and its smaller neighbour
        if small == 0:
            drop = 0
        elif small == len(edges):
            drop = len(edges) - 1
        else:
            drop = small - 1 if counts[small - 1] <= counts[small + 1] else small
        del edges[drop]
    return edges


def numeric_bins(values: F64, edges: Sequence[float]) -> I64:
    """Bin index per value; missing (NaN) values get bin ``len(edges) + 1``."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), np.nan_to_num(values), side="right")
    return np.where(np.isnan(values), len(edges) + 1, idx).astype(np.int64)


@dataclass(frozen=True)
class BinStats:
    """Counts of one feature's bins (the last bin: missing values)."""

    counts: tuple[int, ...]
    bads: tuple[int, ...]

    @property
    def goods(self) -> tuple[int, ...]:
        return tuple(n - b for n, b in zip(self.counts, self.bads, strict=True))

    def woe_iv(self) -> tuple[list[float], float]:
        return woe_iv(self.counts, self.bads)


def woe_iv(counts: Sequence[int], bads: Sequence[int]) -> tuple[list[float], float]:
    """WOE per bin and the feature's IV (see the module docstring)."""
    bad_total = float(sum(bads))
    good_total = float(sum(counts) - sum(bads))
    if bad_total <= 0 or good_total <= 0:
        return [0.0] * len(counts), 0.0
    woe: list[float] = []
    iv = 0.0
    for n, b in zip(counts, bads, strict=True):
        if n < 0 or b < 0 or b > n:
            raise ValueError("bin counts are inconsistent")
        if n == 0:
            woe.append(0.0)
            continue
        pb = (b + 0.5) / bad_total
        pg = (n - b + 0.5) / good_total
        w = math.log(pb / pg)
        woe.append(w)
        iv += (pb - pg) * w
    return woe, iv


def min_bin_rows(min_bin_fraction: float, train_rows: int) -> int:
    """The fewest training rows a bin needs for its WOE to be shown to anyone but the
    label party: ``ceil(min_bin_fraction · n_train)`` (quantile bins are cut to hold at
    least this many; category, "other" and missing bins are not cut, so may hold fewer)."""
    return max(1, math.ceil(min_bin_fraction * max(1, train_rows)))


def shareable_woe(woe: Sequence[float], counts: Sequence[int], min_rows: int) -> list[float]:
    """The WOE table a feature party may receive (``--encoding woe``): 0 for every bin with
    fewer than ``min_rows`` training rows.

    The feature party knows which of its rows fall in each bin, and a bin's WOE is a
    function of its default count: the WOE of a bin of one row (a rare category, the odd
    missing value) is that row's label.  A small bin therefore gets the neutral WOE 0
    ("no evidence"), as an empty one does, before the table leaves the label party; the
    label party's IV table keeps the true values.
    """
    return [float(w) if n >= min_rows else 0.0 for w, n in zip(woe, counts, strict=True)]


def bin_counts(bins: I64, n_bins: int, labels: npt.NDArray[np.int8] | None = None) -> BinStats:
    """Plaintext counts (the label party's own features, and tests)."""
    counts = np.bincount(bins, minlength=n_bins)[:n_bins]
    if labels is None:
        bads = np.zeros(n_bins, dtype=np.int64)
    else:
        bads = np.bincount(bins, weights=labels.astype(np.float64), minlength=n_bins)[:n_bins]
    return BinStats(tuple(int(c) for c in counts), tuple(round(float(b)) for b in bads))
