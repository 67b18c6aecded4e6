"""Masked-base prediction scores, the same for the model and every baseline."""

from dataclasses import dataclass

import numpy as np


@dataclass
class MaskedScore:
    """Running sums over scored bases: -log2 P(true base), correct argmax calls, count."""

    bits: float = 0.0
    correct: int = 0
    count: int = 0

    def add(self, log2_probs: np.ndarray, targets: np.ndarray):
        """log2_probs (n, 4) over A, C, G, T; targets (n,) base ids 0..3."""
        rows = np.arange(len(targets))
        self.bits -= float(log2_probs[rows, targets].sum())
        self.correct += int((log2_probs.argmax(-1) == targets).sum())
        self.count += len(targets)

    @property
    def bits_per_base(self) -> float:
        return self.bits / self.count if self.count else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    def to_dict(self) -> dict:
        return {"bits_per_base": self.bits_per_base, "accuracy": self.accuracy, "scored_bases": self.count}
