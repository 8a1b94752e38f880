"""The disk task trained with the torch framework, one run at a time, as jaxdl.framework.train."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from torch_reference.data import generate_disk_set
from torch_reference.framework import (
    SGD,
    Linear,
    LossMSE,
    Module,
    ReLU,
    Sequential,
    Tanh,
    constant_lr,
    cosine_lr,
)

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
    "train_epoch",
    "train_run",
]

N_POINTS = 1000
HIDDEN = 25
Tensor = torch.Tensor


class DiskData(NamedTuple):
    """One run's data; x standardised, targets already encoded for the chosen output."""

    train_x: Tensor
    train_targets: Tensor
    train_labels: Tensor
    test_x: Tensor
    test_targets: Tensor
    test_labels: Tensor


class History(NamedTuple):
    """Per-epoch metrics of one run, as lists of floats (see jaxdl.framework.train.History)."""

    train_loss: list[float]
    train_error: list[float]
    test_error: list[float]
    test_loss: list[float]


def disk_network(
    output: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Sequential:
    """2 -> 25 -> 25 -> 25 -> output, ReLU between; a final Tanh when output is 1."""
    if output not in (1, 2):
        raise ValueError(f"output must be 1 or 2, got {output}")
    dims = [2, HIDDEN, HIDDEN, HIDDEN]
    modules: list[Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        modules += [Linear(d_in, d_out, generator=generator, dtype=dtype), ReLU()]
    modules.append(Linear(HIDDEN, output, generator=generator, dtype=dtype))
    if output == 1:
        modules.append(Tanh())
    return Sequential(*modules)


def encode_targets(labels: Tensor, output: int) -> Tensor:
    """Labels {0,1} -> MSE targets: one-hot (n, 2) in {0,1}, or (n, 1) in {-1,+1}."""
    if output == 2:
        targets = torch.empty(len(labels), 2).zero_()
        targets[torch.arange(len(labels)), labels] = 1.0
        return targets
    if output == 1:
        return (2.0 * labels.float() - 1.0)[:, None]
    raise ValueError(f"output must be 1 or 2, got {output}")


def predict_labels(pred: Tensor) -> Tensor:
    """Network outputs (n, 2) or (n, 1) -> labels {0,1}: argmax, or the sign of the output."""
    if pred.shape[-1] == 1:
        return (pred[..., 0] > 0).long()
    return pred.argmax(dim=-1)


def standardise(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor]:
    """Both sets scaled by the training set's per-feature mean and (population) std."""
    mean = train_x.mean(dim=0)
    std = train_x.std(dim=0, unbiased=False)
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
        train_x,
        encode_targets(labels[:n], output),
        labels[:n],
        test_x,
        encode_targets(labels[n:], output),
        labels[n:],
    )


def make_schedule(lr: float, schedule: str, total_steps: int) -> Callable[[int], float]:
    """'constant' or 'cosine' (to 0 over total_steps), as jaxdl.framework.optim."""
    if schedule == "constant":
        return constant_lr(lr)
    if schedule == "cosine":
        return cosine_lr(lr, total_steps)
    raise ValueError(f"unknown schedule {schedule!r}")


def train_epoch(
    model: Module,
    loss: LossMSE,
    optimizer: SGD,
    x: Tensor,
    targets: Tensor,
    order: Tensor,
    batch_size: int,
) -> float:
    """One pass in the given order, drop-last minibatches as jaxdl's; the mean minibatch loss."""
    n_batches = len(x) // batch_size
    if n_batches == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {len(x)} points")
    total = 0.0
    with torch.set_grad_enabled(False):
        for i in range(n_batches):
            idx = order[i * batch_size : (i + 1) * batch_size]
            optimizer.zero_grad()
            value = loss.forward(model.forward(x[idx]), targets[idx])
            model.backward(loss.backward())
            optimizer.step()
            total += float(value)
    return total / n_batches


def evaluate(
    model: Module, loss: LossMSE, x: Tensor, targets: Tensor, labels: Tensor
) -> tuple[float, float]:
    """(MSE loss, error fraction) of the network on a whole set."""
    with torch.set_grad_enabled(False):
        pred = model.forward(x)
        value = float(loss.forward(pred, targets))
        error = float((predict_labels(pred) != labels).double().mean())
    return value, error


def train_run(
    seed: int,
    *,
    output: int,
    epochs: int,
    batch_size: int,
    lr: float,
    schedule: str = "constant",
    momentum: float = 0.0,
    inputs: str = "standardised",
    on_epoch: Callable[[int, History], None] | None = None,
) -> tuple[Sequential, History]:
    """One run: data, initialisation and shuffles all from `seed`; autograd off throughout."""
    data = disk_data(seed, output, inputs=inputs)
    generator = torch.Generator().manual_seed(seed)
    model = disk_network(output, generator=generator)
    loss = LossMSE()
    steps = epochs * (N_POINTS // batch_size)
    optimizer = SGD(model.param(), make_schedule(lr, schedule, steps), momentum)
    history = History([], [], [], [])
    for epoch in range(epochs):
        order = torch.randperm(N_POINTS, generator=generator)
        history.train_loss.append(
            train_epoch(model, loss, optimizer, data.train_x, data.train_targets, order, batch_size)
        )
        _, train_error = evaluate(model, loss, data.train_x, data.train_targets, data.train_labels)
        test_loss, test_error = evaluate(
            model, loss, data.test_x, data.test_targets, data.test_labels
        )
        history.train_error.append(train_error)
        history.test_error.append(test_error)
        history.test_loss.append(test_loss)
        if on_epoch is not None:
            on_epoch(epoch, history)
    return model, history
