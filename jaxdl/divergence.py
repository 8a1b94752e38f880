"""Where a Project I run diverged: the first non-finite loss, named by run, epoch and step.

Framework-neutral (NumPy only), shared by jaxdl.train and torch_reference.train.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["is_finite", "divergence"]


def is_finite(*losses: float) -> bool:
    """True when every loss is a finite number."""
    return bool(np.all(np.isfinite(np.asarray(losses, dtype=np.float64))))


def divergence(
    model: str,
    run: int,
    seed: int,
    epoch: int,
    step_losses: Sequence[float] | np.ndarray,
    eval_losses: dict[str, float],
) -> dict[str, Any]:
    """The fields a diverged run's record gets, with a one-line message.

    Args:
      model, run, seed: the run (`run` 0-based).
      epoch: the 0-based epoch whose losses were not finite.
      step_losses: the epoch's per-step training losses (train mode), in order.
      eval_losses: the losses measured after the epoch, e.g. {"test_loss": ...}.

    Returns:
      {"diverged": True, "diverged_epoch": e, "diverged_step": s or None, "diverged_message"}:
      `e` 1-based, `s` the 1-based step within the epoch of the first non-finite training loss;
      None when every step was finite and only the evaluation after the epoch was not.
    """
    losses = np.asarray(step_losses, dtype=np.float64).ravel()
    bad = np.flatnonzero(~np.isfinite(losses))
    where = f"{model} run {run + 1} (seed {seed}) diverged at epoch {epoch + 1}"
    if bad.size:
        step = int(bad[0]) + 1
        where += (
            f", step {step} of {losses.size} (global step {epoch * losses.size + step}): "
            f"training loss {losses[bad[0]]}"
        )
    else:
        step = None
        name, value = next((k, v) for k, v in eval_losses.items() if not is_finite(v))
        where += f", in the evaluation after its last step: {name} {value}"
    return {
        "diverged": True,
        "diverged_epoch": epoch + 1,
        "diverged_step": step,
        "diverged_message": where + "; the run was stopped",
    }
