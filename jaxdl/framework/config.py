"""The Project II recipe shared by both framework scripts and trainers (no JAX, no torch import)."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["INPUTS", "N_POINTS", "OUTPUTS", "SCHEDULES", "FrameworkConfig"]

N_POINTS = 1000  # training points, and as many test points (the course's task)
OUTPUTS = (1, 2)
SCHEDULES = ("constant", "cosine")
INPUTS = ("standardised", "raw")


@dataclasses.dataclass(frozen=True)
class FrameworkConfig:
    """`runs` runs of the disk task, run r seeded with `seed + r` (data, initialisation, order).

    Defaults: the course's task (50 epochs, batch 1, 10 runs) and docs/PROJECT2.md's choices
    (the report's 1-output Tanh variant, lr 0.03 with cosine decay; inputs are standardised).
    """

    output: int = 1
    epochs: int = 50
    runs: int = 10
    batch_size: int = 1
    lr: float = 0.03
    schedule: str = "cosine"
    momentum: float = 0.0
    inputs: str = "standardised"
    seed: int = 0

    def run_seed(self, run: int) -> int:
        return self.seed + run

    @property
    def steps_per_epoch(self) -> int:
        # Drop-last: every step has one shape (lax.scan); the order is reshuffled every epoch.
        return N_POINTS // self.batch_size

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
