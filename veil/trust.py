"""Trust anchors every node configures itself: the enterprise identity authority's keys.

Each node reads the EIA's public JWKS from its own configuration
(``[authorization] eia_jwks``), never from the platform: that is what lets a provider
verify an enterprise's grant without trusting the platform (docs/authorization.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from veil.config import NodeConfig
from veil.errors import ConfigError
from veil.tokens import KeySet


def load_eia_keys(config: NodeConfig) -> KeySet:
    """The enterprise identity authority's public keys (``[authorization] eia_jwks``)."""
    raw = config.section("authorization").get("eia_jwks")
    if not isinstance(raw, str) or not raw:
        raise ConfigError(str(config.path), "authorization.eia_jwks", "must be a JWKS file path")
    path = Path(raw) if Path(raw).is_absolute() else config.path.parent / raw
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            str(config.path), "authorization.eia_jwks", f"file {path} does not exist"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(str(config.path), "authorization.eia_jwks", f"not JSON: {exc}") from None
    return KeySet.from_jwks(doc, label="EIA")
