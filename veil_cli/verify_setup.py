"""Verification set-up for a local federation (``veil demo``, the tests, the benchmark).

:func:`prepare_verification` runs inside :meth:`Federation.prepare` and adds:

* to every provider: ``[verification] answer_key`` (its Ed25519 answer-signing key) and
  ``[masks] key`` (its X25519 mask key), both 0600 files under ``keys/``, created by the
  node on first start;
* to the platform: ``[verification]`` with its Paillier key file (2048 bits, generated
  on first start), the default budget and cache lifetime.

``platform`` overrides or adds platform settings (the benchmark enables
``plaintext_baseline`` and raises the budget).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from veil_cli.authz_setup import KEYS, _update

PAILLIER_KEY = "platform-paillier.key"
PAILLIER_BITS = 2048


def prepare_verification(fed: Any, platform: Mapping[str, Any] | None = None) -> None:
    for node in fed.nodes:
        config = fed.configs / f"{node.name}.toml"
        if node.role == "provider":
            _update(config, "verification", {"answer_key": f"../{KEYS}/{node.name}-answer.key"})
            _update(config, "masks", {"key": f"../{KEYS}/{node.name}-mask.key"})
        elif node.role == "platform":
            values: dict[str, Any] = {
                "paillier_key": f"../{KEYS}/{PAILLIER_KEY}",
                "paillier_bits": PAILLIER_BITS,
            }
            values.update(platform or {})
            _update(config, "verification", values)
