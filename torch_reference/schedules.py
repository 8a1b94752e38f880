"""The learning-rate schedulers of jaxdl.schedules as torch schedulers, stepped once per epoch."""

from __future__ import annotations

import torch
from torch.optim import lr_scheduler

__all__ = ["ETA_MIN", "SCHEDULES", "T_0", "make_scheduler"]

SCHEDULES = ("constant", "cosine", "sgdr")
T_0 = 5  # epochs between warm restarts (report: every 5 epochs)
ETA_MIN = 1e-4  # report: minimum learning rate 0.0001; also the floor of `cosine`


def make_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    t_0: int = T_0,
    eta_min: float = ETA_MIN,
) -> lr_scheduler.LRScheduler:
    """The torch scheduler for `name`; call its `step()` once after each epoch.

    Args:
      name: "constant", "cosine" (CosineAnnealingLR, T_max=epochs) or "sgdr"
        (CosineAnnealingWarmRestarts, T_0=t_0, T_mult=1).
      optimizer: whose learning rate (its initial `lr`) the scheduler drives.
      epochs: the run's length (the period of `cosine`).
      t_0, eta_min: the restart period (epochs) and the floor of the cosine schedules.
    """
    if name == "constant":
        return lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=eta_min)
    if name == "sgdr":
        return lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=t_0, T_mult=1, eta_min=eta_min
        )
    raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
