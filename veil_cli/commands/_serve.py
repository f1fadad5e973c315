"""Shared shape of ``veil provider|platform|gateway serve --config FILE``."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from veil.config import NodeConfig, load_node_config
from veil.errors import ConfigError
from veil.server import run_daemon

ServeFn = Callable[[NodeConfig], Coroutine[Any, Any, None]]


def add_serve_parser(
    subparsers: argparse._SubParsersAction, role: str, help_text: str, serve: Callable[[], ServeFn]
) -> argparse._SubParsersAction:
    """Add ``veil ROLE serve``; returns the ROLE's actions so others can be added."""
    parser = subparsers.add_parser(role, help=help_text)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("serve", help=f"run the {role} daemon until SIGTERM")
    run.add_argument("--config", required=True, help="the node's TOML configuration file")
    run.add_argument(
        "--insecure",
        action="store_true",
        help="DANGER: turn TLS off (plaintext, unauthenticated peers); debugging only",
    )

    def _run(args: argparse.Namespace) -> int:
        env = {**os.environ, **({"VEIL_TLS_INSECURE": "true"} if args.insecure else {})}
        config = load_node_config(args.config, environ=env)
        if config.role != role:
            raise ConfigError(
                str(config.path), "node.role", f"is {config.role!r}, expected {role!r}"
            )
        if config.tls.insecure:
            logging.getLogger("veil").warning(
                "!!! TLS IS OFF for %s %s: peers are NOT authenticated and traffic is "
                "PLAINTEXT. Never run like this outside a debugger. !!!",
                role,
                config.name,
            )
        run_daemon(serve()(config), event_loop=config.event_loop)
        return 0

    run.set_defaults(run=_run)
    return actions
