"""Small timing probes behind docs/BENCHMARKS.md's notes (what was tried and rejected).

    python scripts/speed_probes.py conv-forms     # one convolution: lax.conv vs patches vs slices
    python scripts/speed_probes.py slice-step     # a siamese_aux step and run: nn.Conv vs slices
    python scripts/speed_probes.py devices        # one P-I run and the P-II sweep on the devices
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python scripts/speed_probes.py devices
    python scripts/speed_probes.py conv-grad im2col   # step and run with jaxdl's conv gradient
    python scripts/speed_probes.py conv-grad xla      # ... with XLA's own (before issue 6's change)
    python scripts/speed_probes.py input-grad          # step: input gradient as padded taps vs adds
    python scripts/speed_probes.py k5-grad xla|im2col  # cnn --width 64 --kernel-size 5 runs
    python scripts/speed_probes.py batch-split [xla]  # one run, each batch split over 2 devices
    python scripts/speed_probes.py two-runs [xla]     # two runs one by one, then one per device
    python scripts/speed_probes.py sharded-sweep      # 4 runs: loop vs one run per device
    python scripts/speed_probes.py bn-bound           # a siamese_aux step with / without BatchNorm
    python scripts/speed_probes.py scan-run           # one run: train_run's loop vs scanned epochs
    python scripts/speed_probes.py overlap-eval       # one run: evaluations on a 2nd CPU device
    python scripts/speed_probes.py step-matmuls       # the step's matmuls alone vs the whole step
    python scripts/speed_probes.py profile-step       # where a step's time goes (jax.profiler)

Medians of repeated timings after warm-up, each call waited for; no result is asserted.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxdl import benchmark, models, sweep, train
from jaxdl.config import TrainConfig
from jaxdl.framework import train as ftrain
from jaxdl.framework.config import FrameworkConfig

NHWC = ("NHWC", "HWIO", "NHWC")


def _ms(fn: Callable[..., Any], *args: Any, n: int = 50) -> float:
    return benchmark.time_calls(lambda: fn(*args), n, warmup=2).median * 1e3


def conv_lax(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC)


def conv_patches(x: jax.Array, w: jax.Array) -> jax.Array:
    p = lax.conv_general_dilated_patches(
        x, (3, 3), (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC
    )
    return p @ w.transpose(2, 0, 1, 3).reshape(-1, w.shape[-1])  # patches are (C, kh, kw)


def conv_slices(x: jax.Array, w: jax.Array) -> jax.Array:
    h, wd = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = [xp[:, i : i + h, j : j + wd, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(cols, axis=-1) @ w.reshape(-1, w.shape[-1])


def conv_forms() -> None:
    """One 3x3 convolution three ways, forward and forward + both gradients."""
    key = jax.random.PRNGKey(0)
    for n, hw, cin, cout in [(100, 7, 32, 64), (100, 14, 1, 32), (1000, 7, 32, 64)]:
        x, w = jax.random.normal(key, (n, hw, hw, cin)), jax.random.normal(key, (3, 3, cin, cout))
        cells = []
        for name, f in [("lax.conv", conv_lax), ("patches", conv_patches), ("slices", conv_slices)]:
            grad = jax.jit(jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) ** 2), argnums=(0, 1)))
            cells.append(f"{name} fwd {_ms(jax.jit(f), x, w):.2f} grad {_ms(grad, x, w):.2f} ms")
        print(f"N={n} {hw}x{hw} {cin}->{cout}: " + "; ".join(cells))


class SliceConv(nn.Module):
    """jaxdl's 3x3 conv (same parameters and initialisers) computed as `conv_slices`."""

    features: int
    in_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", models._torch_kernel_init, shape)
        bias = self.param("bias", models._torch_bias_init(self.in_channels * 9), (self.features,))
        return conv_slices(x, kernel) + bias


def _step_and_run(tag: str) -> None:
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=1)
    model, tx = train.build(cfg)
    holder = [train.create_train_state(model, tx, jax.random.PRNGKey(0))]
    tr, _ = train.load_pairs(cfg, 0)
    idx = train.epoch_batches(jax.random.PRNGKey(1), cfg.nb, cfg.batch_size)

    def step() -> Any:
        holder[0], _ = train.train_batch(holder[0], tr, idx, 0, aux_weight=0.8, shift=0)
        return holder[0]

    step_ms = benchmark.time_calls(step, 40, warmup=3).median * 1e3
    train.train_run(cfg, 0)  # compiles
    start = time.perf_counter()
    train.train_run(cfg, 1)
    print(f"{tag}: step {step_ms:.2f} ms, 25-epoch run {time.perf_counter() - start:.2f} s")


def slice_step() -> None:
    """A siamese_aux step and run with nn.Conv, then with every conv as SliceConv."""
    _step_and_run("nn.Conv")
    models._conv = lambda features, in_channels, name: SliceConv(features, in_channels, name=name)
    train._build.cache_clear()
    _step_and_run("slices")


def _timed_runs(cfg: TrainConfig, runs: Sequence[int]) -> str:
    """Wall seconds of `train.train_run(cfg, r)` for each r, comma-separated."""
    seconds = []
    for r in runs:
        start = time.perf_counter()
        train.train_run(cfg, r)
        seconds.append(f"{time.perf_counter() - start:.2f}")
    return ", ".join(seconds)


def conv_grad(which: str) -> None:
    """A siamese_aux step and three runs with the conv gradient `which` (one per process: the
    jit caches would not tell the two models apart)."""
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=1)
    _step_and_run(f"{which} gradient")
    print(f"{which} gradient: three more runs {_timed_runs(cfg, (2, 3, 4))} s")


def _input_grad_by_taps(res: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    # jaxdl's conv_same backward with the input gradient's nine taps padded into place and
    # summed (one fused loop) instead of nine in-place `.at[].add` updates.
    patches, kernel, (n, h, w, c) = res
    g2 = g.reshape(n * h * w, -1)
    dkernel = (patches.T @ g2).reshape(kernel.shape)
    dpatches = (g2 @ kernel.reshape(9 * c, -1).T).reshape(n, h, w, 9 * c)
    taps = [
        jnp.pad(dpatches[..., k * c : (k + 1) * c], ((0, 0), (i, 2 - i), (j, 2 - j), (0, 0)))
        for k, (i, j) in enumerate((i, j) for i in range(3) for j in range(3))
    ]
    return sum(taps[1:], taps[0])[:, 1:-1, 1:-1], dkernel


def input_grad(rounds: int = 5) -> None:
    """A siamese_aux step with the conv input gradient as nine in-place adds (jaxdl's) and
    as nine padded taps summed, interleaved in one process: `rounds` x 150 steps each."""
    variants = {}
    for name, bwd in (("adds", models._conv_im2col_bwd), ("taps", _input_grad_by_taps)):
        f = jax.custom_vjp(models._conv_same_xla)
        f.defvjp(models._conv_im2col_fwd, bwd)
        variants[name] = f
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=1)
    tr, _ = train.load_pairs(cfg, 0)
    idx = train.epoch_batches(jax.random.PRNGKey(1), cfg.nb, cfg.batch_size)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, f in variants.items():
            models._conv_im2col = f  # looked up by conv_same at trace time
            jax.clear_caches()
            train._build.cache_clear()
            model, tx = train.build(cfg)
            holder = [train.create_train_state(model, tx, jax.random.PRNGKey(0))]

            def step(holder: list = holder) -> Any:
                holder[0], _ = train.train_batch(holder[0], tr, idx, 0, aux_weight=0.8, shift=0)
                return holder[0]

            times[name].append(benchmark.time_calls(step, 150, warmup=5).median * 1e3)
    for name, ms in times.items():
        cells = " ".join(f"{t:.2f}" for t in ms)
        median = sorted(ms)[len(ms) // 2]
        print(f"input gradient as {name}: step medians {cells} ms (median {median:.2f})")


def k5_grad(which: str) -> None:
    """10-epoch runs of `cnn --width 64 --kernel-size 5` with XLA's conv gradient (what
    `conv_same` uses for 5x5) or the im2col one (what it uses for 3x3); one per process."""
    if which == "im2col":

        def im2col_everywhere(x: jax.Array, kernel: jax.Array) -> jax.Array:
            return lax.platform_dependent(
                x, kernel, cpu=models._conv_im2col, default=models._conv_same_xla
            )

        models.conv_same = im2col_everywhere
    cfg = TrainConfig(model="cnn", width=64, kernel_size=5, epochs=10, runs=1)
    train.train_run(cfg, 0)  # compiles
    print(f"5x5 kernels, {which} gradient: 10-epoch runs {_timed_runs(cfg, (1, 2, 3))} s")


def _two_cpu_devices() -> list[jax.Device]:
    if jax.device_count() < 2:
        sys.exit("needs XLA_FLAGS=--xla_force_host_platform_device_count=2 (set by main)")
    return jax.devices()[:2]


def batch_split() -> None:
    """One siamese_aux run on one device, then with every batch split over two CPU devices
    (GSPMD: the gathered batch constrained to a `batch` mesh axis; BatchNorm's statistics and
    the gradients become all-reduces; the evaluation sets split the same way)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(_two_cpu_devices(), ("batch",))
    replicated, split = (
        NamedSharding(mesh, PartitionSpec()),
        NamedSharding(mesh, PartitionSpec("batch")),
    )
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=1)
    one_device = train.train_batch

    @functools.partial(jax.jit, static_argnames=("aux_weight", "shift"))
    def split_batch(state, pairs, batch_idx, i, aux_weight, shift=0):  # type: ignore[no-untyped-def]
        idx = batch_idx[i]
        x, target, classes = (
            lax.with_sharding_constraint(a[idx], split)
            for a in (pairs.x, pairs.target, pairs.classes)
        )
        return train.train_step(state, x, target, classes, aux_weight)

    def run(seed: int, spread: bool) -> float:
        start = time.perf_counter()
        tr, te = train.load_pairs(cfg, seed)
        model, tx = train.build(cfg)
        init_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed))
        state = train.create_train_state(model, tx, init_key)
        if spread:
            state, tr, te = jax.device_put((state, tr, te), (replicated, replicated, split))
        train.train_batch = split_batch if spread else one_device
        for epoch in range(cfg.epochs):
            key = jax.random.fold_in(shuffle_key, epoch)
            state, m = train.run_epoch(
                state, tr, te, key, batch_size=cfg.batch_size, aux_weight=0.8
            )
            jax.device_get(m)
        return time.perf_counter() - start

    for spread in (False, True):
        run(0, spread)  # compiles
        times = ", ".join(f"{run(seed, spread):.2f}" for seed in (1, 2, 3))
        print(f"{'batch split over 2 devices' if spread else 'one device'}: runs {times} s")


def two_runs() -> None:
    """Two siamese_aux runs one after the other on one device, then at once, one per device
    (two Python threads, each dispatching to its own CPU device: a probe, not a sweep design)."""
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=1)

    def runs_on(device: jax.Device, seeds: Sequence[int]) -> None:
        with jax.default_device(device):
            for seed in seeds:
                train.train_run(cfg, seed)

    devices = _two_cpu_devices()
    for device in devices:
        runs_on(device, [0])  # compiles for each device
    start = time.perf_counter()
    runs_on(devices[0], [1, 2])
    one_by_one = time.perf_counter() - start
    threads = [
        threading.Thread(target=runs_on, args=(d, [s]))
        for d, s in zip(devices, [1, 2], strict=True)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    at_once = time.perf_counter() - start
    print(f"two runs: one by one {one_by_one:.2f} s, one per device {at_once:.2f} s")


def devices() -> None:
    """One P-I run (default device) and the P-II 10-run sweep sharded over every device."""
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=1)
    train.train_run(cfg, 0)
    runs = []
    for r in (1, 2):
        start = time.perf_counter()
        train.train_run(cfg, r)
        runs.append(f"{time.perf_counter() - start:.2f}")
    fcfg = FrameworkConfig(epochs=50, runs=10)
    keys, data, kw = ftrain.sweep_setup(fcfg, [fcfg.run_seed(r) for r in range(10)])
    mesh = sweep.runs_mesh()
    t = benchmark.time_calls(lambda: sweep.framework_sweep(keys, data, mesh=mesh, **kw), 5)
    print(
        f"{jax.device_count()} device(s): P-I run {', '.join(runs)} s; "
        f"P-II 10-run sweep median {t.median:.3f} s, min {t.min:.3f} s"
    )


def sharded_sweep(rounds: int = 3) -> None:
    """Four 25-epoch siamese_aux runs one by one (train_and_evaluate, the loop), as
    `train_sweep(runs_per_device=1)` over the two CPU devices, and the same with each epoch's
    steps scanned (`scan_steps=True`), alternately."""
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=4)
    mesh = sweep.runs_mesh()
    strategies = {
        "loop": functools.partial(train.train_and_evaluate, cfg),
        "one run per device": functools.partial(sweep.train_sweep, cfg, mesh, runs_per_device=1),
        "... scanned": functools.partial(
            sweep.train_sweep, cfg, mesh, runs_per_device=1, scan_steps=True
        ),
    }
    one_epoch = cfg.replace(epochs=1)
    train.train_run(one_epoch, 0)  # compiles
    sweep.train_sweep(one_epoch, mesh, runs_per_device=1)
    sweep.train_sweep(one_epoch, mesh, runs_per_device=1, scan_steps=True)
    for r in range(rounds):
        times = {}
        for name, fn in strategies.items():
            start = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - start
        print(f"round {r}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


def bn_bound(rounds: int = 3) -> None:
    """A siamese_aux step with its BatchNorm layers and without (the batchnorm=False
    ablation): how much of the step BatchNorm costs, a bound on what fusing it could save."""
    steps = {}
    for bn in (True, False):
        cfg = TrainConfig(model="siamese_aux", batchnorm=bn)
        model, tx = train.build(cfg)
        tr, _ = train.load_pairs(cfg, 0)
        idx = train.epoch_batches(jax.random.PRNGKey(1), cfg.nb, cfg.batch_size)
        holder = [train.create_train_state(model, tx, jax.random.PRNGKey(0))]

        def step(holder: list = holder, tr: Any = tr, idx: jax.Array = idx) -> Any:
            holder[0], _ = train.train_batch(holder[0], tr, idx, 0, aux_weight=0.8, shift=0)
            return holder[0]

        steps["with BatchNorm" if bn else "without"] = step
    for r in range(rounds):
        medians = {k: benchmark.time_calls(s, 150, warmup=5).median * 1e3 for k, s in steps.items()}
        print(f"round {r}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in medians.items()))


def scan_run(rounds: int = 3) -> None:
    """One 25-epoch siamese_aux run on one device: `train.train_run` (a Python loop of
    compiled steps) against `sweep.train_sweep` of that one run with scanned epochs."""
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=1)
    one_device = sweep.runs_mesh(jax.devices()[:1])
    strategies = {
        "train_run": lambda seed: train.train_run(cfg.replace(seed=seed), 0),
        "scanned": lambda seed: sweep.train_sweep(cfg.replace(seed=seed), one_device, None, True),
    }
    for fn in strategies.values():
        fn(0)  # compiles
    for r in range(rounds):
        times = {}
        for name, fn in strategies.items():
            start = time.perf_counter()
            fn(r + 1)
            times[name] = time.perf_counter() - start
        print(f"round {r}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


def overlap_eval(rounds: int = 3) -> None:
    """One 25-epoch siamese_aux run by `train.train_run`, against the same run with each
    epoch's two evaluations on the second CPU device, read back only after the next epoch's
    steps are dispatched, so that they overlap with training (a probe: same numbers, checked)."""
    cfg = TrainConfig(model="siamese_aux", epochs=25, runs=1)
    main_device, eval_device = _two_cpu_devices()

    def overlapped(run: int) -> tuple[float, list[float]]:
        start = time.perf_counter()
        seed = cfg.run_seed(run)
        tr, te = train.load_pairs(cfg, seed)
        tr_eval, te_eval = jax.device_put((tr, te), eval_device)
        model, tx = train.build(cfg)
        init_key, shuffle_key = jax.random.split(jax.random.PRNGKey(seed))
        state = train.create_train_state(model, tx, init_key)
        pending, test_errors = None, []
        for epoch in range(cfg.epochs):
            key = jax.random.fold_in(shuffle_key, epoch)
            batches = train._epoch_batches(key, tr.x.shape[0], cfg.batch_size)
            state, _ = train.train_epoch(state, tr, batches, cfg.aux_weight)
            on_eval = jax.device_put(state, eval_device)
            metrics = train._evaluate_both(on_eval, tr_eval, te_eval, aux_weight=cfg.aux_weight)
            if pending is not None:  # the previous epoch's, read while this one evaluates
                test_errors.append(float(jax.device_get(pending["test_errors"])) / te.x.shape[0])
            pending = metrics
        test_errors.append(float(jax.device_get(pending["test_errors"])) / te.x.shape[0])
        return time.perf_counter() - start, test_errors

    with jax.default_device(main_device):
        overlapped(0)
        train.train_run(cfg, 0)  # compiles
        for r in range(rounds):
            seconds, test_errors = overlapped(r + 1)
            result = train.train_run(cfg, r + 1)
            same = "same" if test_errors == result["test_error"] else "DIFFERENT"
            print(
                f"round {r}: train_run {result['seconds']:.2f} s, evaluations overlapped "
                f"{seconds:.2f} s ({same} test errors)"
            )


def step_matmuls(rounds: int = 3) -> None:
    """A siamese_aux step (100 digits) against its largest matmuls timed alone: the 32 -> 64
    convolution's forward, input gradient and kernel gradient (as jaxdl's CPU step computes
    them), the 1 -> 32 convolution's forward and kernel gradient, and fc1's three products."""
    key = jax.random.PRNGKey(0)

    def rand(*shape: int) -> jax.Array:
        return jax.random.normal(jax.random.fold_in(key, sum(shape)), shape)

    p2, w2, g2 = rand(4900, 288), rand(288, 64), rand(4900, 64)
    p1, w1, g1 = rand(19600, 9), rand(9, 32), rand(19600, 32)
    h, wf, gf = rand(100, 576), rand(576, 100), rand(100, 100)
    products = {
        "conv2 forward": (lambda a, b: a @ b, p2, w2),
        "conv2 input gradient": (lambda a, b: a @ b.T, g2, w2),
        "conv2 kernel gradient": (lambda a, b: a.T @ b, p2, g2),
        "conv1 forward": (lambda a, b: a @ b, p1, w1),
        "conv1 kernel gradient": (lambda a, b: a.T @ b, p1, g1),
        "fc1 forward": (lambda a, b: a @ b, h, wf),
        "fc1 input gradient": (lambda a, b: a @ b.T, gf, wf),
        "fc1 kernel gradient": (lambda a, b: a.T @ b, h, gf),
    }
    cfg = TrainConfig(model="siamese_aux")
    model, tx = train.build(cfg)
    tr, _ = train.load_pairs(cfg, 0)
    idx = train.epoch_batches(jax.random.PRNGKey(1), cfg.nb, cfg.batch_size)
    holder = [train.create_train_state(model, tx, jax.random.PRNGKey(0))]

    def step() -> Any:
        holder[0], _ = train.train_batch(holder[0], tr, idx, 0, aux_weight=0.8, shift=0)
        return holder[0]

    for r in range(rounds):
        times = {name: _ms(jax.jit(fn), a, b, n=200) for name, (fn, a, b) in products.items()}
        step_ms = benchmark.time_calls(step, 150, warmup=5).median * 1e3
        listed = ", ".join(f"{k} {v:.2f}" for k, v in times.items())
        total = sum(times.values())
        print(f"round {r}: {listed} ms; matmuls {total:.2f} ms, step {step_ms:.2f} ms")


def profile_step(steps: int = 20, top: int = 12) -> None:
    """A siamese_aux step under `jax.profiler.trace`: the step's median time (untraced, and
    over the traced steps), how many XLA:CPU thunks (compiled operations) a step runs, the sum
    of their own times (against the traced step's: what is left is idle time or dispatch),
    and the slowest thunks with what they compute."""
    import collections
    import gzip
    import json
    import re
    import tempfile
    from pathlib import Path

    cfg = TrainConfig(model="siamese_aux")
    model, tx = train.build(cfg)
    tr, _ = train.load_pairs(cfg, 0)
    idx = train.epoch_batches(jax.random.PRNGKey(1), cfg.nb, cfg.batch_size)
    holder = [train.create_train_state(model, tx, jax.random.PRNGKey(0))]

    def step() -> Any:
        holder[0], _ = train.train_batch(holder[0], tr, idx, 0, aux_weight=0.8, shift=0)
        return holder[0]

    step_ms = benchmark.time_calls(step, 150, warmup=5).median * 1e3
    hlo = train.train_batch.lower(holder[0], tr, idx, 0, aux_weight=0.8, shift=0).compile()
    hlo_text = hlo.as_text()
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            jax.block_until_ready(holder[0])
            traced_ms = (time.perf_counter() - start) / steps * 1e3
        trace = next(Path(folder).rglob("*.trace.json.gz"))
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    # Thunks are the trace's complete events named after HLO instructions; the rest are the
    # runtime's own spans (executor, Python, thread pool waits).
    runtime = ("ThunkExecutor", "$", "Pjit", "Slinky", "Common")
    own_us: collections.Counter[str] = collections.Counter()
    count = 0
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(runtime):
            own_us[e["name"]] += e["dur"]
            count += 1

    def what(name: str) -> str:
        m = re.search(rf"%{re.escape(name)} = (\S+) .*?op_name=\"([^\"]*)\"", hlo_text)
        return f"{m.group(1)} {m.group(2).split('/', 1)[-1][-60:]}" if m else ""

    total_ms = sum(own_us.values()) / steps / 1e3
    print(
        f"step {step_ms:.2f} ms (150-call median), {traced_ms:.2f} ms traced; "
        f"{count / steps:.0f} thunks a step, their own times {total_ms:.2f} ms a step"
    )

    for name, us in own_us.most_common(top):
        print(f"  {us / steps / 1e3:6.3f} ms  {name:32s} {what(name)}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    two_device_probes = {
        "batch-split": batch_split,
        "two-runs": two_runs,
        "sharded-sweep": sharded_sweep,
        "overlap-eval": overlap_eval,
    }
    p.add_argument(
        "probe",
        choices=[
            "conv-forms",
            "slice-step",
            "devices",
            "conv-grad",
            "input-grad",
            "k5-grad",
            "bn-bound",
            "scan-run",
            "step-matmuls",
            "profile-step",
            *two_device_probes,
        ],
    )
    p.add_argument("which", nargs="?", choices=["im2col", "xla"], default="im2col")
    args = p.parse_args(argv)
    if args.which == "xla":  # the convolutions' gradient as XLA computes it
        models.conv_same = models._conv_same_xla
    if args.probe == "conv-grad":
        conv_grad(args.which)
    elif args.probe == "input-grad":
        input_grad()
    elif args.probe == "k5-grad":
        k5_grad(args.which)
    elif args.probe in two_device_probes:
        two_device_probes[args.probe]()
    else:
        probes = {"conv-forms": conv_forms, "slice-step": slice_step, "devices": devices}
        probes["bn-bound"] = bn_bound
        probes["scan-run"] = scan_run
        probes["step-matmuls"] = step_matmuls
        probes["profile-step"] = profile_step
        probes[args.probe]()
    return 0


if __name__ == "__main__":
    two_devices = ("batch-split", "two-runs", "sharded-sweep", "overlap-eval")
    if len(sys.argv) > 1 and sys.argv[1] in two_devices:
        # Two CPU devices; effective only because JAX has not started a backend yet.
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2"
    sys.exit(main())
