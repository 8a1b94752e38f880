"""Optimizers as (init, update) pairs of pure functions on params/grads pytrees, as in Optax."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Optimizer", "SGDState", "constant_lr", "cosine_lr", "sgd"]

Params = Any
Schedule = Callable[[jax.Array], jax.Array]


class SGDState(NamedTuple):
    """step counts updates done (drives the schedule); velocity is () without momentum."""

    step: jax.Array
    velocity: Params


class Optimizer(NamedTuple):
    """init(params) -> state; update(grads, state, params) -> (new_params, new_state)."""

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params], tuple[Params, Any]]


def constant_lr(lr: float) -> Schedule:
    """The same learning rate at every step."""
    return lambda step: jnp.asarray(lr)


def cosine_lr(lr: float, total_steps: int, final_fraction: float = 0.0) -> Schedule:
    """Cosine decay from lr to lr * final_fraction over total_steps, then flat.

    torch_reference.framework.cosine_lr is the same formula in Python floats.
    """

    def schedule(step: jax.Array) -> jax.Array:
        t = jnp.minimum(step, total_steps) / max(total_steps, 1)
        cos = 0.5 * (1.0 + jnp.cos(math.pi * t))
        return lr * (final_fraction + (1.0 - final_fraction) * cos)

    return schedule


def sgd(lr: float | Schedule, momentum: float = 0.0) -> Optimizer:
    """Stochastic gradient descent, with torch.optim.SGD's momentum convention.

    v <- momentum * v + g;  p <- p - lr(step) * v   (plain p <- p - lr * g when momentum is 0)

    Args:
        lr: a float, or a schedule step -> learning rate (step counts from 0).
        momentum: heavy-ball coefficient in [0, 1).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    schedule = lr if callable(lr) else constant_lr(lr)

    def init(params: Params) -> SGDState:
        velocity = jax.tree.map(jnp.zeros_like, params) if momentum else ()
        return SGDState(jnp.zeros((), jnp.int32), velocity)

    def update(grads: Params, state: SGDState, params: Params) -> tuple[Params, SGDState]:
        rate = schedule(state.step)
        if momentum:
            velocity = jax.tree.map(lambda v, g: momentum * v + g, state.velocity, grads)
        else:
            velocity = ()
        direction = velocity if momentum else grads
        # The rate is rounded to the parameters' dtype and (rate * d) is rounded before the
        # subtraction, as torch's `p -= lr * g` does, so float32 runs of the two frameworks
        # agree to the last bit wherever their matmuls do.
        new_params = jax.tree.map(lambda p, d: p - rate.astype(p.dtype) * d, params, direction)
        return new_params, SGDState(state.step + 1, velocity)

    return Optimizer(init, update)
