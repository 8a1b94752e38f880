"""Project II parity: torch framework and jaxdl.framework, same weights and order, agree."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxdl.framework import train as jtrain
from jaxdl.framework.losses import mse_loss, mse_loss_backward
from jaxdl.framework.optim import sgd
from parity_tests.compare import F64, Tolerance, assert_close
from torch_reference import framework as tfw
from torch_reference import framework_train as ttrain

# Issue 5's bounds: float32 1e-5 relative (to each leaf's largest magnitude), float64 1e-10.
FW32 = Tolerance("float32", abs=1e-5, rel=1e-5)
N_POINTS = 1000


def _plain(tree: Any) -> Any:
    """jaxdl params as plain nested tuples of NumPy arrays (LinearParams -> (w, b)): the layout
    export_params gives, so that assert_close sees the same paths on both sides."""
    if isinstance(tree, tuple):
        return tuple(_plain(t) for t in tree)
    return np.array(tree)  # a writable copy: torch warns on read-only NumPy views


def _tolerance(precision) -> Tolerance:
    return FW32 if precision.numpy is np.float32 else F64


def _setup(output: int, precision, seed: int = 0):
    """jaxdl's initial params and data, cast to the precision, and a torch network holding them."""
    layer = jtrain.disk_network(output)
    # Jitted: one compilation instead of one per eager op (the suite's time is compilation).
    _, params = jax.jit(layer.init, static_argnums=1)(jax.random.key(seed), 2)
    params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a).astype(precision.numpy)), params)
    data = jtrain.disk_data(seed, output)
    data = jtrain.DiskData(*(a.astype(precision.numpy) if a.dtype.kind == "f" else a for a in data))
    model = ttrain.disk_network(output, dtype=precision.torch)
    tfw.load_params(model, _plain(params))
    return layer, params, data, model


@pytest.mark.parametrize("output", [1, 2])
def test_forward_loss_and_gradients_agree(output: int, precision) -> None:
    layer, params, data, model = _setup(output, precision)
    tol = _tolerance(precision)
    x, t = data.train_x[:50], data.train_targets[:50]

    @jax.jit
    def forward_backward(params: Any, x: jax.Array, t: jax.Array) -> tuple[Any, ...]:
        pred, cache = layer.forward(params, x)
        loss, loss_cache = mse_loss(pred, t)
        dx, grads = layer.backward(params, cache, mse_loss_backward(loss_cache))
        return pred, loss, dx, grads

    pred, loss, dx, grads = forward_backward(params, jnp.asarray(x), jnp.asarray(t))

    criterion = tfw.LossMSE()
    with torch.no_grad():
        t_pred = model.forward(torch.as_tensor(x))
        t_loss = criterion.forward(t_pred, torch.as_tensor(t))
        t_dx = model.backward(criterion.backward())
    t_grads = tfw.export_params(model, grads=True)

    assert_close(pred, t_pred, tol, check="framework outputs", kind="rel")
    assert_close(loss, t_loss, tol, check="framework loss", kind="rel")
    assert_close(dx, t_dx, tol, check="framework input gradient", kind="rel")
    assert_close(_plain(grads), t_grads, tol, check="framework param gradients", kind="rel")


# With momentum 0.9 the lr is 0.003, the same effective step lr / (1 - momentum) as plain SGD at
# 0.03: at lr 0.03 (effective 0.3) 1,000 float32 steps amplify last-bit differences of the two
# libraries' matmuls to ~4e-3 (float64 still agrees to 1e-13, so the arithmetic is the same).
@pytest.mark.parametrize(
    ("output", "momentum", "batch_size", "lr"),
    [(1, 0.0, 1, 0.03), (1, 0.9, 1, 0.003), (2, 0.0, 7, 0.03)],
)
def test_one_epoch_of_sgd_agrees(
    output: int, momentum: float, batch_size: int, lr: float, precision
) -> None:
    """Same start, same order: params after one epoch (1,000 batch-1 steps) agree."""
    layer, params, data, model = _setup(output, precision)
    tol = _tolerance(precision)
    order = np.random.default_rng(1).permutation(N_POINTS)

    optimizer = sgd(lr, momentum)
    epoch = jax.jit(functools.partial(jtrain.train_epoch, layer, optimizer, batch_size=batch_size))
    new_params, _, loss = epoch(
        params,
        optimizer.init(params),
        jnp.asarray(data.train_x),
        jnp.asarray(data.train_targets),
        jnp.asarray(order),
    )

    t_opt = tfw.SGD(model.param(), lr, momentum)
    t_loss = ttrain.train_epoch(
        model,
        tfw.LossMSE(),
        t_opt,
        torch.as_tensor(data.train_x),
        torch.as_tensor(data.train_targets),
        torch.as_tensor(order),
        batch_size,
    )

    assert_close(
        _plain(new_params),
        tfw.export_params(model),
        tol,
        check="framework epoch params",
        kind="rel",
    )
    assert abs(float(loss) - t_loss) <= tol.rel * abs(t_loss)
