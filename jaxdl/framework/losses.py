"""Losses as forward/backward pairs: mean squared error, as torch.nn.functional.mse_loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["mse_loss", "mse_loss_backward"]


def mse_loss(pred: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean over all elements of (pred - target)^2.

    Returns:
        (loss, cache): a scalar and the residual pred - target that the backward needs.
    """
    if pred.shape != target.shape:
        # Silent broadcasting of (n, 1) against (n,) is the classic MSE bug: refuse it.
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    diff = pred - target
    return jnp.mean(diff * diff), diff


def mse_loss_backward(cache: jax.Array) -> jax.Array:
    """d loss / d pred = 2 (pred - target) / n_elements."""
    return cache * (2.0 / cache.size)
