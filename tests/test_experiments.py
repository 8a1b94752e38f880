"""scripts/reproduce_report.py --quick end to end: outputs, the run cache, and resuming."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import time
from pathlib import Path

import pytest

from jaxdl import experiments
from jaxdl.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "reproduce_report", REPO / "scripts" / "reproduce_report.py"
)
reproduce_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reproduce_report)


def test_cache_key_ignores_epochs_only_for_length_independent_schedules():
    sgdr = TrainConfig(schedule="sgdr")
    assert experiments.cell_key(sgdr) == experiments.cell_key(sgdr.replace(epochs=100))
    assert experiments.cell_key(sgdr) == experiments.cell_key(sgdr.replace(runs=3, seed=5))
    cosine = TrainConfig(schedule="cosine")
    assert experiments.cell_key(cosine) != experiments.cell_key(cosine.replace(epochs=100))
    assert experiments.cell_key(sgdr) != experiments.cell_key(sgdr.replace(shift=1))


def test_cache_keys_of_default_recipes_survive_new_config_fields():
    # Hard-coded before `width` and `head_input` were added: a field added with a default that
    # keeps the old behaviour must not orphan the runs already cached.
    assert experiments.cell_key(TrainConfig()) == "f39a381e76385407"
    assert experiments.cell_key(TrainConfig(model="siamese")) == "dd9438a84b106c09"
    assert experiments.cell_key(TrainConfig(model="cnn", epochs=6)) == "08293e666a351890"
    assert experiments.cell_key(TrainConfig(model="siamese", width=64)) != "dd9438a84b106c09"
    bnrelu = TrainConfig(model="siamese", head_input="bnrelu")
    assert experiments.cell_key(bnrelu) != "dd9438a84b106c09"


def test_full_plan_covers_every_section():
    plan = experiments.make_plan(experiments.Scale())
    assert {c.section for c in plan.cells} == set(experiments.SECTIONS)
    with pytest.raises(ValueError, match="unknown sections"):
        experiments.make_plan(experiments.Scale(), ["nope"])


def test_quick_reproduction_writes_tables_and_resumes(tmp_path: Path, mnist_dir: Path):
    out = tmp_path / "results"
    argv = ["--quick", "--out", str(out), "--sections", "p2", "s231"]
    assert reproduce_report.main(argv) == 0
    tables = (out / "tables.md").read_text()
    assert "3.3 Project II" in tables and "2.3.1" in tables
    assert (out / "s231.png").stat().st_size > 0 and (out / "p2_loss_0.png").exists()
    cached = sorted(p.name for p in (out / "cache").iterdir())
    # 2 runs of cnn and siamese, 2 runs of each of the 3 Project II recipes.
    assert len(cached) == 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith("python scripts/reproduce_report.py --quick")

    # Resume after an interruption: a lost run is retrained, the others come from the cache.
    lost = next(p for p in (out / "cache").iterdir() if p.name.startswith("cnn-"))
    lost.unlink()
    plan = experiments.make_plan(experiments.Scale.quick(), ["s231"])
    assert experiments.pending_epochs(plan, out) == experiments.Scale.quick().curve_epochs
    start = time.perf_counter()
    assert reproduce_report.main(argv) == 0
    assert lost.exists()
    assert (out / "tables.md").read_text() == tables  # deterministic: the same numbers again
    assert time.perf_counter() - start < 60


def test_arch_section_reruns_the_report_rows_with_the_options(tmp_path: Path, mnist_dir: Path):
    plan = experiments.make_plan(experiments.Scale(), ["arch", "s231"])
    configs = {c.name: c.config for c in plan.cells}
    assert configs[experiments.ARCH_S231_SIAMESE].model_hparams() == experiments.ARCH_SIAMESE
    assert configs[experiments.ARCH_S221_CNN].schedule == "constant"
    assert configs[experiments.ARCH_S221_CNN].weight_decay == 0.0
    # Their own cache entries, not the default recipes' runs.
    keys = {experiments.cell_key(c.config) for c in plan.cells}
    assert len(keys) == len(plan.cells)

    # Long enough for the first report row of each table (2.2.1: epoch 5, 2.3.1: epoch 6).
    scale = dataclasses.replace(experiments.Scale.quick(), s221_epochs=5, curve_epochs=6)
    plan = experiments.make_plan(scale, ["arch"])
    out = tmp_path / "results"
    runs = experiments.run_plan(plan, out)
    tables = experiments.write_outputs(plan, runs, out)
    assert "The report's rows with the architecture options" in tables
    assert experiments.cli_flags({"width": 64, "kernel_size": 5}) == "--width 64 --kernel-size 5"
    assert experiments.cli_flags({"mlp_hidden": (8, 4)}) == "--mlp-hidden 8 4"
    assert f"| cnn {experiments.cli_flags(experiments.ARCH_CNN)} | 0.4 | 5 | 2/2 |" in tables
    assert "| 25.79 |" in tables  # the report's cnn row at 5 epochs beside ours
    siamese_flags = experiments.cli_flags(experiments.ARCH_SIAMESE)
    siamese_row = f"| Weight Sharing (siamese {siamese_flags}) | 6 | 2/2 |"
    assert siamese_row in tables and "| 12.77 |" in tables
    assert (out / "arch_s231.png").stat().st_size > 0
    mlp_row = f"| mlp {experiments.cli_flags(experiments.ARCH_MLP)} | 0.4 | 5 | 2/2 |"
    assert mlp_row in tables and "| 20.34 |" in tables  # the report's mlp row at 5 epochs
    assert configs[experiments.ARCH_S221_MLP].model_hparams() == {"hidden": (1024, 512)}
    assert len(list((out / "cache").iterdir())) == 8  # 4 recipes x 2 runs


def test_repaired_section_reruns_the_report_rows_with_new_pairs(tmp_path: Path, mnist_dir: Path):
    plan = experiments.make_plan(experiments.Scale(), ["repaired", "s221", "s231"])
    configs = {f"{c.section}/{c.name}": c.config for c in plan.cells}
    repaired = [c for c in plan.cells if c.section == "repaired"]
    assert all(c.config.repair for c in repaired) and len(repaired) == 6
    # The report's own recipes, re-paired: only `repair` differs from the default cells.
    mlp = configs[f"repaired/{experiments.REPAIRED_S221_MLP}"]
    assert mlp == configs["s221/mlp dropout 0.4"].replace(repair=True)
    sia = configs[f"repaired/{experiments.REPAIRED_S231_SIAMESE}"]
    assert sia == configs["s231/siamese"].replace(repair=True)
    fresh = configs[f"repaired/{experiments.REPAIRED_S231_CNN_FRESH}"]
    assert fresh == configs["s231/cnn"].replace(repair=True, fresh_bn=True)
    assert len({experiments.cell_key(c.config) for c in plan.cells}) == len(plan.cells)

    scale = dataclasses.replace(experiments.Scale.quick(), s221_epochs=5, curve_epochs=6)
    plan = experiments.make_plan(scale, ["repaired"])
    out = tmp_path / "results"
    tables = experiments.write_outputs(plan, experiments.run_plan(plan, out), out)
    assert "re-paired every epoch" in tables
    assert "| mlp --repair | 0.4 | 5 | 2/2 |" in tables and "| 20.34 |" in tables
    assert "| Weight Sharing (siamese --repair) | 6 | 2/2 |" in tables and "| 12.77 |" in tables
    assert "| Legacy CNN (cnn --repair --fresh-bn) | 6 | 2/2 |" in tables
    assert (out / "repaired_s231.png").stat().st_size > 0
    assert (out / "repaired_fresh_bn.png").stat().st_size > 0


def test_cells_trained_together_are_the_loops_runs(tmp_path: Path):
    # reproduce_report.py --sweep: a cell's missing runs through jaxdl.sweep, cached per run.
    config = TrainConfig(
        model="mlp", epochs=2, runs=3, nb=100, batch_size=25, source="bundled", schedule="sgdr"
    )
    loop = experiments.cached_runs(config, tmp_path / "loop")
    together = experiments.cached_runs(config, tmp_path / "sweep", together=True)
    assert [r["seed"] for r in together] == [r["seed"] for r in loop] == [0, 1, 2]
    for a, b in zip(together, loop, strict=True):
        assert a["test_error"] == b["test_error"] and a["train_error"] == b["train_error"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    # A lost run in the middle (seeds 0 and 2 cached) is retrained alone, the same run again.
    cache = tmp_path / "sweep"
    lost = next(cache.glob("*-seed1.json"))
    kept = {p: p.read_bytes() for p in cache.iterdir() if p != lost}
    lost.unlink()
    again = experiments.cached_runs(config, cache, together=True)
    assert lost.exists() and again[1]["test_error"] == together[1]["test_error"]
    assert all(p.read_bytes() == b for p, b in kept.items())  # the cached runs untouched


def test_repaired_cells_train_one_by_one_under_together(tmp_path: Path):
    # jaxdl.sweep refuses repair=True; reproduce_report.py --sweep must still train such cells
    # (the beat section's +repair rows), run by run: the same runs as without --sweep.
    config = TrainConfig(model="mlp", epochs=2, runs=2, nb=100, batch_size=25, source="bundled")
    config = config.replace(repair=True)
    loop = experiments.cached_runs(config, tmp_path / "loop")
    together = experiments.cached_runs(config, tmp_path / "sweep", together=True)
    for a, b in zip(together, loop, strict=True):
        assert a["test_error"] == b["test_error"] and a["train_loss"] == b["train_loss"]
