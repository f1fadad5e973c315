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
from typing import Any

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
        return float(len(rows))
    if agg == Aggregate.EXISTS:
        return 1.0 if rows else 0.0
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
