"""Synthetic provider data: a realistic, deterministic population of enterprises.

* :func:`generate_population`: the whole population in memory (tests, small ``n``), with
  the latent factors, every observable attribute and the drawn loan outcome.
* :func:`iter_population`: the same population chunk by chunk.
* :func:`write_population`: every provider unit's store (through its mapping) and
  ``labels.csv``, with a progress bar.

The model, its parameters and the ground-truth default model are documented in
``docs/synthetic-data.md``.
"""

from __future__ import annotations

from veil.synth.outcome import COEFFICIENTS, GRADE_EFFECT, INTERCEPT, default_logit, draw_defaults
from veil.synth.population import AS_OF, CHUNK, KINDS, Population, iter_population
from veil.synth.writer import GenerationSummary, UnitSummary, write_population

__all__ = [
    "AS_OF",
    "CHUNK",
    "COEFFICIENTS",
    "GRADE_EFFECT",
    "INTERCEPT",
    "KINDS",
    "GenerationSummary",
    "Population",
    "UnitSummary",
    "default_logit",
    "draw_defaults",
    "generate_population",
    "iter_population",
    "write_population",
]


def generate_population(n: int, seed: int) -> Population:
    """All ``n`` enterprises for ``seed``, plus ``default_logit``, ``default`` and ``labelled``.

    ``labelled`` marks the SAMR-registered enterprises that appear in ``labels.csv``;
    ``default`` is the drawn outcome (identical to what :func:`write_population` writes).
    """
    parts = []
    for pop in iter_population(n, seed):
        pop["default_logit"] = default_logit(pop)
        pop["default"] = draw_defaults(pop) & pop["samr"]
        pop["labelled"] = pop["samr"]
        parts.append(pop)
    return Population.concat(parts)
