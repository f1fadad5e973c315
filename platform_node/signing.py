"""The platform's signing keys: request tokens to providers (and, later, signed results).

Configured as ``[authorization] token_keys = ["keys/platform-2026.key", ...]``: the first
key signs, every key is published in the JWKS, so a key can be rotated by prepending a
new one and dropping the old one after the longest token lifetime (120 s) has passed.
Key files must be mode 0600; they are never logged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from veil.config import NodeConfig
from veil.errors import ConfigError
from veil.tokens import KeySet, RequestClaims, SigningKey, issue_request_token


class PlatformKeys:
    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self.keys = tuple(keys)

    @property
    def current(self) -> SigningKey:
        return self.keys[0]

    def keyset(self) -> KeySet:
        return KeySet.of(*(k.verifying_key() for k in self.keys))

    def jwks_json(self) -> str:
        return json.dumps(self.keyset().to_jwks(), sort_keys=True)

    def request_token(self, claims: RequestClaims) -> str:
        return issue_request_token(self.current, claims)


def load_platform_keys(config: NodeConfig) -> PlatformKeys:
    section = config.section("authorization")
    paths = section.get("token_keys")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise ConfigError(
            str(config.path), "authorization.token_keys", "must be a non-empty list of key files"
        )
    keys = []
    for i, raw in enumerate(paths):
        path = Path(raw) if Path(raw).is_absolute() else config.path.parent / raw
        if not path.exists():
            raise ConfigError(
                str(config.path), f"authorization.token_keys[{i}]", f"file {path} does not exist"
            )
        keys.append(SigningKey.load(path))
    return PlatformKeys(keys)
