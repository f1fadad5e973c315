"""Reference code tables shipped as data files: GB/T 2260 regions, GB/T 4754 industries.

``gbt2260.csv`` holds every provincial- and prefecture-level division and the
county-level districts of the larger cities (a realistic subset, not the whole table);
``gbt4754.csv`` holds the 20 sections (门类) of GB/T 4754-2017 and a selection of
divisions (大类).  Both are read once and cached; lines starting with ``#`` are comments.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "Industry",
    "Region",
    "industries",
    "industry",
    "industry_sections",
    "province_of",
    "provinces",
    "region",
    "regions",
]


@dataclass(frozen=True)
class Region:
    """One GB/T 2260 division: six-digit code, Chinese name, level and parent code."""

    code: str
    name: str
    level: str  # province | prefecture | county
    parent: str | None
    weight: float  # provinces only: illustrative share of market entities (synthetic data)

    @property
    def province_code(self) -> str:
        return self.code[:2] + "0000"


@dataclass(frozen=True)
class Industry:
    """One GB/T 4754-2017 section (letter code) or division (two-digit code)."""

    code: str
    level: str  # section | division
    section: str
    name_zh: str
    name_en: str
    divisions: str  # for sections: the division range, e.g. "13-43"


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return list(csv.DictReader(lines))


@functools.cache
def _regions() -> dict[str, Region]:
    out: dict[str, Region] = {}
    for row in _rows("gbt2260.csv"):
        out[row["code"]] = Region(
            code=row["code"],
            name=row["name"],
            level=row["level"],
            parent=row["parent"] or None,
            weight=float(row["weight"]) if row["weight"] else 0.0,
        )
    return out


@functools.cache
def _industries() -> dict[str, Industry]:
    return {
        row["code"]: Industry(
            code=row["code"],
            level=row["level"],
            section=row["section"],
            name_zh=row["name_zh"],
            name_en=row["name_en"],
            divisions=row["divisions"],
        )
        for row in _rows("gbt4754.csv")
    }


def regions(level: str | None = None) -> list[Region]:
    """All regions in code order, optionally only one level."""
    return [r for r in _regions().values() if level is None or r.level == level]


def provinces() -> list[Region]:
    """The 31 provincial-level divisions of the mainland."""
    return regions("province")


def region(code: str) -> Region:
    """The region with this code; ``KeyError`` when the table does not hold it."""
    return _regions()[code]


def province_of(code: str) -> Region:
    """The provincial-level division a six-digit code belongs to."""
    return _regions()[code[:2] + "0000"]


def industries(level: str | None = None) -> list[Industry]:
    """All industries in file order, optionally only sections or only divisions."""
    return [i for i in _industries().values() if level is None or i.level == level]


def industry_sections() -> list[Industry]:
    """The 20 GB/T 4754-2017 sections A-T."""
    return industries("section")


def industry(code: str) -> Industry:
    """The section or division with this code; ``KeyError`` when unknown."""
    return _industries()[code]
