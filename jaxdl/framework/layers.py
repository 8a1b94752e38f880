"""Layers as triples of pure functions (init, forward, backward), with hand-written gradients."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Layer",
    "LinearParams",
    "elementwise",
    "linear",
    "relu",
    "sequential",
    "sigmoid",
    "tanh",
]

Params = Any  # a pytree: LinearParams, () for parameter-free layers, a tuple for sequential
Cache = Any  # whatever forward keeps for backward


class Layer(NamedTuple):
    """A layer: three pure functions, no state.

    init(key, in_dim) -> (out_dim, params)
    forward(params, x) -> (y, cache)          x is (batch, in_dim), y is (batch, out_dim)
    backward(params, cache, dy) -> (dx, grads) grads has the structure of params
    """

    init: Callable[[jax.Array, int], tuple[int, Params]]
    forward: Callable[[Params, jax.Array], tuple[jax.Array, Cache]]
    backward: Callable[[Params, Cache, jax.Array], tuple[jax.Array, Params]]


class LinearParams(NamedTuple):
    """Weights stored (in_dim, out_dim) so that y = x @ w + b.

    torch_reference.framework.Linear stores the transpose, (out, in), as torch.nn.Linear does;
    `torch_reference.framework.load_params` / `export_params` are the one conversion.
    """

    w: jax.Array
    b: jax.Array


def linear(out_dim: int) -> Layer:
    """Fully connected layer y = x @ w + b.

    Initialisation is torch.nn.Linear's default: w and b uniform in +-1/sqrt(in_dim). The
    torch framework draws from the same distribution, so both start statistically alike.
    """
    if out_dim <= 0:
        raise ValueError(f"out_dim must be positive, got {out_dim}")

    def init(key: jax.Array, in_dim: int) -> tuple[int, LinearParams]:
        bound = 1.0 / math.sqrt(in_dim)
        kw, kb = jax.random.split(key)
        w = jax.random.uniform(kw, (in_dim, out_dim), minval=-bound, maxval=bound)
        b = jax.random.uniform(kb, (out_dim,), minval=-bound, maxval=bound)
        return out_dim, LinearParams(w, b)

    def forward(params: LinearParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        # b[None]: explicit broadcasting, so strict rank promotion (as in the parity suite) holds.
        return x @ params.w + params.b[None], x

    def backward(
        params: LinearParams, x: jax.Array, dy: jax.Array
    ) -> tuple[jax.Array, LinearParams]:
        return dy @ params.w.T, LinearParams(x.T @ dy, dy.sum(axis=0))

    return Layer(init, forward, backward)


def elementwise(
    fun: Callable[[jax.Array], jax.Array],
    derivative: Callable[[jax.Array, jax.Array], jax.Array],
) -> Layer:
    """A parameter-free layer y = fun(x); derivative(x, y) is dy/dx elementwise.

    The cache keeps both x and y so each activation picks the cheaper form of its derivative
    (tanh and sigmoid from y, relu from x).
    """

    def init(key: jax.Array, in_dim: int) -> tuple[int, tuple[()]]:
        del key
        return in_dim, ()

    def forward(params: tuple[()], x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        del params
        y = fun(x)
        return y, (x, y)

    def backward(
        params: tuple[()], cache: tuple[jax.Array, jax.Array], dy: jax.Array
    ) -> tuple[jax.Array, tuple[()]]:
        del params
        x, y = cache
        return dy * derivative(x, y), ()

    return Layer(init, forward, backward)


def relu() -> Layer:
    """max(x, 0); the derivative at exactly 0 is taken as 0, as torch and jax.nn.relu do."""
    # jnp.where rather than jnp.maximum: the VJP of maximum splits a tie 0.5/0.5 at x == 0.
    return elementwise(
        lambda x: jnp.where(x > 0, x, jnp.zeros_like(x)),
        lambda x, y: (x > 0).astype(x.dtype),
    )


def tanh() -> Layer:
    """tanh(x), with derivative 1 - tanh(x)^2 from the cached output."""
    return elementwise(jnp.tanh, lambda x, y: 1 - y * y)


def sigmoid() -> Layer:
    """1 / (1 + exp(-x)), with derivative s (1 - s) from the cached output."""
    return elementwise(jax.nn.sigmoid, lambda x, y: y * (1 - y))


def sequential(*layers: Layer) -> Layer:
    """Layers in series; params and grads are tuples with one entry per layer."""
    if not layers:
        raise ValueError("sequential needs at least one layer")

    def init(key: jax.Array, in_dim: int) -> tuple[int, tuple[Params, ...]]:
        params = []
        for layer, k in zip(layers, jax.random.split(key, len(layers)), strict=True):
            in_dim, p = layer.init(k, in_dim)
            params.append(p)
        return in_dim, tuple(params)

    def forward(params: tuple[Params, ...], x: jax.Array) -> tuple[jax.Array, tuple[Cache, ...]]:
        caches = []
        for layer, p in zip(layers, params, strict=True):
            x, c = layer.forward(p, x)
            caches.append(c)
        return x, tuple(caches)

    def backward(
        params: tuple[Params, ...], caches: tuple[Cache, ...], dy: jax.Array
    ) -> tuple[jax.Array, tuple[Params, ...]]:
        grads: list[Params] = [()] * len(layers)
        for i in reversed(range(len(layers))):
            dy, grads[i] = layers[i].backward(params[i], caches[i], dy)
        return dy, tuple(grads)

    return Layer(init, forward, backward)
