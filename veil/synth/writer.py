"""Write a synthetic population into each provider unit's own store, plus ``labels.csv``.

Every unit gets its own database (``<out>/<unit>.db`` SQLite files by default, or any
SQLAlchemy URL), laid out by that unit's mapping file, so the providers look like separate
organisations with separate schemas.  ``labels.csv`` (``uscc,default``) holds the loan
outcomes a lending institution would share with the platform: one line per enterprise
registered with SAMR (the SME borrowers), in population order.

Generation streams chunk by chunk (:data:`veil.synth.population.CHUNK` enterprises), so
memory stays flat for a million enterprises; rows go in with SQLAlchemy Core bulk
``insert()`` executemany calls (SQLite: synchronous=OFF during the load).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from veil.catalog import load_catalog
from veil.errors import InvalidArgument
from veil.store import ProviderStore, load_mapping
from veil.synth.datasets import build, check_coverage
from veil.synth.outcome import draw_defaults
from veil.synth.population import CHUNK, COMPANY, iter_population

__all__ = ["GenerationSummary", "UnitSummary", "default_url", "write_population"]

MAX_ENTERPRISES = 10_000_000


@dataclass
class UnitSummary:
    unit: str
    url: str
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass
class GenerationSummary:
    """What was generated, where, and how long it took."""

    out_dir: Path
    enterprises: int
    seed: int
    units: dict[str, UnitSummary]
    labels_path: Path
    labelled: int = 0
    defaults: int = 0
    seconds: float = 0.0
    sample_usccs: list[str] = field(default_factory=list)

    @property
    def default_rate(self) -> float:
        return self.defaults / self.labelled if self.labelled else 0.0

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def lines(self) -> list[str]:
        out = [
            f"{self.enterprises:,} enterprises (seed {self.seed}) in {self.seconds:.1f} s "
            f"-> {self.out_dir}",
        ]
        for u in self.units.values():
            where = f"{u.unit}.db" if u.url == default_url(self.out_dir, u.unit) else u.url
            out.append(f"  {u.unit:<17} {u.total_rows:>11,} rows  {where}")
        out.append(
            f"  labels.csv        {self.labelled:>11,} borrowers, {self.defaults:,} defaults "
            f"({self.default_rate:.1%})"
        )
        if self.sample_usccs:
            out.append(f"  sample companies: {', '.join(self.sample_usccs)}")
        return out


def default_url(out_dir: Path, unit: str) -> str:
    return f"sqlite:///{(out_dir / f'{unit}.db').resolve()}"


def _fresh_sqlite(url: str) -> None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)


def write_population(
    out_dir: Path,
    enterprises: int,
    seed: int,
    *,
    units: Sequence[str] | None = None,
    urls: Mapping[str, str] | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> GenerationSummary:
    """Generate ``enterprises`` enterprises and write every selected unit's store.

    ``urls`` overrides the store URL of some units (default: ``<out_dir>/<unit>.db``).
    Existing SQLite files are replaced; on other databases the mapped tables are dropped
    and recreated.
    """
    if not 1 <= enterprises <= MAX_ENTERPRISES:
        raise InvalidArgument(f"enterprises must be between 1 and {MAX_ENTERPRISES:,}")
    catalog = load_catalog()
    check_coverage(catalog)
    selected = list(units) if units else catalog.providers()
    unknown = [u for u in selected if u not in catalog.providers()]
    if unknown:
        raise InvalidArgument(
            f"unknown provider unit(s) {', '.join(unknown)}; "
            f"known: {', '.join(catalog.providers())}"
        )
    extra = [u for u in (urls or {}) if u not in selected]
    if extra:
        raise InvalidArgument(f"--url given for unit(s) not generated: {', '.join(extra)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    stores: dict[str, ProviderStore] = {}
    summary = GenerationSummary(out_dir, enterprises, seed, {}, out_dir / "labels.csv")
    for unit in selected:
        url = (urls or {}).get(unit) or default_url(out_dir, unit)
        _fresh_sqlite(url)
        store = ProviderStore(url, load_mapping(unit, catalog), catalog)
        if not url.startswith("sqlite"):
            store.drop_schema()
        store.create_schema()
        stores[unit] = store
        summary.units[unit] = UnitSummary(unit, url, {d: 0 for d in store.mapping.tables})

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=False,
    )
    try:
        with bar, summary.labels_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["uscc", "default"])
            task = bar.add_task("enterprises", total=enterprises)
            for pop in iter_population(enterprises, seed, CHUNK):
                for unit, store in stores.items():
                    bar.update(task, description=f"writing {unit}")
                    for ds_id in store.mapping.tables:
                        summary.units[unit].rows[ds_id] += store.write_columns(
                            ds_id, build(ds_id, pop)
                        )
                labelled = pop["samr"]
                defaults = draw_defaults(pop)
                writer.writerows(
                    zip(
                        pop["uscc"][labelled].tolist(),
                        defaults[labelled].astype(int).tolist(),
                        strict=True,
                    )
                )
                summary.labelled += int(labelled.sum())
                summary.defaults += int(defaults[labelled].sum())
                if len(summary.sample_usccs) < 3:
                    companies = pop["uscc"][
                        (pop["kind"] == COMPANY) & (pop["reg_status"] == "active")
                    ]
                    summary.sample_usccs.extend(companies[: 3 - len(summary.sample_usccs)].tolist())
                bar.update(task, advance=pop.n)
            bar.update(task, description="done")
    finally:
        for store in stores.values():
            store.close()
    summary.seconds = time.perf_counter() - started
    return summary
