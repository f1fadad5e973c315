"""The persistent, append-only RFC 9162 transparency log behind SQLAlchemy.

See :mod:`veil.tlog.store` for the storage layout and its guarantees;
:mod:`veil._internal.merkle` for the tree maths; :mod:`veil.checkpoint` for signed
checkpoints.
"""

from veil.tlog.store import LogStore

__all__ = ["LogStore"]
