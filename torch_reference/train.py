"""Project I training in torch, the reference for jaxdl.train: same losses, optimizers, runs.

Public names mirror jaxdl.train: `make_optimizer`, `compute_losses`, `error_count`,
`train_step`, `epoch_batches`, `train_epoch`, `evaluate`, `run_epoch`, `train_run`,
`train_and_evaluate` (the last returns the same JSON-ready dict).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from jaxdl.checkpoint import Checkpointer, CheckpointError
from jaxdl.config import OPTIMIZERS, TrainConfig
from jaxdl.divergence import divergence, is_finite
from jaxdl.results import summarize
from torch_reference import augment, data, models, schedules

__all__ = [
    "PairData",
    "compute_losses",
    "create_model",
    "epoch_batches",
    "error_count",
    "evaluate",
    "make_optimizer",
    "run_epoch",
    "train_and_evaluate",
    "train_epoch",
    "train_run",
    "train_step",
]


class PairData(NamedTuple):
    """A pair set: input (n,2,14,14) float32 raw scale, target (n,) int64, classes (n,2) int64."""

    x: torch.Tensor
    target: torch.Tensor
    classes: torch.Tensor


def make_optimizer(
    name: str, params: Iterable[torch.Tensor], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """`adam`: Adam(weight_decay), coupled L2; `adamw`: AdamW(weight_decay), decoupled."""
    if name == "adam":
        return torch.optim.Adam(
            params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay
        )
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay
        )
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def create_model(config: TrainConfig) -> nn.Module:
    """The configuration's model, initialised from torch's global RNG."""
    return models.create_model(
        config.model,
        dropout=config.dropout,
        batchnorm=config.batchnorm,
        **config.model_hparams(),  # the architecture options that are not their defaults
    )


def compute_losses(
    logit: torch.Tensor,
    aux: torch.Tensor | None,
    target: torch.Tensor,
    classes: torch.Tensor,
    aux_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, bce, ce): BCEWithLogits on the comparison, plus aux_weight * digit cross-entropy."""
    bce = F.binary_cross_entropy_with_logits(logit, target.to(logit.dtype))
    if aux is None:
        ce = torch.zeros((), dtype=logit.dtype)
    else:
        ce = F.cross_entropy(aux.reshape(-1, 10), classes.reshape(-1))
    return bce + aux_weight * ce, bce, ce


def error_count(logit: torch.Tensor, target: torch.Tensor) -> int:
    """The report's error count: sigmoid, round to 0/1, count mismatches with the target."""
    prediction = torch.round(torch.sigmoid(logit))
    return int(torch.where(prediction != target.to(prediction.dtype))[0].numel())


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    target: torch.Tensor,
    classes: torch.Tensor,
    aux_weight: float,
) -> dict[str, float]:
    """One optimizer step on a batch in train mode; returns the losses (as tensors' items)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    logit, aux = model(x)
    total, bce, ce = compute_losses(logit, aux, target, classes, aux_weight)
    total.backward()
    optimizer.step()
    return {"loss": total.detach(), "bce": bce.detach(), "ce": ce.detach()}


def epoch_batches(generator: torch.Generator, n: int, batch_size: int) -> torch.Tensor:
    """A shuffled order of n examples as (n // batch_size, batch_size) indices; the rest dropped."""
    steps = n // batch_size
    return torch.randperm(n, generator=generator)[: steps * batch_size].view(steps, batch_size)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: PairData,
    batch_idx: torch.Tensor,
    aux_weight: float,
    shift: int = 0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Train steps over the batches `batch_idx` (steps, batch) of `train`; per-step losses out.

    With `shift` > 0 each digit of a batch is first translated by up to `shift` pixels, the
    offsets drawn from `generator` (as `jaxdl.train.train_batch` does from its step key).
    """
    steps = []
    for idx in batch_idx:
        x = train.x[idx]
        if shift:
            x = augment.shift_digits(generator, x, shift)
        steps.append(
            train_step(model, optimizer, x, train.target[idx], train.classes[idx], aux_weight)
        )
    return {k: torch.stack([s[k] for s in steps]) for k in steps[0]}


@torch.no_grad()
def evaluate(model: nn.Module, pairs: PairData, aux_weight: float) -> dict[str, Any]:
    """Eval mode (running statistics, no dropout) on the whole set: error count and losses."""
    model.eval()
    logit, aux = model(pairs.x)
    total, bce, ce = compute_losses(logit, aux, pairs.target, pairs.classes, aux_weight)
    return {
        "errors": error_count(logit, pairs.target),
        "loss": total.item(),
        "bce": bce.item(),
        "ce": ce.item(),
    }


@torch.no_grad()
def fresh_batch_stats(model: nn.Module, x: torch.Tensor) -> None:
    """Replaces every BatchNorm's running statistics by those of the whole set `x` under the
    current weights: one train-mode pass (dropout on, as in training) with momentum=None from
    reset statistics, i.e. the batch's own mean and unbiased variance. Parameters and the
    training's random stream are untouched. Mirrors `jaxdl.train.fresh_batch_stats`."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    # Its dropout draws leave training's random stream (CPU, or the tensor's GPU) untouched.
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train: PairData,
    test: PairData,
    generator: torch.Generator,
    *,
    batch_size: int,
    aux_weight: float,
    shift: int = 0,
    fresh_bn: bool = False,
) -> dict[str, Any]:
    """One epoch: shuffle, train, step the scheduler, evaluate on both sets (eval mode); with
    `fresh_bn`, the BatchNorm statistics are first recomputed on `train` (`fresh_batch_stats`).

    `step_loss` holds the per-step losses, to locate a divergence.
    """
    batch_idx = epoch_batches(generator, train.x.shape[0], batch_size)
    steps = train_epoch(model, optimizer, train, batch_idx, aux_weight, shift, generator)
    scheduler.step()
    if fresh_bn:
        fresh_batch_stats(model, train.x)
    on_train = evaluate(model, train, aux_weight)
    on_test = evaluate(model, test, aux_weight)
    return {
        "train_loss": steps["loss"].mean().item(),
        "step_loss": steps["loss"].numpy(),
        "train_errors": on_train["errors"],
        "train_eval_loss": on_train["loss"],
        "test_errors": on_test["errors"],
        "test_loss": on_test["loss"],
    }


def load_pairs(config: TrainConfig, seed: int) -> tuple[PairData, PairData]:
    """The run's training and test pair sets (nb each), reseeded by `seed`."""
    tr_x, tr_t, tr_c, te_x, te_t, te_c = data.generate_pair_sets(
        config.nb, seed=seed, source=config.source, data_dir=config.data_dir
    )
    return PairData(tr_x, tr_t, tr_c), PairData(te_x, te_t, te_c)


EpochCallback = Callable[[int, int, dict[str, float]], None]


def _training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> dict[str, Any]:
    # Everything the next epoch depends on: weights and BatchNorm buffers, Adam moments and
    # step, the scheduler's position, the dropout RNG (global) and the batch-order generator.
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "generator": generator.get_state(),
    }


def _load_training_state(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> None:
    # Into objects made for this run only: on a failure they are dropped, never used half-loaded.
    try:
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        generator.set_state(state["generator"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        text = " ".join(str(e).split())[:200]
        raise CheckpointError(
            f"the checkpoint's state does not fit this model and optimizer ({text})"
        ) from None


def train_run(
    config: TrainConfig,
    run: int,
    on_epoch: EpochCallback | None = None,
    *,
    checkpoint: Checkpointer | None = None,
    on_diverged: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Trains one run (seed `config.run_seed(run)`: pairs, initialisation, order, dropout).

    Returns the same JSON-ready dict as `jaxdl.train.train_run`; `checkpoint` (a
    torch_reference.checkpoint.TorchCheckpointer) and `on_diverged` as there.
    """
    start = time.perf_counter()
    seed = config.run_seed(run)
    train, test = load_pairs(config, seed)
    torch.manual_seed(seed)  # initialisation and dropout
    model = create_model(config)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr, config.weight_decay)
    scheduler = schedules.make_scheduler(config.schedule, optimizer, epochs=config.epochs)
    # The batch order has its own generator, so that it does not depend on the dropout draws.
    generator = torch.Generator().manual_seed(seed)
    result: dict[str, Any] = {
        "model": config.model,
        "seed": seed,
        "train_error": [],
        "test_error": [],
        "train_loss": [],
        "test_loss": [],
        "diverged": False,
    }
    first_epoch = 0
    if checkpoint is not None:
        saved = checkpoint.resume_run(config.model, run, config.epochs, None)
        if saved is not None:
            result, restored = saved
            if restored is None:  # finished before the interruption
                return result
            _load_training_state(restored, model, optimizer, scheduler, generator)
            first_epoch = len(result["test_error"])
            start -= result.pop("seconds", 0.0)  # wall time adds up over resumptions
    n_train, n_test = train.x.shape[0], test.x.shape[0]
    for epoch in range(first_epoch, config.epochs):
        # The epoch updates the model in place: keep a copy to save if it diverges.
        good_state = (
            copy.deepcopy(_training_state(model, optimizer, scheduler, generator))
            if checkpoint is not None
            else None
        )
        epoch_train = train
        if config.repair and epoch > 0:
            # As in jaxdl: epoch 0 trains on the course's pairs, later epochs on new pairs of
            # the same training digits (train error is then measured on the epoch's pairs).
            epoch_train = PairData(*augment.repair_pairs(generator, train.x, train.classes))
        m = run_epoch(
            model,
            optimizer,
            scheduler,
            epoch_train,
            test,
            generator,
            batch_size=config.batch_size,
            aux_weight=config.aux_weight,
            shift=config.shift,
            fresh_bn=config.fresh_bn,
        )
        row = {
            "train_error": m["train_errors"] / n_train,
            "test_error": m["test_errors"] / n_test,
            "train_loss": m["train_loss"],
            "test_loss": m["test_loss"],
        }
        if not is_finite(row["train_loss"], row["test_loss"], m["train_eval_loss"]):
            eval_losses = {"train_eval_loss": m["train_eval_loss"], "test_loss": row["test_loss"]}
            result.update(divergence(config.model, run, seed, epoch, m["step_loss"], eval_losses))
            result["seconds"] = time.perf_counter() - start
            if checkpoint is not None:
                checkpoint.save(config.model, run, good_state, result, diverged=True)
            if on_diverged is not None:
                on_diverged(result["diverged_message"])
            break
        for key, value in row.items():
            result[key].append(value)
        result["seconds"] = time.perf_counter() - start
        if checkpoint is not None:
            state = _training_state(model, optimizer, scheduler, generator)
            checkpoint.save(config.model, run, state, result)
        if on_epoch is not None:
            on_epoch(run, epoch, row)
    result["seconds"] = time.perf_counter() - start
    return result


def train_and_evaluate(
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    *,
    checkpoint: Checkpointer | None = None,
    on_diverged: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`config.runs` runs of `config.model`: {"runs": [per-run dicts], "summary": {...}}.

    `checkpoint` and `on_diverged`: as in `train_run`.
    """
    runs = [
        train_run(config, r, on_epoch, checkpoint=checkpoint, on_diverged=on_diverged)
        for r in range(config.runs)
    ]
    return {"runs": runs, "summary": summarize(runs)}


def param_count(config: TrainConfig) -> int:
    """The number of trainable parameters of the configuration's model."""
    return models.param_count(create_model(config))
