"""``veil db``: the schema of a node's own tables (see :mod:`veil.migrations`).

    veil db current --config platform.toml     # the revision the database is at
    veil db upgrade --config platform.toml     # bring it to this version's revision
    veil db check   --config provider.toml     # exit 1 unless it is there

Run with the node's own configuration file: the platform's ``[store] url``, a
provider's ``[ledger] url`` (by default its ``[store] url``).  A daemon upgrades its
database itself when it starts, unless ``[store] schema = "check"``; then ``veil db
upgrade`` is the step an operator runs, after a backup, before starting the new version.
"""

from __future__ import annotations

import argparse
import json

from provider_node.ledger import ledger_url
from veil.config import NodeConfig, load_node_config
from veil.errors import ConfigError, FailedPrecondition
from veil.migrations import SchemaHistory, revision_at, upgrade_schema


def _target(config: NodeConfig) -> tuple[SchemaHistory, str]:
    if config.role == "platform":
        from platform_node.schema_history import PLATFORM_SCHEMA

        if not config.store_url:
            raise ConfigError(str(config.path), "store.url", "is required for the platform")
        return PLATFORM_SCHEMA, config.store_url
    if config.role == "provider":
        from provider_node.schema_history import PROVIDER_SCHEMA

        return PROVIDER_SCHEMA, ledger_url(config)
    raise ConfigError(
        str(config.path), "node.role", f"a {config.role} keeps no tables: nothing to migrate"
    )


def _state(history: SchemaHistory, url: str) -> dict[str, str | None]:
    return {"node": history.node, "revision": revision_at(url, history), "head": history.head()}


def run(args: argparse.Namespace) -> int:
    history, url = _target(load_node_config(args.config))
    if args.action == "upgrade":
        before, head = upgrade_schema(url, history)
        state: dict[str, str | None] = {"node": history.node, "revision": head, "head": head}
        if not args.json:
            print(f"{history.node} schema: {before or 'none'} -> {head}")
    else:
        state = _state(history, url)
        if args.action == "check" and state["revision"] != state["head"]:
            raise FailedPrecondition(
                f"the {history.node} database is at {state['revision'] or 'no revision'}, "
                f"this version needs {state['head']}: run `veil db upgrade --config "
                f"{args.config}`"
            )
        if not args.json:
            at = state["revision"] or "none (an empty database, or one made before versions)"
            print(f"{history.node} schema: {at}; this version's: {state['head']}")
    if args.json:
        print(json.dumps(state))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("db", help="the schema of a node's own tables")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, help_text in (
        ("current", "the schema revision the node's database is at"),
        ("upgrade", "bring the node's database to this version's schema"),
        ("check", "fail unless the node's database is at this version's schema"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument("--config", required=True, help="the node's TOML configuration file")
        sub.add_argument("--json", action="store_true", help="print the state as JSON")
        sub.set_defaults(run=run)
