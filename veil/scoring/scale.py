"""From a logit to what a bank receives: probability of default, score and grade.

The published scale (every model carries its own; these are the defaults):

* **PD** = σ(logit) = 1 / (1 + e^(−logit)), rounded half-even to ``pd_decimals``
  (default 6 decimal places, i.e. 0.0001 %).
* **Score** (points, higher is better), the scorecard convention of Chinese credit risk
  teams: ``score = offset − factor · logit`` with ``factor = pdo / ln 2`` and
  ``offset = base_points − factor · ln(base_odds)``, so a good:bad odds of ``base_odds``
  (default 50:1) scores ``base_points`` (600) and every doubling of the odds adds ``pdo``
  (20) points.  Clipped to ``[min_points, max_points]`` (300..900), rounded half-even to
  ``score_decimals`` (default 0: whole points).
* **Grade**: the first grade whose ``max_pd`` is ≥ the *published* (rounded) PD, so a
  bank can recompute the grade from the PD it holds.  Defaults: AAA ≤ 0.3 %, AA ≤ 0.7 %,
  A ≤ 1.5 %, BBB ≤ 3 %, BB ≤ 6 %, B ≤ 12 %, CCC ≤ 25 %, CC ≤ 50 %, C above.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from veil.errors import InvalidArgument

DEFAULT_GRADES: tuple[tuple[str, float], ...] = (
    ("AAA", 0.003),
    ("AA", 0.007),
    ("A", 0.015),
    ("BBB", 0.03),
    ("BB", 0.06),
    ("B", 0.12),
    ("CCC", 0.25),
    ("CC", 0.5),
    ("C", 1.0),
)


def sigmoid(logit: float) -> float:
    """σ(logit) without overflow for large |logit|."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    e = math.exp(logit)
    return e / (1.0 + e)


@dataclass(frozen=True)
class ScoreResult:
    """What the platform hands out (and signs): the logit stays at the platform."""

    pd: float
    score: float
    grade: str

    def claims(self) -> dict[str, Any]:
        return {"pd": self.pd, "score": self.score, "grade": self.grade}


@dataclass(frozen=True)
class ScoreScale:
    pd_decimals: int = 6
    base_points: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    min_points: float = 300.0
    max_points: float = 900.0
    score_decimals: int = 0
    grades: tuple[tuple[str, float], ...] = DEFAULT_GRADES

    def __post_init__(self) -> None:
        if not 2 <= self.pd_decimals <= 12:
            raise InvalidArgument("output.pd_decimals must be in 2..12")
        if not 0 <= self.score_decimals <= 4:
            raise InvalidArgument("output.score.decimals must be in 0..4")
        if self.base_odds <= 0 or self.pdo <= 0:
            raise InvalidArgument("output.score.base_odds and pdo must be positive")
        if self.min_points >= self.max_points:
            raise InvalidArgument("output.score.min must be below output.score.max")
        if not self.grades:
            raise InvalidArgument("output.grades must not be empty")
        bounds = [b for _, b in self.grades]
        if any(b2 <= b1 for b1, b2 in itertools.pairwise(bounds)):
            raise InvalidArgument("output.grades max_pd must be strictly increasing")
        if bounds[-1] < 1.0:
            raise InvalidArgument("the last grade's max_pd must be 1.0 (every PD gets a grade)")
        names = [g for g, _ in self.grades]
        if len(set(names)) != len(names) or not all(n and len(n) <= 8 for n in names):
            raise InvalidArgument("output.grades names must be distinct, 1..8 characters")

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_points - self.factor * math.log(self.base_odds)

    def apply(self, logit: float) -> ScoreResult:
        if not math.isfinite(logit):
            raise InvalidArgument("logit is not finite")
        pd = round(sigmoid(logit), self.pd_decimals)
        points = min(self.max_points, max(self.min_points, self.offset - self.factor * logit))
        score = round(points, self.score_decimals)
        if self.score_decimals == 0:
            score = float(int(score))
        grade = next(g for g, bound in self.grades if pd <= bound)
        return ScoreResult(pd=pd, score=score, grade=grade)

    def to_json(self) -> dict[str, Any]:
        return {
            "pd_decimals": self.pd_decimals,
            "score": {
                "base_points": self.base_points,
                "base_odds": self.base_odds,
                "pdo": self.pdo,
                "min": self.min_points,
                "max": self.max_points,
                "decimals": self.score_decimals,
            },
            "grades": [{"grade": g, "max_pd": b} for g, b in self.grades],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> ScoreScale:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InvalidArgument("output must be an object")
        unknown = set(raw) - {"pd_decimals", "score", "grades"}
        if unknown:
            raise InvalidArgument(f"output: unknown key {sorted(unknown)[0]!r}")
        score = raw.get("score", {})
        if not isinstance(score, Mapping):
            raise InvalidArgument("output.score must be an object")
        unknown = set(score) - {"base_points", "base_odds", "pdo", "min", "max", "decimals"}
        if unknown:
            raise InvalidArgument(f"output.score: unknown key {sorted(unknown)[0]!r}")
        grades_raw = raw.get("grades")
        grades = DEFAULT_GRADES
        if grades_raw is not None:
            grades = tuple(_grade(g) for g in _list(grades_raw, "output.grades"))
        d = cls()
        return cls(
            pd_decimals=_int(raw.get("pd_decimals", d.pd_decimals), "output.pd_decimals"),
            base_points=_num(score.get("base_points", d.base_points), "output.score.base_points"),
            base_odds=_num(score.get("base_odds", d.base_odds), "output.score.base_odds"),
            pdo=_num(score.get("pdo", d.pdo), "output.score.pdo"),
            min_points=_num(score.get("min", d.min_points), "output.score.min"),
            max_points=_num(score.get("max", d.max_points), "output.score.max"),
            score_decimals=_int(score.get("decimals", d.score_decimals), "output.score.decimals"),
            grades=grades,
        )


def _list(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise InvalidArgument(f"{where} must be a list")
    return value


def _grade(raw: Any) -> tuple[str, float]:
    if not isinstance(raw, Mapping) or set(raw) != {"grade", "max_pd"}:
        raise InvalidArgument("each of output.grades must be {grade, max_pd}")
    name = raw["grade"]
    if not isinstance(name, str):
        raise InvalidArgument("output.grades grade must be a string")
    bound = _num(raw["max_pd"], "output.grades max_pd")
    if not 0.0 < bound <= 1.0:
        raise InvalidArgument("output.grades max_pd must be in (0, 1]")
    return name, bound


def _num(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"{where} must be a finite number")
    return float(value)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{where} must be an integer")
    return value
