"""Key rotation is logged: a changed key set appends a key.rotated entry, an unchanged one not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from platform_node.audit import AuditLog, log_settings
from platform_node.key_events import record_key_changes
from veil.audit.entry import decode_entry
from veil.config import load_node_config
from veil.store import make_engine


def test_key_changes_are_logged_once(tmp_path: Path) -> None:
    config_path = tmp_path / "platform.toml"
    config_path.write_text(
        '[node]\nrole = "platform"\nname = "platform"\n[tls]\ninsecure = true\n'
        '[store]\nurl = "sqlite:///p.db"\n'
    )
    config = load_node_config(config_path, environ={})

    async def scenario() -> list[str]:
        audit = await AuditLog.open(config.store_url, log_settings(config), actor="platform/p")
        engine = make_engine(config.store_url)
        try:
            await record_key_changes(engine, audit, {"tokens": ["a1"], "log": ["b1"]})
            await record_key_changes(engine, audit, {"tokens": ["a1"], "log": ["b1"]})
            await record_key_changes(engine, audit, {"tokens": ["a2", "a1"], "log": ["b1"]})
            size = await asyncio.to_thread(audit.store.size)
            leaves = await asyncio.to_thread(audit.store.entries, 0, size)
        finally:
            await audit.close()
        return [str(decode_entry(leaf).detail.get("kids")) for leaf in leaves]

    kids = asyncio.run(scenario())
    assert kids == ["kid:b1", "kid:a1", "kid:a1,kid:a2"]
