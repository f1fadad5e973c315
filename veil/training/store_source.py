"""A feature party's table computed from its own provider store (federation training).

A provider that trains from its live store, rather than from a CSV, computes each
feature exactly as it will when scoring (``veil.scoring.features.feature_value``): the
same catalog field, aggregate, ratio and transform.  So a model trained here scores the
same values in production.  Definitions are ``veil-model/1`` feature definitions
(``name``, ``provider``, ``field``, ``aggregate``, ``divide_by``, ``transform``) plus an
optional ``categorical`` flag (one-hot / category WOE rather than a number).

The table has one row per enterprise the provider holds (a row in any of its datasets);
the private set intersection then keeps those the label party has outcomes for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from veil.catalog import Catalog
from veil.errors import InvalidArgument
from veil.scoring.features import feature_value
from veil.scoring.spec import NEVER_MISSING, FeatureSpec, parse_model
from veil.store import IDENTITY_USCC, ProviderStore
from veil.training.table import Column, PartyTable, as_numbers

CATEGORICAL_KEY = "categorical"


def model_definition(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition as ``veil-model/1`` takes it (without the training-only flag)."""
    return {k: v for k, v in definition.items() if k != CATEGORICAL_KEY}


def feature_specs(
    definitions: Mapping[str, Mapping[str, Any]], catalog: Catalog
) -> dict[str, FeatureSpec]:
    """Validated specs (column name → spec), checked by ``veil.scoring.parse_model``."""
    features = []
    for column, raw in definitions.items():
        d = model_definition(raw)
        d.setdefault("name", column)
        categorical = bool(raw.get(CATEGORICAL_KEY, False))
        d["encoding"] = (
            {"type": "one_hot", "categories": ["-"], "weights": [0.0]}
            if categorical
            else {"type": "raw", "weight": 0.0}
        )
        if str(d.get("aggregate", "")) not in {a.value for a in NEVER_MISSING}:
            d["missing"] = {"weight": 0.0}
        features.append(d)
    if not features:
        raise InvalidArgument("no feature definitions")
    doc = {
        "format": "veil-model/1",
        "model_id": "training-definitions",
        "kind": "logistic_regression",
        "intercept": 0.0,
        "features": features,
    }
    spec = parse_model(doc, catalog)
    return {column: f.spec for column, f in zip(definitions, spec.features, strict=True)}


def store_table(
    store: ProviderStore,
    definitions: Mapping[str, Mapping[str, Any]],
    catalog: Catalog,
    *,
    source: str,
) -> PartyTable:
    """Every enterprise ``store`` holds, with the defined features as columns."""
    specs = feature_specs(definitions, catalog)
    units = {s.provider for s in specs.values()}
    if units != {store.mapping.unit}:
        raise InvalidArgument(
            f"{source}: features of {sorted(units)} cannot be computed from "
            f"the {store.mapping.unit!r} store"
        )
    held: set[str] = set()
    for dataset in store.mapping.tables:
        for batch in store.iter_dataset(dataset, [], batch_size=5000):
            held.update(str(r[IDENTITY_USCC]) for r in batch)
    fields_by_ds: dict[str, set[str]] = {}
    for s in specs.values():
        fields_by_ds.setdefault(s.dataset, set()).update(s.fields)
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for dataset, fields in fields_by_ds.items():
        for batch in store.iter_dataset(dataset, sorted(fields), batch_size=5000):
            for row in batch:
                uscc = str(row.pop(IDENTITY_USCC))
                row.pop("enterprise_name", None)
                rows.setdefault(uscc, {}).setdefault(dataset, []).append(row)
    ids = sorted(held)
    columns: dict[str, Column] = {}
    for column, spec in specs.items():
        values = [feature_value(spec, rows.get(u, {})) for u in ids]
        text = ["" if v is None else str(v) for v in values]
        numbers = None if spec.categorical else as_numbers(text)
        columns[column] = text if numbers is None else numbers
    return PartyTable(source=source, ids=ids, columns=columns)
