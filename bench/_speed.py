"""How fast this machine is right now, for reading a benchmark's figures.

A shared 2-core virtual machine does not run at one speed: on the same code, the same
benchmark has measured a single verification's CPU at 8.1 ms and, forty minutes later,
10.5 ms.  Each online benchmark therefore prints this probe before and after its rows,
so that figures from different runs (and machines) can be compared on their own terms:

* ``gmp_ms``: one 2048-bit Paillier CRT decryption with the constant-time exponentiation
  the platform uses (``PaillierKeys.decrypt``), median of ``repeat``;
* ``python_ms``: a fixed pure-Python workload (dict, str and int operations, about the
  mix of the request paths), median of ``repeat``;
* ``wakeup_us``: one round trip of a byte between this process and a child over two
  pipes, median of batches.  Every hop of a request (a gRPC call between daemons, a
  worker thread, a commit) waits for another process or thread to be woken, and on a
  virtual machine that costs what the hypervisor makes it cost, which neither of the
  other two figures sees: two machines with the same ``gmp_ms`` and ``python_ms`` have
  run the federation's online rows a third apart (``docs/performance-history.md``).

Reference values: the AMD EPYC machine of the 2026-12-06 ninth session, on which every
target was measured (``docs/performance.md``), read ``gmp_ms`` 2.5-2.7, ``python_ms``
0.56-0.65 and ``wakeup_us`` 40-54; the Intel machine of the seventh session ``gmp_ms``
3.0-3.2, ``python_ms`` 0.73-0.81 and ``wakeup_us`` 71-86, and ran the online rows a
third slower (``docs/performance-history.md``).  On bare metal a cross-core wake-up
round trip takes a few microseconds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from veil.crypto import PaillierKeys, encrypt

_KEYS: PaillierKeys | None = None


@dataclass(frozen=True)
class Speed:
    gmp_ms: float
    python_ms: float
    wakeup_us: float

    def __str__(self) -> str:
        return (
            f"decrypt (CRT, 2048-bit) {self.gmp_ms:.2f} ms, Python workload {self.python_ms:.2f} ms"
            f", process wake-up round trip {self.wakeup_us:.0f} µs"
        )


def _python_workload() -> int:
    total = 0
    table: dict[str, int] = {}
    for i in range(4000):
        key = f"field_{i % 97}"
        table[key] = table.get(key, 0) + i
        total += len(key) * (i & 7)
    return total + sum(table.values())


_ECHO = (
    "import os\n"
    "while True:\n"
    "    b = os.read(0, 1)\n"
    "    if not b:\n"
    "        break\n"
    "    os.write(1, b)\n"
)


def _wakeup_us(batches: int = 5, per_batch: int = 400) -> float:
    """Median over ``batches`` of the mean pipe round trip to a child process, in µs.

    The two processes are pinned to different cores while they measure (where there are
    two): a wake-up on the same core is a mere context switch, and which one the
    scheduler picked would otherwise decide the figure."""
    child = subprocess.Popen(
        [sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    assert child.stdin is not None and child.stdout is not None
    send, receive = child.stdin.fileno(), child.stdout.fileno()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        os.sched_setaffinity(0, {cores[0]})
        os.sched_setaffinity(child.pid, {cores[1]})
    try:
        means = []
        for _ in range(batches + 1):  # the first batch warms the child up
            t0 = time.perf_counter()
            for _ in range(per_batch):
                os.write(send, b"x")
                os.read(receive, 1)
            means.append((time.perf_counter() - t0) / per_batch * 1e6)
        return statistics.median(means[1:])
    finally:
        os.sched_setaffinity(0, cores)
        child.stdin.close()
        child.wait()
        child.stdout.close()


def probe(repeat: int = 15) -> Speed:
    """Measure the machine now (about half a second)."""
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
    return Speed(statistics.median(gmp), statistics.median(python), _wakeup_us())
