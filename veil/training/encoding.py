"""Per-party column encoders: every party encodes only its own columns, fitted on its
own training rows.

Column types are inferred: a column is *numeric* when every non-missing value parses as
a finite number, otherwise *categorical*.  Missing values are the empty string and
``NA``, ``NaN``, ``null``, ``None``, ``N/A`` (any case).

Two encodings (``JobConfig.encoding``):

``standard``
    numeric → ``(x − mean) / std`` over the training rows, clipped to ``±clip`` standard
    deviations, missing → 0 (the mean) plus a 0/1 *missing indicator* column when the
    training rows have missing values; categorical → one-hot over the categories seen at
    least ``min_category_count`` times in training (at most ``max_categories``, most
    frequent first), rare and unseen categories → all zeros, missing → its own column.
``woe``
    every feature → one column, the weight of evidence of its bin (:mod:`.binning`),
    learnt from the federated bin counts; the last bin holds missing values.  Bins
    empty in training, or holding fewer than ``min_bin_fraction`` of the training rows,
    get WOE 0 (:func:`.binning.shareable_woe`).

A column whose training values are all missing, or that has a single value and no
missing values, carries no information: it is dropped with status ``all_missing`` /
``constant`` (reported, never an error).

Every encoder also defines the *IV bins* of its column (numeric: quantile bins; categorical:
the kept categories, "other"; both: a final missing bin) used for WOE/IV whatever the
encoding.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidArgument
from veil.training.binning import min_bin_rows, numeric_bins, quantile_edges
from veil.training.config import JobConfig
from veil.training.table import MISSING_TOKENS, Column, as_numbers, subset

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

NUMERIC = "numeric"
CATEGORICAL = "categorical"
OK = "ok"
CONSTANT = "constant"
ALL_MISSING = "all_missing"


def is_missing(text: str) -> bool:
    return text.strip().lower() in MISSING_TOKENS


def parse_numeric(raw: Column) -> F64 | None:
    """The column as floats (NaN = missing), or ``None`` if any value is not a number."""
    if isinstance(raw, np.ndarray):
        return raw
    return as_numbers(raw)


def parse_categorical(raw: Column) -> list[str | None]:
    if isinstance(raw, np.ndarray):  # a numeric column read as categories
        return [None if math.isnan(v) else f"{v:g}" for v in raw]
    return [None if is_missing(t) else t.strip() for t in raw]


@dataclass
class ColumnEncoder:
    """How one column becomes model inputs; fitted on training rows only."""

    name: str
    kind: str
    status: str = OK
    encoding: str = "standard"
    clip: float = 8.0
    # numeric
    mean: float = 0.0
    std: float = 1.0
    value_column: bool = True
    missing_indicator: bool = False
    edges: list[float] = field(default_factory=list)
    # categorical
    categories: list[str] = field(default_factory=list)
    missing_column: bool = False
    # WOE (encoding "woe"), one value per IV bin
    woe: list[float] | None = None

    # -- fitting ---------------------------------------------------------------------

    @classmethod
    def fit(cls, name: str, raw_train: Column, config: JobConfig) -> ColumnEncoder:
        numeric = parse_numeric(raw_train)
        min_bin = min_bin_rows(config.min_bin_fraction, len(raw_train))
        if numeric is not None:
            return cls._fit_numeric(name, numeric, config, min_bin)
        return cls._fit_categorical(name, parse_categorical(raw_train), config)

    @classmethod
    def _fit_numeric(cls, name: str, x: F64, config: JobConfig, min_bin: int) -> ColumnEncoder:
        enc = cls(name, NUMERIC, encoding=config.encoding, clip=config.clip)
        present = x[~np.isnan(x)]
        has_missing = present.size < x.size
        if present.size == 0:
            enc.status = ALL_MISSING
            return enc
        distinct = np.unique(present)
        enc.missing_indicator = has_missing
        if distinct.size <= 1:
            if not has_missing:
                enc.status = CONSTANT
                return enc
            enc.value_column = False  # only "missing or not" carries information
        enc.mean = float(present.mean())
        std = float(present.std())
        enc.std = std if std > 0 else 1.0
        enc.edges = quantile_edges(x, config.max_bins, min_bin)
        return enc

    @classmethod
    def _fit_categorical(
        cls, name: str, values: list[str | None], config: JobConfig
    ) -> ColumnEncoder:
        enc = cls(name, CATEGORICAL, encoding=config.encoding, clip=config.clip)
        counts = Counter(v for v in values if v is not None)
        has_missing = any(v is None for v in values)
        if not counts:
            enc.status = ALL_MISSING
            return enc
        if len(counts) == 1 and not has_missing:
            enc.status = CONSTANT
            return enc
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        kept = [c for c, n in ranked if n >= config.min_category_count][: config.max_categories]
        if not kept:
            kept = [ranked[0][0]]
        enc.categories = kept
        enc.missing_column = has_missing
        return enc

    # -- reading values --------------------------------------------------------------

    @property
    def dropped(self) -> bool:
        return self.status != OK

    def parse(self, raw: Column) -> F64 | list[str | None]:
        if self.kind == NUMERIC:
            x = parse_numeric(raw)
            if x is None:
                raise InvalidArgument(
                    f"column {self.name!r}: a value outside the training rows is not a number"
                )
            return x
        return parse_categorical(raw)

    # -- IV bins -----------------------------------------------------------------------

    @property
    def n_bins(self) -> int:
        """Value bins plus the missing bin (categorical: categories, "other", missing)."""
        if self.kind == NUMERIC:
            return len(self.edges) + 2
        return len(self.categories) + 2

    def bins(self, raw: Column) -> I64:
        values = self.parse(raw)
        if self.kind == NUMERIC:
            assert isinstance(values, np.ndarray)
            return numeric_bins(values, self.edges)
        index = {c: i for i, c in enumerate(self.categories)}
        other, missing = len(self.categories), len(self.categories) + 1
        return np.array(
            [missing if v is None else index.get(v, other) for v in values], dtype=np.int64
        )

    def bin_labels(self) -> list[str]:
        """Human-readable bin names for the IV table."""
        if self.kind == NUMERIC:
            bounds = ["-inf", *(f"{e:.6g}" for e in self.edges), "+inf"]
            labels = [f"[{a}, {b})" for a, b in itertools.pairwise(bounds)]
        else:
            labels = [*self.categories, "(other)"]
        return [*labels, "(missing)"]

    # -- encoding ----------------------------------------------------------------------

    @property
    def width(self) -> int:
        if self.dropped:
            return 0
        if self.encoding == "woe":
            return 1
        if self.kind == NUMERIC:
            return int(self.value_column) + int(self.missing_indicator)
        return len(self.categories) + int(self.missing_column)

    def encoded_names(self) -> list[str]:
        if self.dropped:
            return []
        if self.encoding == "woe":
            return [f"{self.name}:woe"]
        if self.kind == NUMERIC:
            return ([self.name] if self.value_column else []) + (
                [f"{self.name}:missing"] if self.missing_indicator else []
            )
        return [f"{self.name}={c}" for c in self.categories] + (
            [f"{self.name}:missing"] if self.missing_column else []
        )

    def set_woe(self, woe: Sequence[float], counts: Sequence[int]) -> None:
        if len(woe) != self.n_bins or len(counts) != self.n_bins:
            raise InvalidArgument(f"column {self.name!r}: WOE table has the wrong number of bins")
        self.woe = [float(w) if n > 0 else 0.0 for w, n in zip(woe, counts, strict=True)]

    def encode(self, raw: Column) -> F64:
        """The encoded block ``(len(raw), width)``."""
        n = len(raw)
        if self.dropped:
            return np.zeros((n, 0))
        if self.encoding == "woe":
            if self.woe is None:
                raise InvalidArgument(f"column {self.name!r}: WOE encoding without a WOE table")
            return np.asarray(self.woe, dtype=np.float64)[self.bins(raw)].reshape(n, 1)
        values = self.parse(raw)
        cols: list[F64] = []
        if self.kind == NUMERIC:
            assert isinstance(values, np.ndarray)
            missing = np.isnan(values)
            if self.value_column:
                z = (np.where(missing, self.mean, values) - self.mean) / self.std
                cols.append(np.clip(z, -self.clip, self.clip))
            if self.missing_indicator:
                cols.append(missing.astype(np.float64))
        else:
            assert isinstance(values, list)
            for c in self.categories:
                cols.append(np.fromiter((v == c for v in values), dtype=np.float64, count=n))
            if self.missing_column:
                cols.append(np.fromiter((v is None for v in values), dtype=np.float64, count=n))
        return np.column_stack(cols) if cols else np.zeros((n, 0))

    # -- wire / model form -----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "encoding": self.encoding,
        }
        if self.dropped:
            return out
        if self.kind == NUMERIC:
            out.update(
                mean=self.mean,
                std=self.std,
                clip=self.clip,
                value_column=self.value_column,
                missing_indicator=self.missing_indicator,
                edges=list(self.edges),
            )
        else:
            out.update(categories=list(self.categories), missing_column=self.missing_column)
        if self.woe is not None:
            out["woe"] = list(self.woe)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ColumnEncoder:
        enc = cls(str(raw["name"]), str(raw["kind"]), status=str(raw["status"]))
        enc.encoding = str(raw.get("encoding", "standard"))
        if enc.dropped:
            return enc
        if enc.kind == NUMERIC:
            enc.mean, enc.std = float(raw["mean"]), float(raw["std"])
            enc.clip = float(raw["clip"])
            enc.value_column = bool(raw["value_column"])
            enc.missing_indicator = bool(raw["missing_indicator"])
            enc.edges = [float(e) for e in raw["edges"]]
        else:
            enc.categories = [str(c) for c in raw["categories"]]
            enc.missing_column = bool(raw["missing_column"])
        if raw.get("woe") is not None:
            enc.woe = [float(w) for w in raw["woe"]]
        return enc


def fit_encoders(
    columns: Mapping[str, Column], train_rows: I64, config: JobConfig
) -> list[ColumnEncoder]:
    """One encoder per column (in column order), fitted on ``train_rows``."""
    return [
        ColumnEncoder.fit(name, subset(raw, train_rows), config) for name, raw in columns.items()
    ]


def design_matrix(
    encoders: Sequence[ColumnEncoder], columns: Mapping[str, Column], n_rows: int
) -> F64:
    """The encoded features (``n_rows × width``) of every row, kept encoders only."""
    blocks = [enc.encode(columns[enc.name]) for enc in encoders if not enc.dropped]
    out = np.hstack(blocks) if blocks else np.zeros((n_rows, 0))
    if out.shape[0] != n_rows:
        raise InvalidArgument("columns and rows disagree in length")
    return out
