"""``veil``: entry point.  Each subcommand lives in ``veil_cli.commands.<name>`` and
exposes ``add_parser(subparsers)`` and ``run(args) -> int``.

Exit codes: 0 success, 1 a failed operation (the error is printed), 2 bad usage or a
malformed configuration file (one line naming the file and the key).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from veil.errors import ConfigError, VeilError

COMMANDS = (
    "certs",
    "data",
    "provider",
    "platform",
    "gateway",
    "demo",
    "lookup",
    "catalog",
    "status",
    "audit",
    "keygen",
    "eia",
    "institution",
    "enterprise",
    "letter",
    "fetch",
    "verify",
    "train",
    "model",
    "score",
    "db",
)


def version_text() -> str:
    """What an operator quotes: the package, the wire contract and the schema revisions
    this installation builds (``veil db current`` shows a database's)."""
    from importlib.metadata import PackageNotFoundError, version

    from platform_node.schema_history import PLATFORM_SCHEMA
    from provider_node.schema_history import PROVIDER_SCHEMA

    try:
        package = version("veil")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree
        package = "(not installed)"
    return (
        f"veil {package} (wire veil.v1; schema revisions: platform "
        f"{PLATFORM_SCHEMA.head()}, provider {PROVIDER_SCHEMA.head()})"
    )


class _VersionAction(argparse.Action):
    """``--version``, computed only when asked (reading the revisions takes a moment)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="veil",
        description="Veil: a privacy-preserving 'usable but invisible' credit data gateway.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument(
        "--version", action=_VersionAction, nargs=0, help="print the version and exit"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"veil_cli.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.run(args)
        return code
    except ConfigError as exc:
        print(f"veil: config error: {exc.message}", file=sys.stderr)
        return 2
    except VeilError as exc:
        print(f"veil: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
