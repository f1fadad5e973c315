"""Veil: a privacy-preserving "usable but invisible" (数据可用不可见) gateway.

This package holds what more than one node needs: the annex catalog, encodings,
crypto compositions, tokens, Merkle code, configuration and server bootstrap.
Nothing here knows about a single node.
"""

__version__ = "0.1.0"
