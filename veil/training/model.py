"""The trained model as documents.

``veil-vfl/1`` — everything training produced, for the platform (which owns the model):
every party's column encoders and the weights of their encoded columns, the intercept,
metrics, the IV table, the run's history and row counts::

    {"format": "veil-vfl/1", "job_id": "…", "created": "…", "label_party": "platform",
     "intercept": b,
     "parties": {NAME: {"party": NAME, "role": "label"|"feature", "features": d,
                        "columns": [ENCODER + {"weights": [...], "encoded_names": [...]}]}},
     "metrics": {"train"|"validation"|"test": {"auc", "ks", "log_loss", "rows", "defaults"}},
     "iv": [...], "training": {...}}

``veil-model/1`` — the scoring registry's format (``veil.scoring.spec``), produced by
:func:`to_veil_model` when every feature party is a catalog provider unit and every kept
column is defined as a catalog feature (field, aggregate, ratio, transform).  Encoded
columns map as follows (``w`` weights, ``μ``/``σ`` the training mean/std, ``k`` the clip):

* numeric, standard → ``raw`` ``{weight: w, center: μ, scale: σ}``, ``clip`` to
  ``[μ − kσ, μ + kσ]`` (intersected with the definition's own clip); a missing value
  contributes ``w_missing + w·μ/σ`` (the raw encoding's constant ``−w·μ/σ`` sits in the
  platform's base logit; the training encoder imputes μ, i.e. 0, and adds the missing
  indicator's weight);
* categorical, standard → ``one_hot`` with ``other`` 0, missing → the missing column's weight;
* WOE → ``woe`` with the training bins, ``coefficient`` w; missing → ``w·WOE(missing bin)``.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidArgument
from veil.training.encoding import CATEGORICAL, NUMERIC, ColumnEncoder
from veil.training.table import PartyTable

F64 = npt.NDArray[np.float64]
FORMAT = "veil-vfl/1"
_FEATURE_NAME = re.compile(r"[^a-z0-9_]+")


def model_part(name: str, encoders: Sequence[ColumnEncoder], weights: F64) -> dict[str, Any]:
    """A party's encoders with the weights of their encoded columns, in order."""
    out: list[dict[str, Any]] = []
    i = 0
    for enc in encoders:
        doc = enc.to_json()
        k = enc.width
        doc["weights"] = [float(v) for v in weights[i : i + k]]
        doc["encoded_names"] = enc.encoded_names()
        i += k
        out.append(doc)
    if i != len(weights):
        raise InvalidArgument("weights do not match the encoders")
    return {"party": name, "columns": out, "features": i}


def build_document(
    *,
    job_id: str,
    label_party: str,
    intercept: float,
    parts: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Mapping[str, float]],
    iv_table: Sequence[Mapping[str, Any]],
    training: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "job_id": job_id,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "label_party": label_party,
        "intercept": float(intercept),
        "parties": {k: dict(v) for k, v in parts.items()},
        "metrics": {k: dict(v) for k, v in metrics.items()},
        "iv": [
            {k: v for k, v in row.items() if k not in ("woe",)} | {"woe": row.get("woe")}
            for row in iv_table
        ],
        "training": dict(training),
    }


def party_logits(part: Mapping[str, Any], table: PartyTable) -> F64:
    """One party's partial scores over ``table``'s rows (plaintext reference)."""
    total = np.zeros(len(table))
    for col in part["columns"]:
        enc = ColumnEncoder.from_json(col)
        if enc.dropped or not col["weights"]:
            continue
        block = enc.encode(table.columns[enc.name])
        total += block @ np.asarray(col["weights"], dtype=np.float64)
    return total


def score_document(
    doc: Mapping[str, Any], tables: Mapping[str, PartyTable], ids: Sequence[str]
) -> F64:
    """Logits of the model for ``ids`` from every party's table, in the clear.

    For tests and for a party that holds all the data anyway (a central reference);
    the federated protocol never does this.
    """
    z = np.full(len(ids), float(doc["intercept"]))
    for name, part in doc["parties"].items():
        table = tables[name]
        index = {ident: i for i, ident in enumerate(table.ids)}
        missing = [i for i in ids if i not in index]
        if missing:
            raise InvalidArgument(f"party {name!r} has no row for {len(missing)} requested IDs")
        z += party_logits(part, table.take([index[i] for i in ids]))
    return z


# --- veil-model/1 ---------------------------------------------------------------------


def _feature_name(text: str) -> str:
    name = _FEATURE_NAME.sub("_", text.lower()).strip("_") or "f"
    if not name[0].isalpha():
        name = "f_" + name
    return name[:64]


def _r(x: float) -> float:
    return float(f"{x:.12g}")


def _feature(
    col: Mapping[str, Any], definition: Mapping[str, Any], never_missing: bool
) -> tuple[dict[str, Any], float]:
    """A ``veil-model/1`` feature for one kept column, and a constant for the intercept."""
    enc = ColumnEncoder.from_json(dict(col))
    w = [float(v) for v in col["weights"]]
    out: dict[str, Any] = {k: v for k, v in definition.items() if k != "transform"}
    out["name"] = _feature_name(str(definition.get("name") or enc.name))
    transform = dict(definition.get("transform") or {})
    constant = 0.0
    missing: float
    if enc.encoding == "woe":
        assert enc.woe is not None
        coef = w[0]
        if enc.kind == NUMERIC and enc.edges:
            out["encoding"] = {
                "type": "woe",
                "edges": [_r(e) for e in enc.edges],
                "woe": [_r(v) for v in enc.woe[:-1]],
                "coefficient": _r(coef),
            }
        elif enc.kind == NUMERIC:  # one value bin: a constant unless missing
            out["encoding"] = {"type": "raw", "weight": 0.0}
            constant = coef * enc.woe[0]
        else:
            k = len(enc.categories)
            out["encoding"] = {
                "type": "woe",
                "categories": list(enc.categories),
                "woe": [_r(v) for v in enc.woe[:k]],
                "coefficient": _r(coef),
                "other_woe": _r(enc.woe[k]),
            }
        missing = coef * enc.woe[-1] - constant
    elif enc.kind == NUMERIC:
        wv = w[0] if enc.value_column else 0.0
        wm = w[-1] if enc.missing_indicator else 0.0
        out["encoding"] = {
            "type": "raw",
            "weight": _r(wv),
            "center": _r(enc.mean),
            "scale": _r(enc.std),
        }
        lo, hi = enc.mean - enc.clip * enc.std, enc.mean + enc.clip * enc.std
        if "clip" in transform:
            lo, hi = max(lo, float(transform["clip"][0])), min(hi, float(transform["clip"][1]))
        if enc.value_column and lo < hi:
            transform["clip"] = [_r(lo), _r(hi)]
        missing = wm + wv * enc.mean / enc.std
    else:
        k = len(enc.categories)
        out["encoding"] = {
            "type": "one_hot",
            "categories": list(enc.categories),
            "weights": [_r(v) for v in w[:k]],
            "other": 0.0,
        }
        missing = w[k] if enc.missing_column else 0.0
        assert enc.kind == CATEGORICAL
    if transform:
        out["transform"] = transform
    if not never_missing:
        out["missing"] = {"weight": _r(missing)}
    return out, constant


def to_veil_model(
    doc: Mapping[str, Any],
    definitions: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    model_id: str,
    description: str = "",
    card: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The scoring registry's ``veil-model/1`` document for a ``veil-vfl/1`` model.

    ``definitions[party][column]`` gives each kept column's catalog feature (``provider``,
    ``field``, optional ``aggregate``, ``divide_by``, ``transform``, ``name``).  Raises
    :class:`InvalidArgument` naming what cannot be expressed (e.g. label-party features:
    a ``veil-model/1`` feature is always a provider's field), and validates the result
    with ``veil.scoring.parse_model``.
    """
    from veil.scoring import parse_model
    from veil.scoring.spec import NEVER_MISSING

    features: list[dict[str, Any]] = []
    intercept = float(doc["intercept"])
    for party, part in doc["parties"].items():
        kept = [c for c in part["columns"] if c.get("weights")]
        if part.get("role") == "label":
            if kept:
                raise InvalidArgument(
                    f"the label party {party!r} has features of its own; a veil-model/1 "
                    "feature is always a provider's catalog field"
                )
            continue
        defs = definitions.get(party)
        if defs is None:
            raise InvalidArgument(f"no catalog feature definitions for party {party!r}")
        for col in kept:
            definition = defs.get(col["name"])
            if definition is None:
                raise InvalidArgument(
                    f"party {party!r}: column {col['name']!r} has no catalog feature definition"
                )
            never = str(definition.get("aggregate", "")) in {a.value for a in NEVER_MISSING}
            feature, constant = _feature(col, definition, never)
            intercept += constant
            features.append(feature)
    if not features:
        raise InvalidArgument("the model has no provider features")
    metrics = {
        f"{split}_{k}": round(float(v), 6)
        for split, m in doc["metrics"].items()
        for k, v in m.items()
        if k in ("auc", "ks") and math.isfinite(float(v))
    }
    out = {
        "format": "veil-model/1",
        "model_id": model_id,
        "kind": "scorecard"
        if any(f["encoding"]["type"] == "woe" for f in features)
        else "logistic_regression",
        "description": description or f"joint training job {doc['job_id']} (veil train)",
        "intercept": _r(intercept),
        "features": features,
        "card": {
            "title": model_id,
            "training_data": (
                f"vertical federated training, job {doc['job_id']}: "
                f"{doc['training'].get('rows', {}).get('intersection', '?')} aligned enterprises"
            ),
            "metrics": metrics,
            "trained_by": "veil train (vertical federated logistic regression, Paillier + masks)",
            **dict(card or {}),
        },
    }
    parse_model(out)
    return out
