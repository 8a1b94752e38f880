"""Sweeps split over devices (jax.sharding) give each run the results of the one-device sweep.

Four CPU devices are simulated with XLA_FLAGS=--xla_force_host_platform_device_count=4,
which must be set before JAX starts: the check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from jaxdl import sweep
from jaxdl.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
# mlp: no convolutions, so the vmapped sweep compiles and runs in seconds on a CPU.
TINY = TrainConfig(model="mlp", epochs=2, runs=3, nb=100, batch_size=25, source="bundled")

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jaxdl import sweep, train
    from jaxdl.config import TrainConfig
    from jaxdl.framework.config import FrameworkConfig
    from jaxdl.framework.optim import sgd
    from jaxdl.framework import train as ftrain

    assert jax.device_count() == 4, jax.devices()
    config = TrainConfig(**json.loads(CONFIG))
    one, four = sweep.runs_mesh(jax.devices()[:1]), sweep.runs_mesh()
    p1 = {name: sweep.train_sweep(config, mesh)["runs"] for name, mesh in
          (("one", one), ("four", four))}
    p1["train_run"] = [train.train_run(config, r) for r in range(config.runs)]

    fc = FrameworkConfig(epochs=2, runs=3)
    seeds = [fc.run_seed(r) for r in range(fc.runs)]
    per_run = [ftrain.disk_data(s, fc.output) for s in seeds]
    data = ftrain.DiskData(*(np.stack(f) for f in zip(*per_run)))
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds))
    kw = dict(layer=ftrain.disk_network(fc.output), epochs=fc.epochs, batch_size=fc.batch_size,
              optimizer=sgd(ftrain.make_schedule(fc.lr, fc.schedule, fc.total_steps)))
    p2 = {}
    for name, mesh in (("one", one), ("four", four)):
        params, history = sweep.framework_sweep(keys, data, mesh=mesh, **kw)
        p2[name] = {k: np.asarray(v).tolist() for k, v in history._asdict().items()}
    # Where the four-device sweep's inputs live: the runs axis split over every device.
    state = sweep._sweep_inputs(config, four)[0]
    placed = len(jax.tree.leaves(state)[0].sharding.device_set)
    print("RESULT" + json.dumps({"p1": p1, "p2": p2, "placed": placed}))
    """
)


def test_sharded_sweeps_equal_one_device_sweeps() -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    code = f"CONFIG = {json.dumps(json.dumps(TINY.to_dict()))}\n" + SCRIPT
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    got = json.loads(line[len("RESULT") :])
    assert got["placed"] == 4
    one, four = got["p1"]["one"], got["p1"]["four"]
    assert [r["seed"] for r in one] == [r["seed"] for r in four] == [0, 1, 2]
    for a, b in zip(one, four, strict=True):
        # Error counts exactly; losses to float32 rounding (a device's block of runs is
        # another vmap width, which XLA may compile to other kernels).
        assert a["train_error"] == b["train_error"] and a["test_error"] == b["test_error"]
        for key in ("train_loss", "test_loss"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5)
    # The batched sweep trains the very runs of train_run one by one (same data, init, order).
    for a, ref in zip(one, got["p1"]["train_run"], strict=True):
        assert a["seed"] == ref["seed"] and a["test_error"] == ref["test_error"]
        for key in ("train_loss", "test_loss"):
            np.testing.assert_allclose(a[key], ref[key], rtol=1e-5)
    for key in ("train_error", "test_error"):
        np.testing.assert_array_equal(got["p2"]["one"][key], got["p2"]["four"][key])
    for key in ("train_loss", "test_loss"):
        np.testing.assert_allclose(got["p2"]["one"][key], got["p2"]["four"][key], rtol=1e-5)


def test_padding_and_strategy_choice() -> None:
    mesh = sweep.runs_mesh()
    assert sweep.padded_runs(10, mesh) % mesh.size == 0
    assert sweep.choose_strategy(10.0, None) == "loop"
    assert sweep.choose_strategy(10.0, 12.0) == "loop"
    assert sweep.choose_strategy(10.0, 3.0) == "vmap"
