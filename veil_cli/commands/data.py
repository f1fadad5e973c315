"""``veil data generate``: write a synthetic population into every provider unit's store.

    veil data generate --out DIR [--enterprises 10000] [--seed 7]
                       [--units tax,social_insurance,...] [--url UNIT=URL ...]

Writes ``DIR/<unit>.db`` (SQLite) for each selected unit, or the given SQLAlchemy URLs,
laid out by each unit's own mapping, and ``DIR/labels.csv`` (``uscc,default``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from veil.errors import InvalidArgument
from veil.synth import GenerationSummary, write_population

__all__ = ["add_parser", "generate_to_dir", "parse_urls", "run"]


def generate_to_dir(
    out: Path,
    enterprises: int,
    seed: int,
    units: Sequence[str] | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Generate ``enterprises`` enterprises into SQLite stores under ``out`` (demo entry point)."""
    return write_population(Path(out), enterprises, seed, units=units, progress=progress)


def parse_urls(items: Sequence[str]) -> dict[str, str]:
    """``["tax=postgresql+psycopg://..."]`` -> ``{"tax": "postgresql+psycopg://..."}``."""
    urls: dict[str, str] = {}
    for item in items:
        unit, sep, url = item.partition("=")
        if not sep or not unit or not url:
            raise InvalidArgument(f"--url must look like UNIT=URL, got {item!r}")
        if unit in urls:
            raise InvalidArgument(f"--url given twice for unit {unit!r}")
        urls[unit] = url
    return urls


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="synthetic provider data")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    gen = sub.add_parser(
        "generate",
        help="write a synthetic enterprise population into each provider's store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--out", required=True, type=Path, help="output directory")
    gen.add_argument(
        "--enterprises", type=_positive, default=10_000, help="number of enterprises (10000)"
    )
    gen.add_argument("--seed", type=int, default=7, help="random seed (7)")
    gen.add_argument(
        "--units",
        default=None,
        help="comma-separated provider units (default: all 14)",
    )
    gen.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="UNIT=URL",
        help="store a unit in this SQLAlchemy URL instead of DIR/<unit>.db (repeatable)",
    )
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    gen.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from veil_cli.render import console

    units = [u.strip() for u in args.units.split(",") if u.strip()] if args.units else None
    summary = write_population(
        Path(args.out),
        args.enterprises,
        args.seed,
        units=units,
        urls=parse_urls(args.url),
        progress=not args.no_progress,
        console=console,
    )
    for line in summary.lines():
        console.print(line, highlight=False)
    return 0
