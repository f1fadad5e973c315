"""The provider section of a node's configuration."""

from __future__ import annotations

from dataclasses import dataclass

from veil.config import NodeConfig
from veil.errors import ConfigError


@dataclass(frozen=True)
class ProviderSettings:
    unit: str
    mapping: str  # a mapping file path, or "builtin:<unit>" for the packaged one
    export_batch_size: int = 1000


def provider_settings(config: NodeConfig) -> ProviderSettings:
    section = config.section("provider")
    unit = section.get("unit", config.name)
    if not isinstance(unit, str) or not unit:
        raise ConfigError(str(config.path), "provider.unit", "must be a provider unit id")
    mapping = config.section("store").get("mapping", f"builtin:{unit}")
    if not isinstance(mapping, str) or not mapping:
        raise ConfigError(str(config.path), "store.mapping", "must be a path or builtin:<unit>")
    if not mapping.startswith("builtin:") and not mapping.startswith("/"):
        mapping = str(config.path.parent / mapping)
    batch = section.get("export_batch_size", 1000)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 100_000:
        raise ConfigError(
            str(config.path), "provider.export_batch_size", "must be an integer 1..100000"
        )
    if not config.store_url:
        raise ConfigError(str(config.path), "store.url", "is required for a provider")
    return ProviderSettings(unit=unit, mapping=mapping, export_batch_size=batch)
