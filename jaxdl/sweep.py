"""Sweeps: many runs (seeds) at once, batched with `vmap` and spread over devices with a mesh.

The runs axis is the one mesh axis, "runs": each device trains its block of runs with the
same vmapped program (`shard_map`, no communication between devices), so a sweep's per-run
results do not depend on how many devices share it. On one device the mesh has one device and
this is plain `vmap`. Whether batching runs pays depends on the device: on GPUs it does; on
XLA:CPU vmapped convolutions are far slower than running the runs one by one, and with one
device per core, one run per device at a time with scanned epochs (`runs_per_device=1,
scan_steps=True`) beats the loop. `jaxdl.benchmark` measures the strategies and
`choose_strategy` keeps the fastest.

Multi-host: call `jax.distributed.initialize()` first in every process; `jax.devices()` then
lists every host's devices and `runs_mesh()` spans them all (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdl import train
from jaxdl.config import TrainConfig
from jaxdl.divergence import divergence, is_finite
from jaxdl.framework.layers import Layer
from jaxdl.framework.optim import Optimizer
from jaxdl.framework.train import DiskData, History, train_runs
from jaxdl.results import summarize

__all__ = [
    "RUNS",
    "choose_strategy",
    "fastest_options",
    "framework_sweep",
    "one_device_per_core",
    "padded_runs",
    "runs_mesh",
    "shard_runs",
    "time_batched_step",
    "train_sweep",
]

RUNS = "runs"  # the mesh axis the runs are split over
METRICS = ("train_error", "test_error", "train_loss", "test_loss")


def runs_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh ("runs") over `devices` (default: every device of every process)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (RUNS,))


def padded_runs(runs: int, mesh: Mesh) -> int:
    """The run count rounded up to a multiple of the mesh size (every device the same block)."""
    return math.ceil(runs / mesh.size) * mesh.size


def _pad(tree: Any, runs: int, padded: int) -> Any:
    # Extra runs repeat the last one; their results are dropped. Repeating (not zeros) keeps
    # the padding numerically harmless (no NaN from empty data).
    if padded == runs:
        return tree
    return jax.tree.map(
        lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], padded - runs, axis=0)]), tree
    )


def shard_runs(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf with its leading (runs) axis split over the mesh.

    Every process holds the whole (seeded, identical) tree; under `jax.distributed` each one
    hands over only the blocks of its own devices (`make_array_from_callback`).
    """
    sharding = NamedSharding(mesh, PartitionSpec(RUNS))
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(leaf: Any) -> jax.Array:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(leaf))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def _per_device(fn: Any, mesh: Mesh, in_specs: Any) -> Any:
    # shard_map: each device runs `fn` (already vmapped) on its own block of runs.
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=PartitionSpec(RUNS)))


# --- Project II: the whole training of every run in one program ----------------------------


@functools.lru_cache(maxsize=16)
def _framework_fit(
    layer: Layer, optimizer: Optimizer, epochs: int, batch_size: int, mesh: Mesh
) -> Any:
    fit = functools.partial(
        train_runs, layer=layer, optimizer=optimizer, epochs=epochs, batch_size=batch_size
    )
    return _per_device(fit, mesh, (PartitionSpec(RUNS), PartitionSpec(RUNS)))


def framework_sweep(
    keys: jax.Array,
    data: DiskData,
    *,
    layer: Layer,
    optimizer: Optimizer,
    epochs: int,
    batch_size: int,
    mesh: Mesh | None = None,
) -> tuple[Any, History]:
    """`jaxdl.framework.train.train_runs` with its runs split over the devices of `mesh`.

    Args:
        keys: (runs,) PRNG keys; data: DiskData with a leading runs axis (as train_runs).
        mesh: a `runs_mesh` (default: all devices).
    Returns:
        (final params, History of (runs, epochs) arrays), as train_runs.
    """
    mesh = mesh if mesh is not None else runs_mesh()
    runs = keys.shape[0]
    padded = padded_runs(runs, mesh)
    keys, data = shard_runs(_pad((keys, DiskData(*map(jnp.asarray, data))), runs, padded), mesh)
    fit = _framework_fit(layer, optimizer, epochs, batch_size, mesh)
    params, history = _to_host(fit(keys, data))
    return jax.tree.map(lambda a: a[:runs], (params, history))


# --- Project I: a loop over steps, each step every run's batch at once ---------------------


@functools.lru_cache(maxsize=16)
def _sweep_programs(aux_weight: float, shift: int, mesh: Mesh) -> tuple[Any, Any]:
    runs_spec, replicated = PartitionSpec(RUNS), PartitionSpec()
    step = jax.vmap(
        functools.partial(train.train_batch, aux_weight=aux_weight, shift=shift),
        in_axes=(0, 0, 0, None),
    )
    evaluate = jax.vmap(functools.partial(train.evaluate, aux_weight=aux_weight))
    return (
        _per_device(step, mesh, (runs_spec, runs_spec, runs_spec, replicated)),
        _per_device(evaluate, mesh, (runs_spec, runs_spec)),
    )


@functools.lru_cache(maxsize=16)
def _scanned_steps(aux_weight: float, shift: int, mesh: Mesh) -> Any:
    # An epoch's steps as one program: `lax.scan` over the steps of the vmapped step, so an
    # accelerator pays one launch per epoch instead of one per step. Losses out as (runs, steps).
    step = jax.vmap(
        functools.partial(train.train_batch, aux_weight=aux_weight, shift=shift),
        in_axes=(0, 0, 0, None),
    )

    def epoch(state: Any, tr: Any, batch_idx: jax.Array) -> tuple[Any, jax.Array]:
        def body(s: Any, i: jax.Array) -> tuple[Any, jax.Array]:
            s, metrics = step(s, tr, batch_idx, i)
            return s, metrics["loss"]

        state, losses = jax.lax.scan(body, state, jnp.arange(batch_idx.shape[1]))
        return state, losses.T

    runs_spec = PartitionSpec(RUNS)
    return _per_device(epoch, mesh, (runs_spec, runs_spec, runs_spec))


def train_sweep(
    config: TrainConfig,
    mesh: Mesh | None = None,
    runs_per_device: int | None = None,
    scan_steps: bool = False,
    on_epoch: train.EpochCallback | None = None,
    on_diverged: Callable[[str], None] | None = None,
    runs: Sequence[int] | None = None,
) -> dict[str, Any]:
    """`config.runs` runs of `config.model` trained together, split over `mesh` (vmap per device).

    Each run draws its data, initialisation, order and dropout exactly as `train.train_run`;
    the results equal its up to float rounding (vmapped layers compile to other kernels).
    `runs_per_device`: None trains every run at once (each device a block of runs); k trains
    them k per device at a time, in groups of k x devices runs.
    `scan_steps`: each epoch's steps as one `lax.scan` program instead of a Python loop of
    compiled steps (one launch per epoch). The same steps, so the same results up to float
    rounding. On a multi-core CPU made into one device per core, `runs_per_device=1,
    scan_steps=True` is the fast choice for the convnets: each core trains one run's epoch
    with no vmapped convolution and no dispatch in between (`jaxdl.benchmark`'s `sharded`).
    Returns `train.train_and_evaluate`'s shape: {"runs": [...], "summary": {...}}; `seconds`
    of each run is the sweep's wall time divided by the runs. No checkpoints (use the CLI for
    those). A run whose loss becomes non-finite is recorded as
    `train.train_run` records it: `diverged` with the epoch, step and message, and only its good
    epochs (no NaN reaches the summary); the other runs of its batch go on.
    `on_epoch(run, epoch, row)` and `on_diverged(message)`: as in `train.train_run`, called
    for each run of a group after each epoch. `runs`: which runs (indices, seeds
    `config.run_seed(run)`) to train, default all `config.runs`.
    """
    if config.repair:
        raise ValueError("train_sweep does not re-pair (repair=True): use train.train_run")
    if config.fresh_bn:
        raise ValueError("train_sweep keeps running statistics (fresh_bn=True): use train_run")
    if runs_per_device is not None and runs_per_device < 1:
        raise ValueError(f"runs_per_device must be at least 1, got {runs_per_device}")
    start = time.perf_counter()
    mesh = mesh if mesh is not None else runs_mesh()
    runs = list(range(config.runs) if runs is None else runs)
    group = max(len(runs), 1) if runs_per_device is None else runs_per_device * mesh.size
    out: list[dict[str, Any]] = []
    for first in range(0, len(runs), group):
        batch = runs[first : first + group]
        out += _train_group(config, batch, mesh, scan_steps, on_epoch, on_diverged)
    seconds = time.perf_counter() - start
    for run in out:
        run["seconds"] = seconds / len(out)
    return {"runs": out, "summary": summarize(out)}


def fastest_options() -> dict[str, Any]:
    """`train_sweep`'s options measured fastest on this JAX backend (docs/BENCHMARKS.md): on
    XLA:CPU (one device per core, `one_device_per_core`) one run per device, elsewhere every
    run batched; scanned epochs on both."""
    return {"runs_per_device": 1 if jax.default_backend() == "cpu" else None, "scan_steps": True}


def one_device_per_core() -> None:
    """Makes each CPU core an XLA device, so that a sweep can run one run per core. Effective
    only before JAX starts its CPU backend (XLA_FLAGS is read then); an explicit device count
    in XLA_FLAGS is kept."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        count = f"--xla_force_host_platform_device_count={os.cpu_count() or 1}"
        os.environ["XLA_FLAGS"] = f"{flags} {count}".strip()


def _train_group(
    config: TrainConfig,
    runs: Sequence[int],
    mesh: Mesh,
    scan_steps: bool,
    on_epoch: train.EpochCallback | None = None,
    on_diverged: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    # The runs `runs` (indices into the config's seeds) trained together over the mesh.
    state, tr, te, shuffle_keys = _sweep_inputs(config, mesh, runs)
    step, evaluate = _sweep_programs(config.aux_weight, config.shift, mesh)
    batches = _epoch_batches(config.nb, config.batch_size)
    records = [
        {"model": config.model, "seed": config.run_seed(run), **{k: [] for k in METRICS}}
        | {"diverged": False}
        for run in runs
    ]
    for epoch in range(config.epochs):
        batch_idx = shard_runs(batches(shuffle_keys, epoch), mesh)
        if scan_steps:
            state, losses = _scanned_steps(config.aux_weight, config.shift, mesh)(
                state, tr, batch_idx
            )
        else:
            per_step = []
            for i in range(config.steps_per_epoch):
                state, metrics = step(state, tr, batch_idx, i)
                per_step.append(metrics["loss"])
            losses = jnp.stack(per_step, axis=1)
        on_train, on_test = evaluate(state, tr), evaluate(state, te)
        # The epoch's one host transfer, as in train.train_run.
        got = _to_host(
            {
                "step_loss": losses,
                "train_loss": losses.mean(axis=1),
                "train_errors": on_train["errors"],
                "train_eval_loss": on_train["loss"],
                "test_errors": on_test["errors"],
                "test_loss": on_test["loss"],
            }
        )
        # Counts to fractions on the host, in float64 as train_run does.
        got["train_error"] = got.pop("train_errors") / config.nb
        got["test_error"] = got.pop("test_errors") / config.nb
        for i, (run, record) in enumerate(zip(runs, records, strict=True)):
            if record["diverged"]:
                continue  # its later epochs (still trained in the batch) are not recorded
            eval_losses = {
                "train_eval_loss": got["train_eval_loss"][i],
                "test_loss": got["test_loss"][i],
            }
            if not is_finite(got["train_loss"][i], *eval_losses.values()):
                # As train.train_run: the run stops here, its good epochs only, no NaN.
                seed = record["seed"]
                record.update(
                    divergence(config.model, run, seed, epoch, got["step_loss"][i], eval_losses)
                )
                if on_diverged is not None:
                    on_diverged(record["diverged_message"])
                continue
            row = {key: float(got[key][i]) for key in METRICS}
            for key, value in row.items():
                record[key].append(value)
            if on_epoch is not None:
                on_epoch(run, epoch, row)
    return records


def _to_host(tree: Any) -> Any:
    # With several processes (jax.distributed) a process holds only its devices' runs: gather
    # every run's values on every host. One process: a plain device_get.
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _sweep_inputs(
    config: TrainConfig, mesh: Mesh, runs: Sequence[int] | None = None
) -> tuple[Any, Any, Any, jax.Array]:
    # The runs' (default: all of the config's) states, training and test pairs, stacked
    # (padded) and split over the mesh, each drawn exactly as train.train_run draws it; and
    # the runs' shuffle keys.
    runs = range(config.runs) if runs is None else runs
    padded = padded_runs(len(runs), mesh)
    model, tx = train.build(config)
    states, trains, tests, shuffle_keys = [], [], [], []
    for r in runs:
        seed = config.run_seed(r)
        tr, te = train.load_pairs(config, seed)
        init_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed))
        states.append(train.create_train_state(model, tx, init_key))
        trains.append(tr)
        tests.append(te)
        shuffle_keys.append(shuffle_key)

    def stack(items: list[Any]) -> Any:
        return _pad(jax.tree.map(lambda *xs: jnp.stack(xs), *items), len(runs), padded)

    state, tr, te = shard_runs((stack(states), stack(trains), stack(tests)), mesh)
    return state, tr, te, stack(shuffle_keys)


def time_batched_step(config: TrainConfig, mesh: Mesh, repeats: int = 2) -> dict[str, float]:
    """Seconds of one batched (vmapped, sharded) step of `config.runs` runs, each waited for.

    `compile_s`: the first calls (every program of the sweep compiled); `step_s`: the median
    of `repeats` more steps. Cheap enough to decide whether a batched sweep is worth running.
    """
    state, tr, _, shuffle_keys = _sweep_inputs(config, mesh)
    step, evaluate = _sweep_programs(config.aux_weight, config.shift, mesh)
    start = time.perf_counter()
    # The first calls compile every program of the sweep, so a later train_sweep is warm.
    batch_idx = shard_runs(_epoch_batches(config.nb, config.batch_size)(shuffle_keys, 0), mesh)
    jax.block_until_ready(evaluate(state, tr))
    state = jax.block_until_ready(step(state, tr, batch_idx, 0))[0]
    compile_s = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(step(state, tr, batch_idx, i + 1))[0]
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "step_s": float(np.median(times))}


@functools.lru_cache(maxsize=16)
def _epoch_batches(n: int, batch_size: int) -> Any:
    # Every run's order for one epoch, each from fold_in(its shuffle key, epoch) as train_run.
    @jax.jit
    def batches(shuffle_keys: jax.Array, epoch: int) -> jax.Array:
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(shuffle_keys, epoch)
        return jax.vmap(lambda k: train.epoch_batches(k, n, batch_size))(keys)

    return batches


def choose_strategy(
    one_by_one_s: float,
    batched_s: float | None,
    sharded_s: float | None = None,
    scan_s: float | None = None,
) -> str:
    """ "loop", "vmap" (every run at once, sharded over the mesh), "sharded" (one run per
    device at a time, scanned epochs) or "scan" (vmap with each epoch's steps in one
    `lax.scan`): whichever sweep measured fastest.

    None means not measured (projected too slow, a single device, batching not paying); ties
    keep the loop, the path with exact train_run numerics, then the order above.
    """
    measured = {"loop": one_by_one_s, "vmap": batched_s, "sharded": sharded_s, "scan": scan_s}
    return min((t, i, name) for i, (name, t) in enumerate(measured.items()) if t is not None)[2]
