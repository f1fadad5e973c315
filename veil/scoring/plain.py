"""The plaintext reference evaluation of a model (float64), for tests and model fitting.

Never used to answer a bank: the platform never holds the features.  Tests compare the
encrypted protocol's logit with :func:`plain_logit` on generated data (≤ 1e-9).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from veil.scoring.features import Rows, feature_value
from veil.scoring.spec import ModelSpec


def contributions(model: ModelSpec, rows_by_provider: Mapping[str, Rows]) -> dict[str, float]:
    """Each feature's contribution for one enterprise; ``rows_by_provider[unit]`` is that
    provider's ``ProviderStore.fetch`` answer (missing provider: no rows at all)."""
    out: dict[str, float] = {}
    for f in model.features:
        rows = rows_by_provider.get(f.spec.provider, {})
        out[f.spec.name] = f.contribution(feature_value(f.spec, rows))
    return out


def plain_logit(model: ModelSpec, rows_by_provider: Mapping[str, Rows]) -> float:
    return model.base_logit + math.fsum(contributions(model, rows_by_provider).values())
