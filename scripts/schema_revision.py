#!/usr/bin/env python3
"""Write the next schema revision of a node from what its code now defines.

    python scripts/schema_revision.py platform "grants carry a channel"
    python scripts/schema_revision.py provider "ledger rows keep the model version"

Builds a scratch SQLite database from the existing revisions, compares it with the
tables the code defines (Alembic autogenerate) and writes the difference as a new
revision under ``<node>_node/migrations/versions/``.  Read and edit it before you
commit it: autogenerate does not see renames, and data migrations are yours to write.
``tests/test_migrations.py`` fails until the revisions build what the code defines.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from platform_node.schema_history import PLATFORM_SCHEMA
from provider_node.schema_history import PROVIDER_SCHEMA
from veil.migrations import upgrade_schema
from veil.store import make_engine

HISTORIES = {"platform": PLATFORM_SCHEMA, "provider": PROVIDER_SCHEMA}


def main(node: str, message: str) -> None:
    history = HISTORIES[node]
    script = history.script()
    count = len(list(script.walk_revisions()))
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}")
        if count:
            upgrade_schema(engine, history)
        with engine.connect() as connection:
            command.revision(
                history.config(connection),
                message=message,
                autogenerate=True,
                rev_id=f"{count + 1:04d}",
            )
        engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in HISTORIES:
        raise SystemExit(f"usage: {sys.argv[0]} {{platform|provider}} MESSAGE")
    main(sys.argv[1], sys.argv[2])
