"""How the platform answers a (snapped) claim: which providers, which protocol.

* All fields at one provider → **single**: that provider evaluates the whole claim.
* Otherwise the claim's top must combine conditions that are each answered by one
  provider: ``all`` (nested ``all`` flattened), ``any`` (nested ``any`` flattened),
  ``at_least k``, or a ``sum``; a ``not`` on top is pushed inside (De Morgan, which holds
  in the three-valued logic too: ``not all(c) = any(not c)``, ``not any(c) = all(not c)``,
  ``not at_least(k, c₁…c_m) = at_least(m − k + 1, not c₁ … not c_m)``, ``not (Σ ≥ t) =
  (Σ < t)``).  A cross-provider combination below the top is refused: combining it
  under encryption would need a protocol per level, and each level would reveal its
  own intermediate answer to the platform.

Each condition goes to the provider that holds its fields, together with the others
that provider holds; the combination is done under encryption (:mod:`veil.composite`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from veil.catalog import Catalog
from veil.claims import (
    All,
    AnyOf,
    AtLeast,
    Claim,
    Not,
    Sum,
    claim_fields,
    claim_providers,
)
from veil.composite import Protocol
from veil.errors import InvalidArgument

__all__ = ["Plan", "plan"]

_FLIP = {"ge": "lt", "gt": "le", "le": "gt", "lt": "ge"}


@dataclass(frozen=True)
class Plan:
    protocol: Protocol
    providers: tuple[str, ...]
    # single: the whole claim; all/any/count: conditions per provider
    conditions: dict[str, list[Claim]] = field(default_factory=dict)
    total: int = 0  # m: number of conditions over all providers
    k: int = 0  # count: at_least k
    sum_fields: dict[str, list[str]] = field(default_factory=dict)
    sum_op: str = ""
    sum_value: object = None
    fields: dict[str, list[str]] = field(default_factory=dict)  # fields asked of each provider


def _push_not(claim: Claim) -> Claim:
    """``claim`` with a ``not`` on top pushed one level in (De Morgan)."""
    if not isinstance(claim, Not):
        return claim
    inner = claim.item
    if isinstance(inner, Not):
        return _push_not(inner.item)
    if isinstance(inner, All):
        return AnyOf(tuple(Not(c) for c in inner.items))
    if isinstance(inner, AnyOf):
        return All(tuple(Not(c) for c in inner.items))
    if isinstance(inner, AtLeast):
        m = len(inner.items)
        return AtLeast(m - inner.k + 1, tuple(Not(c) for c in inner.items))
    if isinstance(inner, Sum):
        return Sum(inner.fields, _FLIP[inner.op], inner.value, inner.unit)
    return claim


def _flatten(items: tuple[Claim, ...], kind: type[All] | type[AnyOf]) -> list[Claim]:
    out: list[Claim] = []
    for item in items:
        item = _push_not(item)
        if isinstance(item, kind):
            out.extend(_flatten(item.items, kind))
        else:
            out.append(item)
    return out


def plan(claim: Claim, catalog: Catalog) -> Plan:
    units = sorted(claim_providers(claim, catalog))
    if len(units) == 1:
        return Plan(
            Protocol.SINGLE,
            tuple(units),
            conditions={units[0]: [claim]},
            total=1,
            fields={units[0]: claim_fields(claim, catalog)},
        )
    top = _push_not(claim)
    if isinstance(top, Sum):
        by_unit: dict[str, list[str]] = {}
        for field_id in top.fields:
            by_unit.setdefault(catalog.field(field_id).provider, []).append(field_id)
        return Plan(
            Protocol.SUM,
            tuple(sorted(by_unit)),
            sum_fields=by_unit,
            sum_op=top.op,
            sum_value=top.value,
            fields={u: sorted(f) for u, f in by_unit.items()},
        )
    if isinstance(top, All):
        protocol, items, k = Protocol.ALL, _flatten(top.items, All), 0
    elif isinstance(top, AnyOf):
        protocol, items, k = Protocol.ANY, _flatten(top.items, AnyOf), 0
    elif isinstance(top, AtLeast):
        protocol, items, k = Protocol.COUNT, [_push_not(c) for c in top.items], top.k
    else:  # pragma: no cover - an atom or exists reads one dataset, hence one provider
        raise InvalidArgument("claim reads several providers but combines nothing")
    conditions: dict[str, list[Claim]] = {}
    for i, item in enumerate(items):
        holders = sorted(claim_providers(item, catalog))
        if len(holders) != 1:
            raise InvalidArgument(
                f"claim part {i + 1} of the top-level {protocol.value} reads fields of "
                f"{' and '.join(holders)}: a check across providers combines, at its top, "
                "conditions that are each answered by one provider"
            )
        conditions.setdefault(holders[0], []).append(item)
    fields = {
        unit: sorted({f for c in conds for f in claim_fields(c, catalog)})
        for unit, conds in conditions.items()
    }
    return Plan(
        protocol,
        tuple(sorted(conditions)),
        conditions=conditions,
        total=len(items),
        k=k,
        fields=fields,
    )
