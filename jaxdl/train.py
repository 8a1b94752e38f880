"""Project I training in JAX: losses, optimizers, compiled train steps, evaluation, runs.

The pieces are pure functions of a `TrainState` (params, batch_stats, optimizer state, dropout
key): `train_step`, `train_batch` (its compiled form on a batch gathered on device),
`train_epoch` (those steps over given batch indices), `evaluate`, and `run_epoch` (shuffle,
train, evaluate both sets).
The model and optimizer of a configuration are built once per process (`build`), so that the
compiled epoch is reused across runs and epochs; the learning rate is read from the step count
inside the optimizer, never passed in, so nothing recompiles when it changes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from jaxdl import augment, data, models, schedules
from jaxdl.checkpoint import Checkpointer
from jaxdl.config import OPTIMIZERS, TrainConfig
from jaxdl.divergence import divergence, is_finite
from jaxdl.results import summarize

__all__ = [
    "PairData",
    "TrainState",
    "build",
    "compute_losses",
    "create_train_state",
    "epoch_batches",
    "error_count",
    "evaluate",
    "fresh_batch_stats",
    "make_optimizer",
    "run_epoch",
    "train_and_evaluate",
    "train_batch",
    "train_epoch",
    "train_run",
    "train_step",
]

INPUT_SHAPE = (2, 14, 14)


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm running statistics and the run's dropout key.

    The dropout key of step s is `fold_in(key, s)`: a pure function of the state.
    """

    batch_stats: Any
    key: jax.Array


class PairData(NamedTuple):
    """A pair set on device: input (n,2,14,14) float32 raw scale, target (n,), classes (n,2)."""

    x: jax.Array
    target: jax.Array
    classes: jax.Array


def make_optimizer(
    name: str, learning_rate: optax.ScalarOrSchedule, weight_decay: float
) -> optax.GradientTransformation:
    """`adam`: torch Adam(weight_decay) = coupled L2, the decay added to the gradient before Adam.

    `adamw`: torch AdamW(weight_decay) = decoupled, lr * wd * param subtracted beside the Adam step.
    Both decay every parameter (BatchNorm scales and biases included), as torch does by default.
    """
    if name == "adam":
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
            optax.scale_by_learning_rate(learning_rate),
        )
    if name == "adamw":
        return optax.adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def build(config: TrainConfig) -> tuple[nn.Module, optax.GradientTransformation]:
    """The model and optimizer of a configuration, one pair of objects per process.

    They are static parts of the TrainState, so reusing the same objects is what lets jit reuse
    the compiled epoch across runs (only the fields that shape the computation matter here).
    """
    return _build(
        config.model,
        config.dropout,
        config.optimizer,
        config.lr,
        config.weight_decay,
        config.schedule,
        # Only `cosine` depends on the run length: other schedules share one compiled step
        # across --epochs values.
        config.epochs if config.schedule == "cosine" else 0,
        config.steps_per_epoch,
        batchnorm=config.batchnorm,
        # The architecture options, those not at their defaults, as hashable pairs: taken
        # from the config as a whole, so an option added to TrainConfig reaches the model.
        arch=tuple(sorted(config.model_hparams().items())),
    )


@functools.lru_cache(maxsize=32)
def _build(
    model: str,
    dropout: float,
    optimizer: str,
    lr: float,
    weight_decay: float,
    schedule: str,
    epochs: int,
    steps_per_epoch: int,
    batchnorm: bool = True,
    arch: tuple[tuple[str, Any], ...] = (),
) -> tuple[nn.Module, optax.GradientTransformation]:
    lr_schedule = schedules.make_schedule(
        schedule, lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    return (
        models.create_model(model, dropout=dropout, batchnorm=batchnorm, **dict(arch)),
        make_optimizer(optimizer, lr_schedule, weight_decay),
    )


# Compiled once per model (eager init dispatches op by op: seconds per run on CPU), without
# LLVM optimisation: the unrolled threefry of each initialiser made optimising take 3x longer
# than running it, and it runs once per run.
@functools.partial(
    jax.jit, static_argnums=0, compiler_options={"xla_backend_optimization_level": 0}
)
def _init_variables(model: nn.Module, key: jax.Array) -> Any:
    return model.init({"params": key}, jnp.zeros((1, *INPUT_SHAPE)), train=False)


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, key: jax.Array
) -> TrainState:
    """Initialises parameters and BatchNorm statistics from `key`; the dropout key is split off."""
    init_key, dropout_key = jax.random.split(key)
    variables = _init_variables(model, init_key)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        # No BatchNorm (the batchnorm=False ablation): no statistics collection at all.
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
        key=dropout_key,
    )


def compute_losses(
    logit: jax.Array,
    aux: jax.Array | None,
    target: jax.Array,
    classes: jax.Array,
    aux_weight: float,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(total, bce, ce): BCE-with-logits on the comparison, plus aux_weight * digit cross-entropy.

    The cross-entropy is the mean over all 2B digits (torch's CrossEntropyLoss on (2B, 10));
    it is 0 for models without digit logits.
    """
    bce = optax.sigmoid_binary_cross_entropy(logit, target.astype(logit.dtype)).mean()
    if aux is None:
        ce = jnp.zeros((), logit.dtype)
    else:
        ce = optax.softmax_cross_entropy_with_integer_labels(
            aux.reshape(-1, 10), classes.reshape(-1)
        ).mean()
    return bce + aux_weight * ce, bce, ce


def error_count(logit: jax.Array, target: jax.Array) -> jax.Array:
    """The report's error count: sigmoid, round to 0/1, count mismatches with the target."""
    prediction = jnp.round(jax.nn.sigmoid(logit))
    return jnp.sum(prediction != target.astype(prediction.dtype))


def train_step(
    state: TrainState,
    x: jax.Array,
    target: jax.Array,
    classes: jax.Array,
    aux_weight: float,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on a batch (train mode: batch statistics, dropout); returns the losses."""
    dropout_key = jax.random.fold_in(state.key, state.step)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[Any, jax.Array, jax.Array]]:
        (logit, aux), updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        total, bce, ce = compute_losses(logit, aux, target, classes, aux_weight)
        return total, (updates.get("batch_stats", {}), bce, ce)

    (loss, (batch_stats, bce, ce)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return state, {"loss": loss, "bce": bce, "ce": ce}


def epoch_batches(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    """A shuffled order of n examples as (n // batch_size, batch_size) indices; the rest dropped."""
    steps = n // batch_size
    return jax.random.permutation(key, n)[: steps * batch_size].reshape(steps, batch_size)


@functools.partial(jax.jit, static_argnames=("aux_weight", "shift"))
def train_batch(
    state: TrainState,
    train: PairData,
    batch_idx: jax.Array,
    i: jax.Array,
    aux_weight: float,
    shift: int = 0,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """`train_step` on batch `i` of `batch_idx` (steps, batch), gathered on device.

    With `shift` > 0 each digit of the batch is first translated by up to `shift` pixels,
    from a key of the step (independent of the dropout key of the same step).
    """
    idx = batch_idx[i]
    x = train.x[idx]
    if shift:
        shift_key = jax.random.fold_in(jax.random.fold_in(state.key, state.step), 1)
        x = augment.shift_digits(shift_key, x, shift)
    return train_step(state, x, train.target[idx], train.classes[idx], aux_weight)


def train_epoch(
    state: TrainState, train: PairData, batch_idx: jax.Array, aux_weight: float, shift: int = 0
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Train steps over the batches `batch_idx` (steps, batch) of `train`; per-step losses out.

    A Python loop of compiled steps rather than one `lax.scan`: dispatch is asynchronous and
    nothing is read back here, so the loop costs no host round trip per step. Before the CPU's
    im2col conv gradient XLA:CPU ran the scanned epoch ~5x slower; now it is as fast on one
    device (docs/BENCHMARKS.md), and the loop keeps the published runs' exact numbers. The
    scanned epoch is `jaxdl.sweep.train_sweep(..., scan_steps=True)`.
    """
    losses = []
    for i in range(batch_idx.shape[0]):
        state, metrics = train_batch(state, train, batch_idx, i, aux_weight=aux_weight, shift=shift)
        losses.append(metrics)
    return state, jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *losses)


def evaluate(state: TrainState, pairs: PairData, aux_weight: float) -> dict[str, jax.Array]:
    """Eval mode (running statistics, no dropout) on the whole set: error count and losses."""
    logit, aux = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, pairs.x, train=False
    )
    total, bce, ce = compute_losses(logit, aux, pairs.target, pairs.classes, aux_weight)
    return {"errors": error_count(logit, pairs.target), "loss": total, "bce": bce, "ce": ce}


_evaluate = jax.jit(evaluate, static_argnames=("aux_weight",))


def _evaluate_both(
    state: TrainState, train: PairData, test: PairData, aux_weight: float
) -> dict[str, jax.Array]:
    # Two calls of one compiled evaluation, not one program holding both: XLA:CPU ran the
    # two sets' convolutions side by side in one program ~2-3x slower (measured, issue 6).
    on_train = _evaluate(state, train, aux_weight=aux_weight)
    on_test = _evaluate(state, test, aux_weight=aux_weight)
    return {
        "train_errors": on_train["errors"],
        "train_eval_loss": on_train["loss"],
        "test_errors": on_test["errors"],
        "test_loss": on_test["loss"],
    }


def fresh_batch_stats(state: TrainState, x: jax.Array, key: jax.Array) -> Any:
    """BatchNorm statistics of the whole set `x` under the state's weights: one train-mode pass
    (dropout on, as in training) over all of x as one batch; parameters untouched.

    torch's twin resets the statistics and sets momentum=None for the pass (the batch's own
    statistics). Flax adds (1 - momentum) * the batch's statistic to momentum * the old one,
    so one pass from zeroed statistics divided by (1 - momentum) leaves the batch's own. The
    variance stays in Flax's convention (biased, as Flax's running average; torch stores the
    unbiased one: `convert.biased_to_unbiased`).
    """
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)
    _, updates = state.apply_fn(
        {"params": state.params, "batch_stats": zeros},
        x,
        train=True,
        rngs={"dropout": key},
        mutable=["batch_stats"],
    )
    return jax.tree.map(lambda s: s / (1.0 - models.BN_MOMENTUM), updates.get("batch_stats", {}))


_fresh_batch_stats = jax.jit(fresh_batch_stats)


@functools.partial(jax.jit, static_argnames=("n", "batch_size"))
def _epoch_batches(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    return epoch_batches(key, n, batch_size)


def run_epoch(
    state: TrainState,
    train: PairData,
    test: PairData,
    shuffle_key: jax.Array,
    *,
    batch_size: int,
    aux_weight: float,
    shift: int = 0,
    fresh_bn: bool = False,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One epoch: shuffle (from `shuffle_key`), train, then evaluate on both sets (eval mode);
    with `fresh_bn`, the BatchNorm statistics are first recomputed on `train`
    (`fresh_batch_stats`, dropout from `fold_in(shuffle_key, 2)`).

    Returns the new state and the epoch's metrics, still on device: `train_loss` (mean of the
    step losses, train mode), `train_errors`/`test_errors` (counts), `train_eval_loss`,
    `test_loss`, and `step_loss` (the per-step losses, to locate a divergence). Every piece is
    compiled once per configuration and reused.
    """
    batch_idx = _epoch_batches(shuffle_key, train.x.shape[0], batch_size)
    state, steps = train_epoch(state, train, batch_idx, aux_weight, shift)
    if fresh_bn:
        stats = _fresh_batch_stats(state, train.x, jax.random.fold_in(shuffle_key, 2))
        state = state.replace(batch_stats=stats)
    metrics = _evaluate_both(state, train, test, aux_weight=aux_weight)
    return state, {"train_loss": steps["loss"].mean(), "step_loss": steps["loss"], **metrics}


def load_pairs(config: TrainConfig, seed: int) -> tuple[PairData, PairData]:
    """The run's training and test pair sets (nb each), reseeded by `seed`, on device."""
    tr_x, tr_t, tr_c, te_x, te_t, te_c = data.generate_pair_sets(
        config.nb, seed=seed, source=config.source, data_dir=config.data_dir
    )
    return (
        PairData(jnp.asarray(tr_x), jnp.asarray(tr_t), jnp.asarray(tr_c)),
        PairData(jnp.asarray(te_x), jnp.asarray(te_t), jnp.asarray(te_c)),
    )


@jax.jit
def _repair(key: jax.Array, train: PairData) -> PairData:
    return PairData(*augment.repair_pairs(key, train.x, train.classes, train.target.dtype))


EpochCallback = Callable[[int, int, dict[str, float]], None]


def train_run(
    config: TrainConfig,
    run: int,
    on_epoch: EpochCallback | None = None,
    *,
    checkpoint: Checkpointer | None = None,
    on_diverged: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Trains one run (seed `config.run_seed(run)`: pairs, initialisation, order, dropout).

    Returns a JSON-ready dict: model, seed, per-epoch `train_error`, `test_error` (fractions),
    `train_loss`, `test_loss`, `seconds`, and `diverged` (with `diverged_epoch`,
    `diverged_step`, `diverged_message`, see jaxdl.divergence) when a loss became non-finite,
    in which case training stopped at that epoch and `on_diverged` gets the message.
    With a `checkpoint` (jaxdl.checkpoint), the full state is saved after every epoch (a
    diverged run saves its last good state) and a run the checkpoint holds is continued
    where it stopped, to the same bits as an uninterrupted run.
    """
    start = time.perf_counter()
    seed = config.run_seed(run)
    train, test = load_pairs(config, seed)
    model, tx = build(config)
    init_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed))
    state = create_train_state(model, tx, init_key)
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
        saved = checkpoint.resume_run(config.model, run, config.epochs, (state, shuffle_key))
        if saved is not None:
            result, restored = saved
            if restored is None:  # finished before the interruption
                return result
            state, shuffle_key = restored
            first_epoch = len(result["test_error"])
            start -= result.pop("seconds", 0.0)  # wall time adds up over resumptions
    n_train, n_test = train.x.shape[0], test.x.shape[0]
    for epoch in range(first_epoch, config.epochs):
        good_state = state
        epoch_key = jax.random.fold_in(shuffle_key, epoch)
        epoch_train = train
        if config.repair and epoch > 0:
            # Epoch 0 trains on the course's pairs; later epochs on new pairs of the same
            # training digits (train error is then measured on the epoch's pairs).
            epoch_train = _repair(jax.random.fold_in(epoch_key, 1), train)
        state, metrics = run_epoch(
            state,
            epoch_train,
            test,
            epoch_key,
            batch_size=config.batch_size,
            aux_weight=config.aux_weight,
            shift=config.shift,
            fresh_bn=config.fresh_bn,
        )
        m = jax.device_get(metrics)  # the only host transfer of the epoch
        row = {
            "train_error": float(m["train_errors"]) / n_train,
            "test_error": float(m["test_errors"]) / n_test,
            "train_loss": float(m["train_loss"]),
            "test_loss": float(m["test_loss"]),
        }
        if not is_finite(row["train_loss"], row["test_loss"], m["train_eval_loss"]):
            eval_losses = {"train_eval_loss": m["train_eval_loss"], "test_loss": row["test_loss"]}
            result.update(divergence(config.model, run, seed, epoch, m["step_loss"], eval_losses))
            result["seconds"] = time.perf_counter() - start
            if checkpoint is not None:
                checkpoint.save(config.model, run, (good_state, shuffle_key), result, diverged=True)
            if on_diverged is not None:
                on_diverged(result["diverged_message"])
            break
        for key, value in row.items():
            result[key].append(value)
        result["seconds"] = time.perf_counter() - start
        if checkpoint is not None:
            checkpoint.save(config.model, run, (state, shuffle_key), result)
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
    model, _ = build(config)
    shapes = jax.eval_shape(
        lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, *INPUT_SHAPE)))
    )
    return models.param_count(shapes["params"])
