"""The platform's persistent registries for authorization (issue 3): pure persistence + rules.

* :mod:`.institutions`: access institutions (接入机构) — identity, JWKS, onboarding state
  with its history, allowed purposes, daily quotas (:mod:`.quota`).
* :mod:`.grants`: enterprise grants (经企业授权), their uses, revocations (numbered for
  providers to poll) and written letters (授权书, :mod:`.letters`).
* :mod:`.replay`: one-time token ids (client assertion ``jti``) with expiry.
* :mod:`.schema`: the tables, UTC time handling, transactions and ``registry_events``, the
  record of every change.

No gRPC here, and everything is synchronous: async callers wrap calls in
``asyncio.to_thread``.  Every mutation is one transaction (nothing is ever half-written)
and appends its ``registry_events`` row in that same transaction.  Every method takes an
optional aware ``now`` so tests and replays are deterministic.
"""

from platform_node.registry.grants import GrantRecord, GrantRegistry, GrantUse, RevocationEntry
from platform_node.registry.institutions import (
    INSTITUTION_TYPES,
    STATES,
    TRANSITIONS,
    Institution,
    InstitutionRegistry,
    StateChange,
    check_institution_id,
)
from platform_node.registry.letters import Letter
from platform_node.registry.replay import ReplayGuard
from platform_node.registry.schema import RegistryEvent, create_schema, list_events

__all__ = [
    "INSTITUTION_TYPES",
    "STATES",
    "TRANSITIONS",
    "GrantRecord",
    "GrantRegistry",
    "GrantUse",
    "Institution",
    "InstitutionRegistry",
    "Letter",
    "RegistryEvent",
    "ReplayGuard",
    "RevocationEntry",
    "StateChange",
    "check_institution_id",
    "create_schema",
    "list_events",
]
