"""Project II in JAX: the disk task with jaxdl.framework, all runs in one compiled program."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np
from tqdm import tqdm

from jaxdl.framework import report
from jaxdl.framework.cli import default_out_dir, parse_config
from jaxdl.framework.train import sweep_setup, train_runs


def main(argv: Sequence[str] | None = None) -> int:
    config, out = parse_config(
        argv, "framework_flax.py", "Project II (no-autograd framework) in JAX: the disk task."
    )
    out = out or default_out_dir("flax")
    seeds = [config.run_seed(r) for r in range(config.runs)]
    keys, data, kwargs = sweep_setup(config, seeds)

    bar: tqdm | None = None

    def on_epoch(epoch: np.ndarray, metrics: object) -> None:
        # A host callback from inside the compiled epoch loop: all runs' metrics at once.
        assert bar is not None
        bar.update(1)
        bar.set_postfix(
            loss=f"{np.mean(metrics.train_loss):.4f}",
            test_err=f"{100 * np.mean(metrics.test_error):.2f}%",
        )

    fit = jax.jit(functools.partial(train_runs, **kwargs, on_epoch=on_epoch))
    start = time.perf_counter()
    compiled = fit.lower(keys, data).compile()
    compile_s = time.perf_counter() - start
    bar = tqdm(total=config.epochs, desc=f"{config.runs} runs (vmapped)", unit="epoch")
    start = time.perf_counter()
    _, history = compiled(keys, data)
    history = jax.device_get(history)
    jax.effects_barrier()  # every progress callback has run
    sweep_s = time.perf_counter() - start
    bar.close()

    # The runs ran together: each is credited an equal share of the sweep's wall time.
    runs = [
        report.run_record(seed, jax.tree.map(lambda a, r=r: a[r], history), sweep_s / config.runs)
        for r, seed in enumerate(seeds)
    ]
    env = report.environment(
        "jax",
        str(jax.devices()[0].device_kind),
        {"jax": jax.__version__, "jaxlib": jax.lib.__version__},
    )
    full_config = {
        **config.to_dict(),
        "out": str(out),
        **env,
        "vmapped_runs": True,
        "compile_seconds": compile_s,
        "sweep_seconds": sweep_s,
    }
    results = report.write_results(out, full_config, runs, "jaxdl.framework (JAX)")
    print(report.epoch_table(runs))
    print(f"\n{config.runs} runs in {sweep_s:.2f} s (+ {compile_s:.1f} s compilation)\n")
    print(report.table(results["summary"]))
    for line in report.divergence_warnings(runs):
        print(f"framework_flax.py: warning: {line}", file=sys.stderr)
    print(f"\nwrote {out / 'results.json'} and {out / 'loss.png'}")
    return 0


if __name__ == "__main__":
    from jaxdl import compile_cache

    compile_cache.enable()  # compile once per machine, not per process (JAXDL_COMPILE_CACHE=off)
    sys.exit(main())
