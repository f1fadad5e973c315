"""Helpers for turning population arrays into catalog rows.

A builder returns :data:`Cols`: ``uscc`` (+ ``enterprise_name``) and field id -> a Python
list (``None`` for absent values), ready for :meth:`veil.store.ProviderStore.write_columns`.
"""

from __future__ import annotations

import datetime as dt
import functools
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt

from veil.store import IDENTITY_NAME, IDENTITY_USCC
from veil.synth import vocab
from veil.synth.ids import uscc_batch
from veil.synth.population import AS_OF64, Population, PopulationParams, stream

Cols = dict[str, list[Any]]
I64 = npt.NDArray[np.int64]
D64 = npt.NDArray[np.datetime64]

# Index ranges of the seed's letter-body bijection (enterprises use [0, 10^8)); each kind of
# counterparty gets its own range, so every synthetic code is unique (see veil.synth.ids).
BRANCH_BASE = 100_000_000
HOLDER_BASE = 400_000_000
AUTHORITY_BASE = 800_000_000
SLOTS_PER_CHUNK = 1_000_000
BANKS = np.array(
    [
        "中国工商银行股份有限公司",
        "中国农业银行股份有限公司",
        "中国银行股份有限公司",
        "中国建设银行股份有限公司",
        "交通银行股份有限公司",
        "中国邮政储蓄银行股份有限公司",
        "招商银行股份有限公司",
        "兴业银行股份有限公司",
        "中信银行股份有限公司",
        "中国民生银行股份有限公司",
    ]
)


def rng_for(pop: Population, dataset_id: str) -> np.random.Generator:
    """The random stream of one dataset in one chunk (stable whatever else is generated)."""
    return stream(pop.seed, pop.chunk, 1000 + zlib.crc32(dataset_id.encode()) % 1_000_000)


@functools.cache
def params(seed: int) -> PopulationParams:
    return PopulationParams.from_seed(seed)


def expand(counts: npt.NDArray[Any]) -> tuple[I64, I64]:
    """Row -> owner index, and row -> 0-based position within its owner, for ``counts``."""
    counts = np.asarray(counts, dtype=np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    pos = np.arange(len(owner)) - np.repeat(starts, counts)
    return owner, pos


def ident(pop: Population, rows: I64 | npt.NDArray[np.bool_], name: bool = True) -> Cols:
    out: Cols = {IDENTITY_USCC: pop["uscc"][rows].tolist()}
    if name:
        out[IDENTITY_NAME] = pop["name"][rows].tolist()
    return out


def lst(values: npt.NDArray[Any], present: npt.NDArray[np.bool_] | None = None) -> list[Any]:
    """Python values (dates become ``datetime.date``), ``None`` where not ``present``."""
    out: list[Any] = np.asarray(values).tolist()
    if present is not None:
        out = [v if p else None for v, p in zip(out, present.tolist(), strict=True)]
    return out


def days(values: npt.NDArray[Any]) -> Any:
    return np.asarray(values).astype("timedelta64[D]")


def between(rng: np.random.Generator, start: D64, end: D64 | np.datetime64 = AS_OF64) -> D64:
    """A uniform date in ``[start, end]`` (element-wise; ``end`` clipped to at least start)."""
    start = np.asarray(start, dtype="datetime64[D]")
    end_arr = np.maximum(np.asarray(end, dtype="datetime64[D]"), start)
    span = (end_arr - start).astype(np.int64)
    return start + days(np.floor(rng.random(len(start)) * (span + 1)).astype(np.int64))


def years(values: D64) -> I64:
    return np.asarray(values).astype("datetime64[Y]").astype(np.int64) + 1970


def to_date(values: D64) -> list[dt.date | None]:
    return lst(np.asarray(values, dtype="datetime64[D]"))


def abbr(regions: npt.NDArray[np.str_]) -> npt.NDArray[np.str_]:
    table = vocab.PROVINCE_ABBR
    return np.array([table[r[:2]] for r in regions.tolist()], dtype="<U1")


def case_numbers(
    rng: np.random.Generator, year: I64, regions: npt.NDArray[np.str_], word: str
) -> list[str]:
    """Court case numbers such as ``(2024)黑0402民初1234号``."""
    nums = rng.integers(1, 9999, len(year)).tolist()
    ab = abbr(regions).tolist()
    return [
        f"({y}){a}{r[2:6]}{word}{k}号"
        for y, a, r, k in zip(year.tolist(), ab, regions.tolist(), nums, strict=True)
    ]


def synthetic_uscc(
    pop: Population, dept: str, org_type: str, regions: npt.NDArray[np.str_], slots: I64, base: int
) -> npt.NDArray[np.str_]:
    """Valid, unique USCCs for counterparties (branches, corporate shareholders, authorities)."""
    n = len(regions)
    code = params(pop.seed).letter_code
    prefix = "MB" if dept == "1" else "MA"
    return uscc_batch(
        np.full(n, dept), np.full(n, org_type), regions, np.full(n, prefix), code(base + slots)
    )


def chunk_slots(pop: Population, n: int) -> I64:
    if n > SLOTS_PER_CHUNK:
        raise ValueError("too many counterparties in one chunk")
    return np.int64(pop.chunk) * SLOTS_PER_CHUNK + np.arange(n, dtype=np.int64)


def authority_uscc(pop: Population, ridx: I64, which: I64) -> npt.NDArray[np.str_]:
    """A stable synthetic USCC (dept 1, 机关) per (region, authority kind)."""
    rt = vocab.region_text()
    return synthetic_uscc(pop, "1", "1", rt.codes[ridx], ridx * 16 + which, AUTHORITY_BASE)


def bank_branch(
    rng: np.random.Generator, pop: Population, ridx: I64
) -> tuple[list[str], list[str]]:
    """A bank branch name in the region's city and its (synthetic, stable) USCC."""
    rt = vocab.region_text()
    b = rng.integers(0, len(BANKS), len(ridx))
    names = vocab.join(BANKS[b], rt.place[ridx], "分行")
    codes = synthetic_uscc(pop, "9", "1", rt.codes[ridx], 50_000 + ridx * 16 + b, AUTHORITY_BASE)
    return names.tolist(), codes.tolist()
