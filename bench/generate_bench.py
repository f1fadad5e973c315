"""Synthetic data generation benchmark: enterprises/s and rows/s into SQLite stores.

Run from the repository root::

    python bench/generate_bench.py                          # 10,000 and 100,000 enterprises
    python bench/generate_bench.py --sizes 1000000          # the 1M requirement (minutes)
    python bench/generate_bench.py --sizes 10000 --units tax,utilities

Prints one table: for each size, wall time, rows written over all selected units,
throughput and the size of the stores on disk.  Each run writes into a fresh temporary
directory that is removed afterwards.  Target (issue 2): 10,000 enterprises in seconds;
1,000,000 must work.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from veil.synth import write_population


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated sizes")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--units", default=None, help="comma-separated units (default: all)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    units = args.units.split(",") if args.units else None
    console = Console()
    table = Table(title="veil data generate (SQLite, all selected units)")
    for col in ("enterprises", "seconds", "rows", "enterprises/s", "rows/s", "disk MB"):
        table.add_column(col, justify="right")
    for n in sizes:
        out = Path(tempfile.mkdtemp(prefix="veil-gen-bench-"))
        try:
            summary = write_population(out, n, args.seed, units=units, progress=True)
            rows = sum(u.total_rows for u in summary.units.values())
            disk = sum(p.stat().st_size for p in out.iterdir()) / 1e6
            table.add_row(
                f"{n:,}",
                f"{summary.seconds:.1f}",
                f"{rows:,}",
                f"{n / summary.seconds:,.0f}",
                f"{rows / summary.seconds:,.0f}",
                f"{disk:,.0f}",
            )
        finally:
            shutil.rmtree(out, ignore_errors=True)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
