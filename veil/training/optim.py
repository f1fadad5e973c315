"""Per-party optimisers: each party updates only its own coordinates.

Adam and plain SGD are coordinate-wise, so running them separately at every party with
its own gradient block is exactly the centralised optimiser on the concatenated weight
vector — no party needs another's weights, moments or gradients.

Update at step ``t`` of epoch ``e`` with ``η_e = η_0 / (1 + decay·e)`` and the penalised
gradient ``ĝ = g + λ·w`` (``λ`` zero for the intercept):

* SGD:  ``w ← w − η_e·ĝ``
* Adam: ``m ← β1·m + (1−β1)·ĝ``, ``v ← β2·v + (1−β2)·ĝ²``,
  ``w ← w − η_e·m̂ / (√v̂ + ε)`` with bias-corrected ``m̂``, ``v̂`` (β1 = 0.9, β2 = 0.999,
  ε = 1e-8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@dataclass
class Optimizer:
    kind: str
    learning_rate: float
    lr_decay: float
    l2: float
    penalised: F64
    m: F64 = field(default_factory=lambda: np.zeros(0))
    v: F64 = field(default_factory=lambda: np.zeros(0))
    t: int = 0

    @classmethod
    def create(
        cls, kind: str, learning_rate: float, lr_decay: float, l2: float, penalised: F64
    ) -> Optimizer:
        n = len(penalised)
        return cls(kind, learning_rate, lr_decay, l2, penalised, np.zeros(n), np.zeros(n))

    def step(self, w: F64, grad: F64, epoch: int) -> F64:
        g = grad + self.l2 * self.penalised * w
        lr = self.learning_rate / (1.0 + self.lr_decay * epoch)
        self.t += 1
        if self.kind == "sgd":
            return w - lr * g
        self.m = BETA1 * self.m + (1 - BETA1) * g
        self.v = BETA2 * self.v + (1 - BETA2) * g * g
        m_hat = self.m / (1 - BETA1**self.t)
        v_hat = self.v / (1 - BETA2**self.t)
        out: F64 = w - lr * m_hat / (np.sqrt(v_hat) + EPS)
        return out

    def state(self) -> dict[str, Any]:
        return {"m": self.m.tolist(), "v": self.v.tolist(), "t": self.t}

    def load_state(self, raw: dict[str, Any]) -> None:
        self.m = np.asarray(raw["m"], dtype=np.float64)
        self.v = np.asarray(raw["v"], dtype=np.float64)
        self.t = int(raw["t"])
