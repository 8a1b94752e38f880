"""scripts/benchmark.py runs end to end on a tiny configuration and writes well-formed JSON.

No timing is asserted: speed is measured by the benchmark on a quiet machine, not in tests.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from jaxdl import benchmark

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import benchmark as benchmark_script  # noqa: E402  (scripts/ is not a package)

TINY = [
    "--models", "mlp",
    "--sweep-models", "mlp",
    "--epochs", "1",
    "--nb", "100",
    "--framework-epochs", "1",
    "--repeats", "1",
    "--sweep-runs", "2",
    "--source", "bundled",
    "--torch-threads", "1",  # one setting keeps the test short; the default adds another
]  # fmt: skip


def _positive_seconds(timing: dict[str, Any]) -> None:
    assert timing["median_s"] > 0 and timing["min_s"] > 0
    assert timing["min_s"] <= timing["median_s"]
    assert len(timing["samples_s"]) >= 1


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    capture = []
    status = benchmark_script.main([*TINY, "--json", str(out)])
    assert status == 0
    capture.append(out.read_text())
    return json.loads(out.read_text()), capture[0]


def test_json_is_strict_and_names_the_machine(record: tuple[dict[str, Any], str]) -> None:
    data, text = record
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    env = data["environment"]
    for key in ("date", "cpu_count", "jax_devices", "torch_device", "versions", "jax_backend"):
        assert env[key], key
    assert {"jax", "jaxlib", "flax", "optax", "torch"} <= set(env["versions"])
    # The script leaves JAX's persistent cache off: its compile times are cold compiles.
    assert env["compilation_cache_dir"] == os.environ.get("JAX_COMPILATION_CACHE_DIR")
    assert data["command"][0] == "scripts/benchmark.py"
    assert data["matmul"]["gflops"] > 0


def test_project1_measurements(record: tuple[dict[str, Any], str]) -> None:
    data, _ = record
    mlp = data["project1"]["mlp"]
    assert mlp["config"]["epochs"] == 1 and mlp["config"]["nb"] == 100
    jx = mlp["jax"]
    _positive_seconds(jx["step"])
    _positive_seconds(jx["run"])
    _positive_seconds(jx["scanned_run"])
    # The one-run figure is the faster of train_run's loop and the scanned epochs.
    runs = {"loop": jx["run"]["median_s"], "scanned": jx["scanned_run"]["median_s"]}
    assert jx["run_best_s"] == min(runs.values()) == runs[jx["run_chosen"]]
    assert jx["compile_s"] >= 0
    assert jx["step_flops"] > 0 and jx["eval_flops"] > 0
    assert jx["run_flops"] == pytest.approx(
        jx["steps_per_run"] * jx["step_flops"] + 2 * jx["eval_flops"]
    )
    assert set(mlp["torch"]) == {"1"}
    for side in mlp["torch"].values():
        _positive_seconds(side["run"])
        _positive_seconds(side["step"])
    sweep = jx["sweep"]
    assert sweep["runs"] == 2 and sweep["chosen"] in ("loop", "vmap", "sharded", "scan")
    measured = {k: sweep[f"{k}_s"] for k in ("loop", "sharded", "scan")} | {
        "vmap": sweep["batched_s"]
    }
    assert sweep["best_s"] == min(t for t in measured.values() if t)
    assert measured[sweep["chosen"]] == sweep["best_s"]
    # scripts/benchmark.py makes each CPU core a device: with two or more, the one-run-per-
    # device sweep is measured too.
    assert (sweep["sharded_s"] is not None) == (sweep["devices"] > 1)
    # The scanned sweep is timed exactly where the batched one beat the loop.
    batching_paid = sweep["batched_s"] is not None and sweep["batched_s"] < sweep["loop_s"]
    assert (sweep["scan_s"] is not None) == batching_paid


def test_project2_and_ratios(record: tuple[dict[str, Any], str]) -> None:
    data, _ = record
    p2 = data["project2"]
    _positive_seconds(p2["jax"]["run"])
    assert p2["jax"]["sweep"]["chosen"] in ("vmap", "loop", "sharded")
    assert p2["jax"]["step_flops"] > 0
    for side in p2["torch"].values():
        _positive_seconds(side["run"])
    ratios = data["ratios"]
    assert set(ratios) == {"project1/mlp", "project2"}
    for entry in ratios.values():
        for key, value in entry.items():
            if key != "torch_best_threads":
                assert math.isfinite(value) and value > 0, key


def test_table_has_a_row_per_measurement(record: tuple[dict[str, Any], str]) -> None:
    table = benchmark.format_table(record[0])
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 3 + 2  # header; mlp step, run, sweep; disk run, sweep
    assert "P-I mlp: one run" in table and "P-II disk: 2-run sweep" in table
    assert "scanned " in table


def test_quick_is_small() -> None:
    # --quick must stay under 2 minutes on the 2-core CPU: one model, few epochs, 1 repeat.
    quick = benchmark.BenchmarkConfig.quick()
    assert quick.models == ("siamese_aux",) and quick.repeats == 1 and quick.epochs <= 3


def test_time_calls_blocks_and_takes_the_median() -> None:
    calls = []
    timing = benchmark.time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and len(timing.samples) == 3
    assert timing.min <= timing.median


def test_torch_device_loop_runs() -> None:
    # The loop timed on CUDA machines, run here on the CPU so that it is exercised without one.
    from jaxdl.config import TrainConfig

    config = TrainConfig(model="cnn", epochs=1, runs=1, nb=100, batch_size=50, source="bundled")
    benchmark.torch_run_on(config, 0, device="cpu")
