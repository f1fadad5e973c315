"""Feature values from one enterprise's provider records (see :mod:`veil.scoring.spec`).

The provider node runs exactly this on the rows its own store returns
(``ProviderStore.fetch``: dataset id → rows in the unit's order, field id → value), so
the plaintext reference evaluation and the encrypted protocol read the same numbers.

Order of operations: aggregate the rows → ratio with ``divide_by`` (same row) →
``prefix`` (categorical) → ``log`` → ``clip``.  ``None`` is a missing value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidArgument
from veil.scoring.spec import Aggregate, FeatureSpec

Rows = Mapping[str, Sequence[Mapping[str, Any]]]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        x = float(value)
        return x if math.isfinite(x) else None
    try:  # Decimal, numeric strings from the wire
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _category(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def feature_value(spec: FeatureSpec, rows_by_dataset: Rows) -> float | str | None:
    """The value of one feature for one enterprise; ``None`` when missing."""
    rows = rows_by_dataset.get(spec.dataset, ())
    agg = spec.aggregate
    if agg == Aggregate.COUNT:
        return transform_number(spec, float(len(rows)))
    if agg == Aggregate.EXISTS:
        return transform_number(spec, 1.0 if rows else 0.0)
    if agg in (Aggregate.VALUE, Aggregate.LATEST):
        if not rows:
            return None
        row = rows[-1]  # "value": the one row; "latest": the last in the unit's order
        if spec.categorical:
            text = _category(row.get(spec.field))
            if text is None:
                return None
            return text[: spec.transform.prefix] if spec.transform.prefix else text
        x = _number(row.get(spec.field))
        if x is not None and spec.divide_by:
            den = _number(row.get(spec.divide_by))
            x = None if den is None or den == 0.0 else x / den
    else:
        values = [v for v in (_number(r.get(spec.field)) for r in rows) if v is not None]
        if agg == Aggregate.SUM:
            x = math.fsum(values)
        elif not values:
            x = None
        elif agg == Aggregate.MAX:
            x = max(values)
        elif agg == Aggregate.MIN:
            x = min(values)
        else:
            x = math.fsum(values) / len(values)
    return transform_number(spec, x)


def transform_number(spec: FeatureSpec, x: float | None) -> float | None:
    if x is None:
        return None
    if spec.transform.log:
        if x <= 0.0:
            return None
        x = math.log(x)
    if spec.transform.clip is not None:
        lo, hi = spec.transform.clip
        x = min(hi, max(lo, x))
    return x


# --- batch featurisation (full-coverage evaluation) -----------------------------------------
#
# The same values as :func:`feature_value`, for every enterprise of a store at once, from
# the columns :meth:`veil.store.ProviderStore.read_columns` returns: numpy over the rows
# instead of Python per enterprise.  Exactness: every step is the same IEEE operation as
# the scalar path (last row, ratio, max/min, clip; ``log`` through ``math.log`` itself),
# except sums of three or more values (``sum``, ``mean``), which numpy adds in a
# different order than ``math.fsum``; where such a value lands within 1e-9 of a bin edge
# the enterprise is recomputed by :func:`feature_value`, so no bin ever differs (a linear
# feature differs by an ulp at most).

KEY_LENGTH = 18
KEY_DTYPE = f"S{KEY_LENGTH}"
EDGE_TOLERANCE = 1e-9
F64 = npt.NDArray[np.float64]
Keys = npt.NDArray[np.bytes_]


def key_array(usccs: Sequence[str]) -> Keys:
    """USCCs as fixed-width bytes (18 ASCII characters): 18 bytes each, sortable."""
    bad = InvalidArgument(f"an enterprise key is not {KEY_LENGTH} ASCII characters")
    if not len(usccs):
        return np.empty(0, dtype=KEY_DTYPE)
    try:
        keys = np.array(usccs, dtype=bytes)  # as wide as the longest key
    except UnicodeEncodeError:
        raise bad from None
    if keys.dtype.itemsize != KEY_LENGTH or int(np.char.str_len(keys).min()) != KEY_LENGTH:
        raise bad
    return keys


@dataclass(frozen=True)
class DatasetRows:
    """One dataset's rows column-wise, grouped by enterprise.

    ``keys[g]`` is the g-th enterprise (sorted), its rows are ``starts[g]:ends[g]`` of
    every column, in the unit's own order (what ``latest`` reads)."""

    dataset: str
    keys: Keys
    starts: npt.NDArray[np.intp]
    ends: npt.NDArray[np.intp]
    columns: Mapping[str, npt.NDArray[np.object_]]

    @classmethod
    def of(
        cls,
        dataset: str,
        usccs: Sequence[str] | npt.NDArray[np.str_] | npt.NDArray[np.bytes_],
        columns: Mapping[str, npt.NDArray[np.object_]],
    ) -> DatasetRows:
        """From :meth:`ProviderStore.read_columns` (rows grouped by enterprise, each
        enterprise's rows in the unit's order; ungrouped rows are sorted here, stably).
        Rows whose key is not an 18-character ASCII string are dropped: no batch chunk
        can ask for them."""
        cols = {f: np.asarray(c, dtype=object) for f, c in columns.items()}
        keep: npt.NDArray[np.bool_] | None = None
        if isinstance(usccs, np.ndarray) and usccs.dtype.kind == "S":
            # read_columns' ASCII keys: no round trip through 4-byte text (≈ 1 µs a row)
            if usccs.dtype.itemsize > KEY_LENGTH:  # some key is longer than a USCC
                keep = np.char.str_len(usccs) <= KEY_LENGTH
                keys = usccs[keep].astype(KEY_DTYPE)
            else:
                keys = usccs.astype(KEY_DTYPE, copy=False)
        else:
            strings = np.asarray(usccs, dtype=str)
            if strings.dtype.itemsize > 4 * KEY_LENGTH:  # some key is longer than a USCC
                keep = np.char.str_len(strings) <= KEY_LENGTH
            try:
                keys = (
                    strings[keep].astype(KEY_DTYPE)
                    if keep is not None
                    else strings.astype(KEY_DTYPE)
                )
            except UnicodeEncodeError:
                ascii_ok = np.fromiter((u.isascii() for u in strings.tolist()), bool, len(strings))
                keep = ascii_ok if keep is None else keep & ascii_ok
                keys = strings[keep].astype(KEY_DTYPE)
        if keep is not None:
            cols = {f: c[keep] for f, c in cols.items()}
        n = len(keys)
        if n > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            cols = {f: c[order] for f, c in cols.items()}
        if n:
            starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        else:
            starts = np.empty(0, dtype=np.intp)
        ends = np.append(starts[1:], n).astype(np.intp)
        return cls(dataset, keys[starts], starts.astype(np.intp), ends, cols)

    def rows(self, g: int) -> list[dict[str, Any]]:
        """Group ``g``'s rows as :meth:`ProviderStore.fetch` returns them."""
        s, e = int(self.starts[g]), int(self.ends[g])
        return [{f: c[i] for f, c in self.columns.items()} for i in range(s, e)]


def number_column(values: npt.NDArray[np.object_] | Sequence[Any]) -> F64:
    """:func:`_number` of each value; NaN where it is ``None``."""
    try:
        out = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        cache: dict[Any, float] = {}
        out = np.empty(len(values))
        for i, v in enumerate(values):
            try:
                out[i] = cache[v]
            except KeyError:
                x = _number(v)
                out[i] = cache.setdefault(v, math.nan if x is None else x)
            except TypeError:  # unhashable: no cache
                x = _number(v)
                out[i] = math.nan if x is None else x
    out[~np.isfinite(out)] = math.nan
    return out


def _category_column(spec: FeatureSpec, values: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """:func:`_category` (then the prefix) of each value, once per distinct value."""
    prefix = spec.transform.prefix
    items = values.tolist()
    cache: dict[Any, str | None] = {}
    for v in set(items):
        text = _category(v)
        cache[v] = text[:prefix] if text is not None and prefix else text
    out = np.empty(len(items), dtype=object)
    out[:] = [cache[v] for v in items]
    return out


def transform_column(spec: FeatureSpec, x: F64) -> F64:
    """:func:`transform_number` elementwise (NaN = missing)."""
    if spec.transform.log:
        x = x.copy()
        positive = x > 0.0
        x[~positive] = math.nan
        x[positive] = np.fromiter(map(math.log, x[positive].tolist()), np.float64)
    if spec.transform.clip is not None:
        lo, hi = spec.transform.clip
        x = np.minimum(hi, np.maximum(lo, x))  # NaN stays NaN
    return x


def batch_values(
    spec: FeatureSpec, data: DatasetRows, edges: Sequence[float] = ()
) -> F64 | npt.NDArray[np.object_]:
    """``feature_value(spec, rows of enterprise g)`` for every group ``g`` of ``data``:
    float64 with NaN for a missing number, or (categorical value/latest) an object array
    of ``str | None``.  ``edges``: the bin edges the value will be cut at, for the
    exactness fix-up of sums (see above)."""
    if data.dataset != spec.dataset:
        raise InvalidArgument(f"feature {spec.name} reads {spec.dataset}, not {data.dataset}")
    agg = spec.aggregate
    counts = (data.ends - data.starts).astype(np.float64)
    if agg == Aggregate.COUNT:
        return transform_column(spec, counts)
    if agg == Aggregate.EXISTS:
        return transform_column(spec, np.ones(len(data.keys)))
    if not len(data.keys):
        return np.empty(0)
    last = data.ends - 1
    if agg in (Aggregate.VALUE, Aggregate.LATEST):
        column = data.columns[spec.field]
        if spec.categorical:
            return _category_column(spec, column[last])
        x = number_column(column[last])
        if spec.divide_by:
            den_col = data.columns[spec.divide_by]
            den = number_column(den_col[last])
            bad = np.isnan(den) | (den == 0.0)
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(bad, math.nan, x / np.where(bad, 1.0, den))
        return transform_column(spec, x)
    x = number_column(data.columns[spec.field])
    present = ~np.isnan(x)
    have = np.add.reduceat(present.astype(np.int64), data.starts)
    if agg == Aggregate.MAX:
        out = np.fmax.reduceat(x, data.starts)  # fmax skips NaN; all-NaN stays NaN
    elif agg == Aggregate.MIN:
        out = np.fmin.reduceat(x, data.starts)
    else:
        total = np.add.reduceat(np.where(present, x, 0.0), data.starts)
        if agg == Aggregate.SUM:
            out = total
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(have > 0, total / np.maximum(have, 1), math.nan)
    out = transform_column(spec, out)
    if agg in (Aggregate.SUM, Aggregate.MEAN) and len(edges):
        e = np.asarray(edges, dtype=np.float64)
        near = np.zeros(len(out), dtype=bool)
        for edge in e:
            near |= np.abs(out - edge) <= EDGE_TOLERANCE * max(1.0, abs(edge))
        for g in np.flatnonzero(near & (have >= 3)).tolist():
            v = feature_value(spec, {spec.dataset: data.rows(g)})
            out[g] = math.nan if v is None else float(v)
    return out
