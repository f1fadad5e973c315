"""The registry of row builders: one per catalog dataset."""

from __future__ import annotations

from collections.abc import Callable

from veil.catalog import Catalog
from veil.synth import ds_court, ds_finance, ds_other, ds_samr
from veil.synth.population import Population
from veil.synth.rows import Cols

__all__ = ["BUILDERS", "build", "check_coverage"]

BUILDERS: dict[str, Callable[[Population], Cols]] = {
    **ds_samr.BUILDERS,
    **ds_court.BUILDERS,
    **ds_finance.BUILDERS,
    **ds_other.BUILDERS,
}


def build(dataset_id: str, pop: Population) -> Cols:
    """Columnar rows of ``dataset_id`` for the enterprises of ``pop``."""
    return BUILDERS[dataset_id](pop)


def check_coverage(catalog: Catalog) -> None:
    """Fail loudly if the catalog gained a dataset (or field) the generator cannot fill."""
    missing = [d.id for d in catalog.datasets if d.id not in BUILDERS]
    if missing:
        raise RuntimeError(f"no synthetic-data builder for datasets: {', '.join(missing)}")
