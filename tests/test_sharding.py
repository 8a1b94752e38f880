"""Sweeps split over devices (jax.sharding) give each run the results of the one-device sweep.

Four CPU devices are simulated with XLA_FLAGS=--xla_force_host_platform_device_count=4,
which must be set before JAX starts: the check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxdl import sweep
from jaxdl.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
# mlp: no convolutions, so the vmapped sweep compiles and runs in seconds on a CPU.
TINY = TrainConfig(model="mlp", epochs=1, runs=3, nb=100, batch_size=25, source="bundled")

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
    # One run per device at a time over two devices: groups of runs [0, 1], then [2] (padded).
    two = sweep.runs_mesh(jax.devices()[:2])
    p1["grouped"] = sweep.train_sweep(config, two, runs_per_device=1)["runs"]
    # Each epoch's steps as one lax.scan program, over the four devices.
    p1["scan"] = sweep.train_sweep(config, four, scan_steps=True)["runs"]

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


@pytest.fixture(scope="module")
def four_devices() -> dict[str, Any]:
    """The sweeps of SCRIPT, run once in a fresh interpreter with four CPU devices."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    code = f"CONFIG = {json.dumps(json.dumps(TINY.to_dict()))}\n" + SCRIPT
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_sharded_sweeps_equal_one_device_sweeps(four_devices: dict[str, Any]) -> None:
    got = four_devices
    assert got["placed"] == 4
    one, four = got["p1"]["one"], got["p1"]["four"]
    grouped, scan = got["p1"]["grouped"], got["p1"]["scan"]
    assert [r["seed"] for r in one] == [r["seed"] for r in four] == [0, 1, 2]
    assert [r["seed"] for r in grouped] == [r["seed"] for r in scan] == [0, 1, 2]
    pairs = [*zip(one, four, strict=True), *zip(one, grouped, strict=True)]
    for a, b in [*pairs, *zip(one, scan, strict=True)]:
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
    assert sweep.choose_strategy(10.0, None, 9.0) == "sharded"
    assert sweep.choose_strategy(10.0, 3.0, 9.0) == "vmap"
    assert sweep.choose_strategy(10.0, 10.0, 10.0) == "loop"  # ties keep the exact path
    assert sweep.choose_strategy(10.0, 3.0, None, 2.0) == "scan"
    with pytest.raises(ValueError, match="runs_per_device"):
        sweep.train_sweep(TINY, mesh, runs_per_device=0)


MULTI_PROCESS = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(ADDRESS, num_processes=2, process_id=int(sys.argv[1]))
    from jaxdl import sweep
    from jaxdl.config import TrainConfig

    assert jax.device_count() == 4 and jax.local_device_count() == 2
    runs = sweep.train_sweep(TrainConfig(**json.loads(CONFIG)), sweep.runs_mesh())["runs"]
    print("RESULT" + json.dumps(runs))
    """
)


def test_sweep_over_two_processes_equals_train_run(four_devices: dict[str, Any]) -> None:
    # jax.distributed on one machine: two processes of two CPU devices each, one mesh of four.
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    code = (
        f"CONFIG = {json.dumps(json.dumps(TINY.to_dict()))}\n"
        f"ADDRESS = 'localhost:{port}'\n" + MULTI_PROCESS
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i)],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    ref = four_devices["p1"]["train_run"]  # train.train_run, one run after another
    for out, _ in outputs:  # every process gathers every run
        line = next(x for x in out.splitlines() if x.startswith("RESULT"))
        runs = json.loads(line[len("RESULT") :])
        for got, want in zip(runs, ref, strict=True):
            assert got["seed"] == want["seed"] and got["test_error"] == want["test_error"]
            np.testing.assert_allclose(got["test_loss"], want["test_loss"], rtol=1e-5)


def test_sweep_records_a_diverged_run_as_train_run_does() -> None:
    # Adam at lr 3e9 truly overflows a few epochs in (no mocking); the sweep must stop
    # recording that run there, as train_run does, and keep NaN out of the summary.
    config = TINY.replace(runs=2, epochs=6, lr=3e9, schedule="constant")
    got = sweep.train_sweep(config, sweep.runs_mesh())
    runs = got["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    diverged = [r for r in runs if r["diverged"]]
    assert diverged, "lr 3e9 should overflow within 6 epochs"
    for r in runs:
        values = [v for key in sweep.METRICS for v in r[key]]
        assert all(np.isfinite(values))
    for r in diverged:
        epoch = r["diverged_epoch"]
        assert all(len(r[key]) == epoch - 1 for key in sweep.METRICS)
        assert (
            f"mlp run {r['seed'] + 1} (seed {r['seed']}) diverged at epoch {epoch}"
            in (r["diverged_message"])
        )
    summary = got["summary"]
    assert summary["diverged_runs"] == len(diverged)
    assert all(v is None or np.isfinite(v) for v in summary.values())
