"""Joint-model scoring, the parts every node shares: the model format and its maths.

* :mod:`veil.scoring.spec` — the ``veil-model/1`` JSON format (logistic regression /
  scorecard over catalog fields, raw/binned/WOE/one-hot encodings, missing values), its
  validation against the catalog and its compilation into per-feature contribution
  tables;
* :mod:`veil.scoring.features` — turning one enterprise's provider records into feature
  values, exactly as the provider node does before it multiplies encrypted weights;
* :mod:`veil.scoring.scale` — logit → probability of default, score and grade, rounded
  to the published precision;
* :mod:`veil.scoring.plain` — the plaintext reference evaluation (tests, the demo model).

Nothing here knows about a single node; the protocol lives in ``platform_node.scoring``
and ``provider_node.scoring``.
"""

from veil.scoring.scale import ScoreResult, ScoreScale
from veil.scoring.spec import (
    FORMAT,
    CompiledFeature,
    FeatureSpec,
    ModelSpec,
    parse_model,
)

__all__ = [
    "FORMAT",
    "CompiledFeature",
    "FeatureSpec",
    "ModelSpec",
    "ScoreResult",
    "ScoreScale",
    "parse_model",
]
