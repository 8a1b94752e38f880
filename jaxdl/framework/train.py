"""The disk task trained with the framework: all epochs of all runs in one compiled program."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.data import generate_disk_set
from jaxdl.framework.config import FrameworkConfig
from jaxdl.framework.layers import Layer, linear, relu, sequential, tanh
from jaxdl.framework.losses import mse_loss, mse_loss_backward
from jaxdl.framework.optim import Optimizer, Params, Schedule, constant_lr, cosine_lr, sgd

__all__ = [
    "N_POINTS",
    "DiskData",
    "History",
    "disk_data",
    "disk_network",
    "encode_targets",
    "evaluate",
    "make_schedule",
    "predict_labels",
    "standardise",
    "sweep_setup",
    "train_epoch",
    "train_run",
    "train_runs",
]

N_POINTS = 1000  # training points, and as many test points
HIDDEN = 25


class DiskData(NamedTuple):
    """One run's data; x standardised, targets already encoded for the chosen output."""

    train_x: np.ndarray
    train_targets: np.ndarray
    train_labels: np.ndarray
    test_x: np.ndarray
    test_targets: np.ndarray
    test_labels: np.ndarray


class History(NamedTuple):
    """Per-epoch metrics; each field is (epochs,) for one run, (runs, epochs) for many.

    train_loss is the mean of the minibatch losses seen during the epoch; the errors are
    fractions of misclassified points measured after the epoch.
    """

    train_loss: jax.Array
    train_error: jax.Array
    test_error: jax.Array
    test_loss: jax.Array


def disk_network(output: int) -> Layer:
    """2 -> 25 -> 25 -> 25 -> output, ReLU between; a final Tanh when output is 1.

    output=2 is the course's variant (one-hot targets, argmax); output=1 is the report's
    (targets -1/+1, sign of the Tanh output).
    """
    if output not in (1, 2):
        raise ValueError(f"output must be 1 or 2, got {output}")
    layers = [linear(HIDDEN), relu(), linear(HIDDEN), relu(), linear(HIDDEN), relu()]
    layers.append(linear(output))
    if output == 1:
        layers.append(tanh())
    return sequential(*layers)


def encode_targets(labels: np.ndarray, output: int) -> np.ndarray:
    """Labels {0,1} -> MSE targets: one-hot (n, 2) in {0,1}, or (n, 1) in {-1,+1}."""
    labels = np.asarray(labels)
    if output == 2:
        return np.eye(2, dtype=np.float32)[labels]
    if output == 1:
        return (2.0 * labels - 1.0).astype(np.float32)[:, None]
    raise ValueError(f"output must be 1 or 2, got {output}")


def predict_labels(pred: jax.Array) -> jax.Array:
    """Network outputs (n, 2) or (n, 1) -> labels {0,1}: argmax, or the sign of the output."""
    if pred.shape[-1] == 1:
        return (pred[..., 0] > 0).astype(jnp.int32)
    return jnp.argmax(pred, axis=-1).astype(jnp.int32)


def standardise(train_x: np.ndarray, test_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres and scales both sets with the training set's per-feature mean and std.

    Uniform [0,1] inputs have mean 0.5 and std 0.29: ReLU units initialised around the
    origin would see all-positive, badly scaled inputs; after this they see zero-mean, unit
    inputs, and the disk boundary passes through the region the initial units cover.
    """
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    return (train_x - mean) / std, (test_x - mean) / std


def disk_data(seed: int, output: int, n: int = N_POINTS, inputs: str = "standardised") -> DiskData:
    """n training and n test points: the two halves of generate_disk_set(2n, seed=seed).

    inputs: "standardised" (with the training half's statistics) or "raw" ([0,1]^2 as drawn).
    """
    points, labels = generate_disk_set(2 * n, seed=seed)
    if inputs == "standardised":
        train_x, test_x = standardise(points[:n], points[n:])
    elif inputs == "raw":
        train_x, test_x = points[:n], points[n:]
    else:
        raise ValueError(f"inputs must be 'standardised' or 'raw', got {inputs!r}")
    return DiskData(
        train_x.astype(np.float32),
        encode_targets(labels[:n], output),
        labels[:n],
        test_x.astype(np.float32),
        encode_targets(labels[n:], output),
        labels[n:],
    )


def train_epoch(
    layer: Layer,
    optimizer: Optimizer,
    params: Params,
    opt_state: object,
    x: jax.Array,
    targets: jax.Array,
    order: jax.Array,
    batch_size: int,
) -> tuple[Params, object, jax.Array]:
    """One pass over x in the given order, minibatches of batch_size, one update each.

    The last len(x) % batch_size points of the order are skipped (drop-last), so that every
    step has the same shape for lax.scan; the torch framework does the same.

    Returns:
        (params, opt_state, mean minibatch loss).
    """
    n_batches = x.shape[0] // batch_size
    if n_batches == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {x.shape[0]} points")
    batches = order[: n_batches * batch_size].reshape(n_batches, batch_size)

    def step(
        carry: tuple[Params, object], idx: jax.Array
    ) -> tuple[tuple[Params, object], jax.Array]:
        params, opt_state = carry
        pred, cache = layer.forward(params, x[idx])
        loss, loss_cache = mse_loss(pred, targets[idx])
        _, grads = layer.backward(params, cache, mse_loss_backward(loss_cache))
        params, opt_state = optimizer.update(grads, opt_state, params)
        return (params, opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state, losses.mean()


def evaluate(
    layer: Layer, params: Params, x: jax.Array, targets: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(MSE loss, error fraction) of the network on a whole set."""
    pred, _ = layer.forward(params, x)
    loss, _ = mse_loss(pred, targets)
    error = jnp.mean(predict_labels(pred).astype(labels.dtype) != labels)
    return loss, error


def train_runs(
    keys: jax.Array,
    data: DiskData,
    *,
    layer: Layer,
    optimizer: Optimizer,
    epochs: int,
    batch_size: int,
    on_epoch: Callable[[jax.Array, History], None] | None = None,
) -> tuple[Params, History]:
    """Trains len(keys) independent runs at once; data has a leading runs axis too.

    Each key gives a run its initialisation and its per-epoch shuffles. The epochs are a
    lax.scan whose body vmaps one epoch over the runs: the same computation as vmapping whole
    runs, but with the runs' metrics for the epoch in hand, so `on_epoch(epoch, metrics)`
    (a host callback, e.g. a progress bar) sees all runs at once. Jit this at the call site
    with the keyword arguments bound.

    Returns:
        (final params, each leaf with a leading runs axis; History of (runs, epochs) arrays).
    """
    in_dim = data.train_x.shape[-1]

    def init(key: jax.Array) -> tuple[Params, object, jax.Array]:
        init_key, shuffle_key = jax.random.split(key)
        _, params = layer.init(init_key, in_dim)
        return params, optimizer.init(params), shuffle_key

    params, opt_state, shuffle_keys = jax.vmap(init)(keys)

    def one_epoch(
        params: Params, opt_state: object, shuffle_key: jax.Array, d: DiskData, epoch: jax.Array
    ) -> tuple[Params, object, History]:
        order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), d.train_x.shape[0])
        params, opt_state, train_loss = train_epoch(
            layer, optimizer, params, opt_state, d.train_x, d.train_targets, order, batch_size
        )
        _, train_error = evaluate(layer, params, d.train_x, d.train_targets, d.train_labels)
        test_loss, test_error = evaluate(layer, params, d.test_x, d.test_targets, d.test_labels)
        return params, opt_state, History(train_loss, train_error, test_error, test_loss)

    def epoch_body(
        carry: tuple[Params, object], epoch: jax.Array
    ) -> tuple[tuple[Params, object], History]:
        params, opt_state = carry
        params, opt_state, metrics = jax.vmap(one_epoch, in_axes=(0, 0, 0, 0, None))(
            params, opt_state, shuffle_keys, data, epoch
        )
        if on_epoch is not None:
            jax.debug.callback(on_epoch, epoch, metrics, ordered=True)
        return (params, opt_state), metrics

    (params, _), history = jax.lax.scan(epoch_body, (params, opt_state), jnp.arange(epochs))
    # scan stacks epochs first; runs first reads better downstream.
    return params, History(*(jnp.swapaxes(h, 0, 1) for h in history))


def train_run(
    key: jax.Array,
    data: DiskData,
    *,
    layer: Layer,
    optimizer: Optimizer,
    epochs: int,
    batch_size: int,
) -> tuple[Params, History]:
    """One run: train_runs with a runs axis of one, removed again."""
    batched = jax.tree.map(lambda a: jnp.asarray(a)[None], data)
    params, history = train_runs(
        key[None],
        DiskData(*batched),
        layer=layer,
        optimizer=optimizer,
        epochs=epochs,
        batch_size=batch_size,
    )
    return jax.tree.map(lambda a: a[0], (params, history))


def make_schedule(lr: float, schedule: str, total_steps: int) -> Schedule:
    """'constant' or 'cosine' (to 0 over total_steps), as torch_reference.framework_train."""
    if schedule == "constant":
        return constant_lr(lr)
    if schedule == "cosine":
        return cosine_lr(lr, total_steps)
    raise ValueError(f"unknown schedule {schedule!r}")


def sweep_setup(
    config: FrameworkConfig, seeds: Sequence[int]
) -> tuple[jax.Array, DiskData, dict[str, Any]]:
    """What `train_runs` needs for `config`'s runs of `seeds`: one key per run, the runs' data
    stacked on a leading axis, and the keyword arguments (network, optimizer, epochs, batch).

    The one set-up shared by scripts/framework_flax.py, the experiments and the benchmark.
    """
    per_run = [disk_data(s, config.output, inputs=config.inputs) for s in seeds]
    data = DiskData(*(np.stack(field) for field in zip(*per_run, strict=True)))
    keys = jax.vmap(jax.random.key)(jnp.asarray(list(seeds)))
    kwargs = {
        "layer": disk_network(config.output),
        "optimizer": sgd(
            make_schedule(config.lr, config.schedule, config.total_steps), config.momentum
        ),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
    }
    return keys, data, kwargs
