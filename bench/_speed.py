"""How fast this machine is right now, for reading a benchmark's figures.

A shared 2-core virtual machine does not run at one speed: on the same code, the same
benchmark has measured a single verification's CPU at 8.1 ms and, forty minutes later,
10.5 ms.  Each online benchmark therefore prints this probe before and after its rows,
so that figures from different runs (and machines) can be compared on their own terms:

* ``gmp_ms``: one 2048-bit Paillier CRT decryption with the constant-time exponentiation
  the platform uses (``PaillierKeys.decrypt``), median of ``repeat``;
* ``python_ms``: a fixed pure-Python workload (dict, str and int operations, about the
  mix of the request paths), median of ``repeat``.

Reference values: the AMD EPYC machine of the 2026-12-05 third session measured
``gmp_ms`` 3.56 and ``python_ms`` 0.76 at its quietest (``docs/performance.md``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from veil.crypto import PaillierKeys, encrypt

_KEYS: PaillierKeys | None = None


@dataclass(frozen=True)
class Speed:
    gmp_ms: float
    python_ms: float

    def __str__(self) -> str:
        return (
            f"decrypt (CRT, 2048-bit) {self.gmp_ms:.2f} ms, Python workload {self.python_ms:.2f} ms"
        )


def _python_workload() -> int:
    total = 0
    table: dict[str, int] = {}
    for i in range(4000):
        key = f"field_{i % 97}"
        table[key] = table.get(key, 0) + i
        total += len(key) * (i & 7)
    return total + sum(table.values())


def probe(repeat: int = 15) -> Speed:
    """Measure the machine now (about a quarter of a second)."""
    global _KEYS
    if _KEYS is None:
        _KEYS = PaillierKeys.generate(2048)
    keys = _KEYS
    ciphertext = encrypt(keys.public, 123456789)
    gmp, python = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        keys.decrypt(ciphertext)
        t1 = time.perf_counter()
        _python_workload()
        t2 = time.perf_counter()
        gmp.append((t1 - t0) * 1000)
        python.append((t2 - t1) * 1000)
    return Speed(statistics.median(gmp), statistics.median(python))
