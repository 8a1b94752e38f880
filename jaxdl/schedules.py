"""Learning-rate schedules as Optax schedules of the step count, constant within each epoch.

torch_reference.schedules builds the matching torch schedulers, stepped once per epoch:
- `constant`: lr every epoch.
- `cosine`: CosineAnnealingLR(T_max=epochs, eta_min): one half-cosine from lr to eta_min.
- `sgdr`: CosineAnnealingWarmRestarts(T_0=5, T_mult=1, eta_min): the report's choice; the
  half-cosine restarts from lr every T_0 epochs.
With the epoch e counted from 0, cosine gives eta_min + (lr - eta_min) (1 + cos(pi e / T)) / 2
with T = epochs (cosine) or T = T_0 and e taken modulo T_0 (sgdr).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["ETA_MIN", "SCHEDULES", "T_0", "epoch_lrs", "make_schedule"]

SCHEDULES = ("constant", "cosine", "sgdr")
T_0 = 5  # epochs between warm restarts (report: every 5 epochs)
ETA_MIN = 1e-4  # report: minimum learning rate 0.0001; also the floor of `cosine`


def _epoch_schedule(name: str, lr: float, epochs: int, t_0: int, eta_min: float) -> optax.Schedule:
    """The learning rate as a function of the epoch index (0-based)."""
    if name == "constant":
        return optax.constant_schedule(lr)

    # Written out rather than optax.cosine_decay_schedule, which clips at decay_steps: torch's
    # CosineAnnealingLR keeps following the cosine past T_max, and so does this.
    def half_cosine(t: jax.Array, period: int) -> jax.Array:
        # The epoch index is an integer (Optax's int32 count // steps_per_epoch): cast it
        # explicitly, so that the schedule also runs under strict dtype promotion.
        t = jnp.asarray(t, dtype=float)
        return eta_min + (lr - eta_min) * (1 + jnp.cos(jnp.pi * t / period)) / 2

    if name == "cosine":
        return lambda epoch: half_cosine(epoch, epochs)
    if name == "sgdr":
        return lambda epoch: half_cosine(epoch % t_0, t_0)
    raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")


def make_schedule(
    name: str,
    lr: float,
    *,
    epochs: int,
    steps_per_epoch: int,
    t_0: int = T_0,
    eta_min: float = ETA_MIN,
) -> optax.Schedule:
    """An Optax schedule of the optimizer step count, piecewise constant over each epoch.

    Args:
      name: "constant", "cosine" or "sgdr".
      lr: the initial (maximum) learning rate.
      epochs: the run's length (the period of `cosine`).
      steps_per_epoch: optimizer steps per epoch; step `count` belongs to epoch
        count // steps_per_epoch, as with a torch scheduler stepped after each epoch.
      t_0, eta_min: the restart period (epochs) and the floor of the cosine schedules.
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    per_epoch = _epoch_schedule(name, lr, epochs, t_0, eta_min)
    return lambda count: per_epoch(jnp.asarray(count) // steps_per_epoch)


def epoch_lrs(
    name: str, lr: float, epochs: int, *, t_0: int = T_0, eta_min: float = ETA_MIN
) -> np.ndarray:
    """The learning rate of each epoch 0..epochs-1 in closed form (float64), for tests and plots."""
    e = np.arange(epochs, dtype=np.float64)
    if name == "constant":
        return np.full(epochs, lr)
    if name == "cosine":
        return eta_min + (lr - eta_min) * (1 + np.cos(math.pi * e / epochs)) / 2
    if name == "sgdr":
        return eta_min + (lr - eta_min) * (1 + np.cos(math.pi * (e % t_0) / t_0)) / 2
    raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
