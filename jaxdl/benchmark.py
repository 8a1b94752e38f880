"""Speed of jaxdl against torch_reference on the same machine: times, FLOPs, the matmul floor.

Every JAX timing blocks on its outputs (`jax.block_until_ready`) before the clock is read;
warm-up calls (compilation) are excluded and timed separately; a reported time is the median
of repeated timings. FLOPs come from XLA's cost analysis of the compiled step/evaluation, and
the compute floor of a run is its FLOPs divided by a measured float32 matmul rate on the same
device. Runs wherever JAX and torch run: torch on CUDA when available, JAX on its default
backend (CPU, GPU or TPU). Used by scripts/benchmark.py; results are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdl import sweep, train
from jaxdl.config import MODEL_NAMES, TrainConfig
from jaxdl.framework import train as ftrain
from jaxdl.framework.config import FrameworkConfig

__all__ = [
    "BenchmarkConfig",
    "Timing",
    "compiled_flops",
    "environment",
    "format_table",
    "matmul_gflops",
    "on_cpu",
    "project1_jax",
    "project1_torch",
    "project2_jax",
    "project2_torch",
    "run_benchmark",
    "time_calls",
    "torch_run_on",
]


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What to measure. The defaults are the full benchmark; `quick()` the 2-minute one."""

    models: tuple[str, ...] = MODEL_NAMES
    sweep_models: tuple[str, ...] = ("siamese_aux",)  # the 10-run sweeps cost 10 runs each
    epochs: int = 25
    nb: int = 1000
    batch_size: int = TrainConfig.batch_size  # the CLI default
    source: str = "auto"
    framework_epochs: int = 50
    repeats: int = 3  # timed repetitions of a run (median); steps are timed 10x as often
    sweep_runs: int = 10
    torch_threads: tuple[int | None, ...] = (1, None)  # None: torch's own default
    # A batched (vmap) sweep is only run when a few measured steps project it to at most this
    # many times the one-by-one sweep (vmapped convolutions on XLA:CPU take many minutes).
    batched_budget: float = 2.0

    @classmethod
    def quick(cls) -> BenchmarkConfig:
        return cls(
            models=("siamese_aux",),
            epochs=2,
            framework_epochs=5,
            repeats=1,
            sweep_runs=2,
        )


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds of repeated timings of one thing: their median, minimum and every sample."""

    median: float
    min: float
    samples: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.min, "samples_s": list(self.samples)}


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Times `fn()` `repeats` times after `warmup` untimed calls; JAX outputs are waited for."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        samples.append(time.perf_counter() - start)
    return Timing(statistics.median(samples), min(samples), tuple(samples))


def compiled_flops(compiled: Any) -> float:
    """FLOPs of a compiled JAX computation from XLA's cost analysis (0.0 if unavailable).

    Loops are counted once by XLA, so this is applied to loop-free programs (a step, an
    evaluation), never to a whole scanned run.
    """
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per computation
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))


def on_cpu(tree: Any) -> Any:
    """`tree` placed on the host CPU, so that `jit(...).lower(tree)` compiles for XLA:CPU.

    FLOPs are a property of the computation, so they are always counted by XLA:CPU's cost
    analysis: XLA:GPU's leaves out the convolutions it hands to cuDNN as custom calls (seen on
    an H200: 0.070 GFLOP for a `siamese_aux` step that XLA:CPU counts as 0.544).
    """
    try:
        cpu = jax.devices("cpu")[0]
    except RuntimeError:  # JAX_PLATFORMS without cpu: count on the default backend
        return tree
    return jax.device_put(tree, cpu)


def matmul_gflops(n: int | None = None, repeats: int = 20) -> tuple[float, int]:
    """The device's measured float32 matmul rate (GFLOP/s, median) and the size n used.

    n x n times n x n: 1024 on CPU (as issue 6), 4096 on accelerators (1024 underfills them).
    """
    if n is None:
        n = 1024 if jax.default_backend() == "cpu" else 4096
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    timing = time_calls(lambda: dot(a, b), repeats, warmup=2)
    return 2.0 * n**3 / timing.median / 1e9, n


def _torch() -> Any:
    import torch

    return torch


def torch_device() -> str:
    """ "cuda" when torch sees a GPU, else "cpu"."""
    return "cuda" if _torch().cuda.is_available() else "cpu"


def environment() -> dict[str, Any]:
    """Where and with what the benchmark ran: devices, library versions, date, CPU count."""
    import flax
    import optax

    torch = _torch()
    device = torch_device()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()],
        "torch_device": device
        + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""),
        "torch_default_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jax.lib.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        # Unset unless JAX_COMPILATION_CACHE_DIR is: the benchmark's compile times are cold.
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
    }


# --- Project I --------------------------------------------------------------------------


def _p1_config(bench: BenchmarkConfig, model: str) -> TrainConfig:
    return TrainConfig(
        model=model,
        epochs=bench.epochs,
        runs=1,
        nb=bench.nb,
        batch_size=bench.batch_size,
        source=bench.source,
    )


def project1_jax(
    config: TrainConfig, *, repeats: int, sweep_runs: int, sweep: bool, batched_budget: float
) -> dict[str, Any]:
    """JAX timings of one Project I model: compile, step, 25-epoch run, sweep; FLOPs.

    The first run of the process pays the compilation; `compile_s` is its excess over the
    median warm run. Runs r = 1..repeats are timed (the same work, other seeds).
    """
    start = time.perf_counter()
    train.train_run(config, 0)
    cold = time.perf_counter() - start
    run = time_calls(_counter(lambda r: train.train_run(config, r), start=1), repeats, warmup=0)
    scanned = _scanned_run(config, repeats)

    # One step and one evaluation, compiled ahead of time for XLA's cost analysis.
    model, tx = train.build(config)
    state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    tr, te = train.load_pairs(config, config.seed)
    batch_idx = train.epoch_batches(jax.random.PRNGKey(1), config.nb, config.batch_size)
    static = {"aux_weight": config.aux_weight, "shift": config.shift}
    cpu_state, cpu_tr, cpu_idx = on_cpu((state, tr, batch_idx))
    step_flops = compiled_flops(
        train.train_batch.lower(cpu_state, cpu_tr, cpu_idx, 0, **static).compile()
    )
    eval_flops = compiled_flops(
        train._evaluate.lower(cpu_state, cpu_tr, aux_weight=config.aux_weight).compile()
    )
    holder = [state]

    def one_step() -> Any:
        holder[0], metrics = train.train_batch(holder[0], tr, batch_idx, 0, **static)
        return holder[0], metrics

    step = time_calls(one_step, 10 * repeats)
    steps = config.epochs * config.steps_per_epoch
    flops = steps * step_flops + config.epochs * 2 * eval_flops
    out: dict[str, Any] = {
        "model": config.model,
        "compile_s": max(cold - run.median, 0.0),
        "cold_run_s": cold,
        "step": step.to_dict(),
        "run": run.to_dict(),
        # The same run with each epoch's steps in one `lax.scan` (one launch per epoch):
        # the faster of the two is the one-run figure.
        "scanned_run": scanned.to_dict(),
        "run_chosen": "loop" if run.median <= scanned.median else "scanned",
        "run_best_s": min(run.median, scanned.median),
        "steps_per_run": steps,
        "step_flops": step_flops,
        "eval_flops": eval_flops,
        "run_flops": flops,
    }
    if sweep:
        out["sweep"] = _project1_sweep(config, sweep_runs, run.median, batched_budget)
    return out


def _scanned_run(config: TrainConfig, repeats: int) -> Timing:
    """One run with each epoch's steps in one `lax.scan`: `sweep.train_sweep` of that one run
    on one device, un-vmapped (`runs_per_device=1`; on the CPU what `train_flax.py --sweep
    --runs 1` trains). The first call compiles; runs r = 1..repeats are timed, as for
    `train_run`."""
    one_device = sweep.runs_mesh(jax.devices()[:1])

    def scanned(r: int) -> Any:
        one_run = config.replace(seed=config.run_seed(r), runs=1)
        return sweep.train_sweep(one_run, one_device, runs_per_device=1, scan_steps=True)

    scanned(0)
    return time_calls(_counter(scanned, start=1), repeats, warmup=0)


def _counter(fn: Callable[[int], Any], start: int) -> Callable[[], Any]:
    # Successive calls get start, start + 1, ...: each timed run is a fresh seed.
    count = iter(range(start, 1 << 30))
    return lambda: fn(next(count))


def _project1_sweep(config: TrainConfig, runs: int, run_s: float, budget: float) -> dict[str, Any]:
    """A `runs`-run sweep one by one (loop), batched (vmap, split over all devices) and, with
    several devices, sharded one run per device at a time with each epoch's steps in one
    `lax.scan` (`train_sweep(runs_per_device=1, scan_steps=True)`: each device then runs its
    run's epochs with no dispatch in between), and, where the batched sweep beat the loop,
    batched with scanned epochs (`train_sweep(scan_steps=True)`: fewer launches).

    The batched sweep is projected from a few timed steps first and only run when the
    projection is within `budget` times the loop's time; the fastest is `chosen`.
    """
    cfg = config.replace(runs=runs)
    start = time.perf_counter()
    train.train_and_evaluate(cfg)
    loop_s = time.perf_counter() - start
    mesh = sweep.runs_mesh()
    probe = sweep.time_batched_step(cfg, mesh, repeats=2)
    projected = probe["step_s"] * cfg.epochs * cfg.steps_per_epoch
    out: dict[str, Any] = {
        "runs": runs,
        "devices": mesh.size,
        "loop_s": loop_s,
        "batched_step_s": probe["step_s"],
        "batched_compile_s": probe["compile_s"],
        "batched_projected_s": projected,
        "batched_s": None,
    }
    if projected <= budget * loop_s:
        start = time.perf_counter()
        sweep.train_sweep(cfg, mesh)
        out["batched_s"] = time.perf_counter() - start
    out["sharded_s"] = None
    one_epoch = cfg.replace(epochs=1)  # compiles a strategy's programs before it is timed
    if mesh.size > 1:
        sharded = functools.partial(
            sweep.train_sweep, mesh=mesh, runs_per_device=1, scan_steps=True
        )
        sharded(one_epoch.replace(runs=mesh.size))
        start = time.perf_counter()
        sharded(cfg)
        out["sharded_s"] = time.perf_counter() - start
    out["scan_s"] = None
    if out["batched_s"] is not None and out["batched_s"] < loop_s:
        # Where batching pays (accelerators; on XLA:CPU the vmapped convolutions lose).
        sweep.train_sweep(one_epoch, mesh, scan_steps=True)
        start = time.perf_counter()
        sweep.train_sweep(cfg, mesh, scan_steps=True)
        out["scan_s"] = time.perf_counter() - start
    times = (loop_s, out["batched_s"], out["sharded_s"], out["scan_s"])
    out["chosen"] = sweep.choose_strategy(*times)
    out["best_s"] = min(t for t in times if t is not None)
    return out


def _torch_threads(threads: int | None) -> Callable[[], None]:
    # Sets torch's intra-op threads (None: its default) and returns the undo.
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(threads if threads is not None else _TORCH_DEFAULT_THREADS[0])
    return lambda: torch.set_num_threads(before)


_TORCH_DEFAULT_THREADS: list[int] = []  # torch's own choice, read before anything changes it


def torch_run_on(config: TrainConfig, run: int, device: str = "cuda") -> None:
    """torch_reference.train.train_run's loop with the model and data on `device`.

    train_run itself is CPU code; this is the same work (the batch order still drawn on the
    CPU generator, as there) for a GPU. Waits for the device before returning.
    """
    torch = _torch()
    from torch_reference import schedules as tschedules
    from torch_reference import train as ttrain

    device = torch.device(device)
    seed = config.run_seed(run)
    tr, te = (
        ttrain.PairData(*(t.to(device) for t in pairs)) for pairs in ttrain.load_pairs(config, seed)
    )
    torch.manual_seed(seed)
    model = ttrain.create_model(config).to(device)
    optimizer = ttrain.make_optimizer(
        config.optimizer, model.parameters(), config.lr, config.weight_decay
    )
    scheduler = tschedules.make_scheduler(config.schedule, optimizer, epochs=config.epochs)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(config.epochs):
        idx = ttrain.epoch_batches(generator, config.nb, config.batch_size).to(device)
        steps = ttrain.train_epoch(model, optimizer, tr, idx, config.aux_weight)
        scheduler.step()
        ttrain.evaluate(model, tr, config.aux_weight)  # .item(): syncs like the CPU loop
        ttrain.evaluate(model, te, config.aux_weight)
        steps["loss"].mean().item()
    if device.type == "cuda":
        torch.cuda.synchronize()


def project1_torch(config: TrainConfig, *, threads: int | None, repeats: int) -> dict[str, Any]:
    """torch_reference timings of one model: one step and one full run (median of repeats).

    On CPU the run is `torch_reference.train.train_run` itself. A sweep is `runs` of these
    one after the other by construction, so it is reported as runs x the median run.
    """
    torch = _torch()
    from torch_reference import train as ttrain

    undo = _torch_threads(threads)
    try:
        device = torch_device()
        if device == "cuda":
            run_fn: Callable[[int], Any] = functools.partial(torch_run_on, config)
        else:
            run_fn = functools.partial(ttrain.train_run, config)
        # The step first: its warm-up calls also take first-call costs (allocator, kernel
        # selection) out of the run timings.
        torch.manual_seed(0)
        model = ttrain.create_model(config).to(device)
        optimizer = ttrain.make_optimizer(
            config.optimizer, model.parameters(), config.lr, config.weight_decay
        )
        tr, _ = ttrain.load_pairs(config, config.seed)
        batch = [t[: config.batch_size].to(device) for t in tr]

        def one_step() -> None:
            ttrain.train_step(model, optimizer, *batch, config.aux_weight)
            if device == "cuda":
                torch.cuda.synchronize()

        step = time_calls(one_step, 10 * repeats, warmup=3)
        run = time_calls(_counter(run_fn, start=1), repeats, warmup=0)
        return {
            "threads": torch.get_num_threads(),
            "device": device,
            "step": step.to_dict(),
            "run": run.to_dict(),
        }
    finally:
        undo()


# --- Project II -------------------------------------------------------------------------


def _p2_setup(config: FrameworkConfig, runs: int) -> tuple[jax.Array, ftrain.DiskData, Any]:
    return ftrain.sweep_setup(config, [config.run_seed(r) for r in range(runs)])


def project2_jax(config: FrameworkConfig, *, repeats: int, sweep_runs: int) -> dict[str, Any]:
    """JAX timings of the disk task: one run, a sweep vmapped / one by one / sharded; FLOPs."""
    keys, data, kwargs = _p2_setup(config, sweep_runs)
    one = jax.jit(functools.partial(ftrain.train_run, **kwargs))
    data0 = jax.tree.map(lambda a: jnp.asarray(a[0]), data)
    start = time.perf_counter()
    one_compiled = one.lower(keys[0], data0).compile()
    compile_s = time.perf_counter() - start
    run = time_calls(lambda: one_compiled(keys[0], data0), repeats)

    batched = jax.jit(functools.partial(ftrain.train_runs, **kwargs))
    start = time.perf_counter()
    batched_compiled = batched.lower(keys, data).compile()
    batched_compile_s = time.perf_counter() - start
    vmapped = time_calls(lambda: batched_compiled(keys, data), repeats)
    per_run_data = [jax.tree.map(lambda a, r=r: jnp.asarray(a[r]), data) for r in range(sweep_runs)]
    loop = time_calls(
        lambda: [one_compiled(keys[r], per_run_data[r]) for r in range(sweep_runs)], repeats
    )
    out: dict[str, Any] = {
        "compile_s": compile_s,
        "run": run.to_dict(),
        "sweep": {
            "runs": sweep_runs,
            "vmap_s": vmapped.median,
            "vmap_compile_s": batched_compile_s,
            "loop_s": loop.median,
        },
    }
    if jax.device_count() > 1:
        mesh = sweep.runs_mesh()
        sharded = time_calls(
            lambda: sweep.framework_sweep(keys, data, mesh=mesh, **kwargs), repeats
        )
        out["sweep"]["sharded_s"] = sharded.median
        out["sweep"]["devices"] = mesh.size
    candidates = {
        k[:-2]: v for k, v in out["sweep"].items() if k in ("vmap_s", "loop_s", "sharded_s")
    }
    out["sweep"]["chosen"] = min(candidates, key=candidates.get)
    out["sweep"]["best_s"] = min(candidates.values())

    # FLOPs: one minibatch step (train_epoch over exactly one batch) and one evaluation.
    layer, optimizer = kwargs["layer"], kwargs["optimizer"]
    _, params = layer.init(jax.random.PRNGKey(0), data0.train_x.shape[-1])
    opt_state = optimizer.init(params)
    b = config.batch_size
    step = jax.jit(
        lambda p, s, x, t: ftrain.train_epoch(layer, optimizer, p, s, x, t, jnp.arange(b), b)
    )
    params, opt_state, cpu_data = on_cpu((params, opt_state, data0))
    step_flops = compiled_flops(
        step.lower(params, opt_state, cpu_data.train_x[:b], cpu_data.train_targets[:b]).compile()
    )
    evaluate = jax.jit(lambda p, x, t, y: ftrain.evaluate(layer, p, x, t, y))
    eval_flops = compiled_flops(
        evaluate.lower(
            params, cpu_data.test_x, cpu_data.test_targets, cpu_data.test_labels
        ).compile()
    )
    out.update(
        step_flops=step_flops,
        eval_flops=eval_flops,
        run_flops=config.epochs * (config.steps_per_epoch * step_flops + 2 * eval_flops),
        steps_per_run=config.total_steps,
    )
    return out


def project2_torch(config: FrameworkConfig, *, threads: int | None, repeats: int) -> dict[str, Any]:
    """torch framework (the graded, CPU-only course code): one run, median of repeats."""
    torch = _torch()
    from torch_reference import framework_train

    undo = _torch_threads(threads)
    try:
        run_fn = functools.partial(
            framework_train.train_run,
            output=config.output,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            schedule=config.schedule,
            momentum=config.momentum,
            inputs=config.inputs,
        )
        run = time_calls(_counter(run_fn, start=config.seed), repeats, warmup=0)
        return {"threads": torch.get_num_threads(), "device": "cpu", "run": run.to_dict()}
    finally:
        undo()


# --- the whole benchmark ----------------------------------------------------------------


def run_benchmark(
    bench: BenchmarkConfig, log: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Every measurement of `bench`; JSON-ready (see scripts/benchmark.py)."""
    torch = _torch()
    if not _TORCH_DEFAULT_THREADS:
        _TORCH_DEFAULT_THREADS.append(torch.get_num_threads())
    started = time.perf_counter()
    record: dict[str, Any] = {"environment": environment(), "config": dataclasses.asdict(bench)}
    log("matmul rate")
    gflops, n = matmul_gflops(repeats=max(5, 5 * bench.repeats))
    record["matmul"] = {"gflops": gflops, "n": n, "dtype": "float32"}
    thread_settings = bench.torch_threads if torch_device() == "cpu" else (None,)
    record["project1"] = {}
    for model in bench.models:
        config = _p1_config(bench, model)
        log(f"project I {model}: jax")
        jx = project1_jax(
            config,
            repeats=bench.repeats,
            sweep_runs=bench.sweep_runs,
            sweep=model in bench.sweep_models,
            batched_budget=bench.batched_budget,
        )
        th = {}
        for threads in thread_settings:
            log(f"project I {model}: torch threads={threads or 'default'}")
            th["default" if threads is None else str(threads)] = project1_torch(
                config, threads=threads, repeats=bench.repeats
            )
        record["project1"][model] = {"config": config.to_dict(), "jax": jx, "torch": th}
    fconfig = FrameworkConfig(epochs=bench.framework_epochs, runs=bench.sweep_runs)
    log("project II: jax")
    p2 = {
        "config": fconfig.to_dict(),
        "jax": project2_jax(fconfig, repeats=bench.repeats, sweep_runs=bench.sweep_runs),
        "torch": {},
    }
    for threads in bench.torch_threads:
        log(f"project II: torch threads={threads or 'default'}")
        p2["torch"]["default" if threads is None else str(threads)] = project2_torch(
            fconfig, threads=threads, repeats=bench.repeats
        )
    record["project2"] = p2
    record["ratios"] = ratios(record)
    record["benchmark_s"] = time.perf_counter() - started
    return record


def _best_torch(torch_side: dict[str, Any], key: str = "run") -> tuple[str, float]:
    name = min(torch_side, key=lambda k: torch_side[k][key]["median_s"])
    return name, torch_side[name][key]["median_s"]


def _jax_run_s(jax_side: dict[str, Any]) -> float:
    # The faster of train_run's loop and the scanned run (records before the scanned run
    # existed hold the loop only).
    return jax_side.get("run_best_s", jax_side["run"]["median_s"])


def ratios(record: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets as measured: speed-ups over the best torch thread setting, floor."""
    rate = record["matmul"]["gflops"] * 1e9
    out: dict[str, Any] = {}
    for model, m in record["project1"].items():
        threads, torch_run = _best_torch(m["torch"])
        jax_run = _jax_run_s(m["jax"])
        entry = {
            "torch_best_threads": threads,
            "run_speedup": torch_run / jax_run,
            "floor_s": m["jax"]["run_flops"] / rate,
            "run_over_floor": jax_run / (m["jax"]["run_flops"] / rate),
        }
        if "sweep" in m["jax"]:
            runs = m["jax"]["sweep"]["runs"]
            entry["sweep_speedup"] = runs * torch_run / m["jax"]["sweep"]["best_s"]
        out[f"project1/{model}"] = entry
    p2 = record["project2"]
    threads, torch_run = _best_torch(p2["torch"])
    runs = p2["jax"]["sweep"]["runs"]
    out["project2"] = {
        "torch_best_threads": threads,
        "run_speedup": torch_run / p2["jax"]["run"]["median_s"],
        "sweep_speedup": runs * torch_run / p2["jax"]["sweep"]["best_s"],
    }
    return out


def _s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def format_table(record: dict[str, Any]) -> str:
    """The Markdown table of a benchmark record: one row per measured thing."""
    rate = record["matmul"]["gflops"]
    threads = sorted(
        {k for m in record["project1"].values() for k in m["torch"]}
        | set(record["project2"]["torch"])
    )
    head = [
        "what",
        *(
            f"torch ({t} thr.)"
            if t != "default"
            else f"torch (default, {record['environment']['torch_default_threads']} thr.)"
            for t in threads
        ),
    ] + ["JAX", "speed-up vs best torch", "JAX compile", "GFLOP", "JAX GFLOP/s", "x floor"]
    rows: list[list[str]] = []

    def torch_cells(side: dict[str, Any], key: str, scale: int = 1) -> list[str]:
        return [
            _s(side[t][key]["median_s"] * scale) if t in side and key in side[t] else "-"
            for t in threads
        ]

    for model, m in record["project1"].items():
        jx, side = m["jax"], m["torch"]
        best = min(side[t]["step"]["median_s"] for t in side)
        step_s = jx["step"]["median_s"]
        rows.append(
            [
                f"P-I {model}: one step",
                *torch_cells(side, "step"),
                _s(step_s),
                f"{best / step_s:.1f}x",
                "",
                f"{jx['step_flops'] / 1e9:.3f}",
                f"{jx['step_flops'] / step_s / 1e9:.1f}",
                f"{step_s / (jx['step_flops'] / 1e9 / rate):.1f}",
            ]
        )
        run_s = _jax_run_s(jx)
        r = record["ratios"][f"project1/{model}"]
        how = ""
        if "scanned_run" in jx:
            how = (
                f"; {jx['run_chosen']}; loop {_s(jx['run']['median_s'])}, "
                f"scanned {_s(jx['scanned_run']['median_s'])}"
            )
        rows.append(
            [
                f"P-I {model}: one run ({m['config']['epochs']} ep.{how})",
                *torch_cells(side, "run"),
                _s(run_s),
                f"{r['run_speedup']:.1f}x",
                _s(jx["compile_s"]),
                f"{jx['run_flops'] / 1e9:.1f}",
                f"{jx['run_flops'] / run_s / 1e9:.1f}",
                f"{r['run_over_floor']:.2f}",
            ]
        )
        if "sweep" in jx:
            sw = jx["sweep"]
            batched = (
                _s(sw["batched_s"])
                if sw["batched_s"] is not None
                else f"not run, projected {_s(sw['batched_projected_s'])}"
            )
            sharded = "".join(
                f", {k} {_s(sw[k + '_s'])}"
                for k in ("sharded", "scan")
                if sw.get(k + "_s") is not None
            )
            rows.append(
                [
                    f"P-I {model}: {sw['runs']}-run sweep ({sw['chosen']}; "
                    f"loop {_s(sw['loop_s'])}, vmap {batched}{sharded})",
                    *torch_cells(side, "run", sw["runs"]),
                    _s(sw["best_s"]),
                    f"{r['sweep_speedup']:.1f}x",
                    "",
                    "",
                    "",
                    "",
                ]
            )
    p2 = record["project2"]
    jx, side = p2["jax"], p2["torch"]
    r = record["ratios"]["project2"]
    run_s = jx["run"]["median_s"]
    rows.append(
        [
            f"P-II disk: one run ({p2['config']['epochs']} ep., "
            f"batch {p2['config']['batch_size']})",
            *torch_cells(side, "run"),
            _s(run_s),
            f"{r['run_speedup']:.0f}x",
            _s(jx["compile_s"]),
            f"{jx['run_flops'] / 1e9:.3f}",
            f"{jx['run_flops'] / run_s / 1e9:.2f}",
            f"{run_s / (jx['run_flops'] / 1e9 / rate):.0f}",
        ]
    )
    sw = jx["sweep"]
    detail = ", ".join(
        f"{k} {_s(sw[k + '_s'])}" for k in ("vmap", "loop", "sharded") if k + "_s" in sw
    )
    rows.append(
        [
            f"P-II disk: {sw['runs']}-run sweep ({sw['chosen']}; {detail})",
            *torch_cells(side, "run", sw["runs"]),
            _s(sw["best_s"]),
            f"{r['sweep_speedup']:.0f}x",
            _s(sw["vmap_compile_s"]),
            "",
            "",
            "",
        ]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    env = record["environment"]
    lines.append("")
    lines.append(
        f"JAX {env['versions']['jax']} on {', '.join(env['jax_devices'])}; torch "
        f"{env['versions']['torch']} on {env['torch_device']}; {env['cpu_count']} CPUs; "
        f"matmul {rate:.1f} GFLOP/s (float32, n={record['matmul']['n']}); {env['date']}. "
        "Medians of repeated timings; torch sweeps are runs x its median run (sequential); "
        "'x floor' = time / (FLOPs / matmul rate)."
    )
    return "\n".join(lines)
