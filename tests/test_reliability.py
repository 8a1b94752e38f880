"""Reliability (issue 8): determinism, checkpoints that survive SIGKILL, divergence, bad input.

Everything runs the real code: a training subprocess is killed while it writes a checkpoint and
then resumed; divergence comes from an absurd learning rate; bad data is written as IDX files.
Sizes are tiny (the bundled digits, nb=100, `mlp`) so the module stays well under a minute.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
import torch

import torch_reference.train as ttrain
from jaxdl import cli, mnist, results, train
from jaxdl.checkpoint import KEEP, CheckpointError, OrbaxCheckpointer
from jaxdl.config import TrainConfig
from jaxdl.framework.cli import parse_config
from tests.test_data import write_idx, write_mnist_folder
from torch_reference.checkpoint import TorchCheckpointer

REPO = Path(__file__).resolve().parent.parent
TINY = TrainConfig(model="mlp", epochs=4, runs=2, nb=100, batch_size=25, source="bundled")
TINY_FLAGS = [
    *("--model", "mlp", "--epochs", "4", "--runs", "2", "--nb", "100"),
    *("--batch-size", "25", "--source", "bundled"),
]


def numbers(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs without their wall time (`seconds`), the one field that may differ."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def one_line_error(text: str, prog: str) -> str:
    """The final stderr line, which must be the whole error; no traceback anywhere."""
    assert "Traceback" not in text
    line = last_line(text)
    assert line.startswith(f"{prog}: error: "), line
    return line


@pytest.fixture(scope="module")
def flax_reference() -> list[dict[str, Any]]:
    """TINY trained once, uninterrupted, in this process."""
    return train.train_and_evaluate(TINY)["runs"]


@pytest.fixture
def torch_cpu():
    """Deterministic kernels, as the torch CLI runs; one thread, since on a busy 2-core machine
    two threads spinning for these tiny batches made torch ~10x slower."""
    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.set_num_threads(before[1])


# --- Determinism ------------------------------------------------------------------------------


def test_flax_same_seed_same_bits_other_seed_differs(flax_reference) -> None:
    again = train.train_and_evaluate(TINY)["runs"]
    assert numbers(again) == numbers(flax_reference)  # exact float equality, every epoch
    other = train.train_and_evaluate(TINY.replace(seed=7, runs=1))["runs"]
    assert other[0]["test_loss"] != flax_reference[0]["test_loss"]


def test_torch_same_seed_same_bits_other_seed_differs(torch_cpu) -> None:
    config = TINY.replace(epochs=2, runs=1)
    first = ttrain.train_and_evaluate(config)["runs"]
    assert numbers(ttrain.train_and_evaluate(config)["runs"]) == numbers(first)
    other = ttrain.train_and_evaluate(config.replace(seed=7))["runs"]
    assert other[0]["test_loss"] != first[0]["test_loss"]


# --- Checkpoints: a real kill, then resume ------------------------------------------------------


def test_flax_killed_mid_save_resumes_to_the_same_bits(
    tmp_path: Path, flax_reference, capsys
) -> None:
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    argv = [*TINY_FLAGS, "--checkpoint-dir", str(ckpt), "--out", str(out)]
    cmd = [sys.executable, "scripts/train_flax.py", *argv]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Kill while Orbax writes a step (its temporary folder exists) after one step committed.
    mid_save = False
    while proc.poll() is None:
        names = os.listdir(ckpt) if ckpt.is_dir() else []
        committed = [n for n in names if n.isdigit()]
        mid_save = bool(committed) and any("tmp" in n for n in names)
        if mid_save or len(committed) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert mid_save, "the kill did not land during a save"
    assert not (out / "results.json").exists()

    # The previous step is whole: the checkpoint opens and holds a run in progress.
    flags = cli.training_flags("flax", cli.parse_args(argv))
    opened = OrbaxCheckpointer(ckpt, flags, resume=True)
    assert opened.resumed and 1 <= opened.epochs_done() < TINY.runs * TINY.epochs
    opened.close()

    # Resumed by the same driver in this process (whose compiled steps the reference already
    # made): the epochs before the kill were computed by the killed process, the rest here.
    assert cli.main("flax", [*argv, "--resume"]) == 0
    assert "resuming" in capsys.readouterr().err
    assert not [n for n in os.listdir(ckpt) if "tmp" in n]  # the half-written step is gone
    resumed = json.loads((out / "results.json").read_text())["runs"]
    assert numbers(resumed) == numbers(flax_reference)  # bitwise, seconds aside


def test_torch_interrupted_run_resumes_to_the_same_bits(tmp_path: Path, torch_cpu) -> None:
    config = TINY.replace(epochs=2)
    flags = {"framework": "torch", **config.to_dict()}
    reference = ttrain.train_and_evaluate(config)["runs"]

    class Interrupt(Exception):
        pass

    def interrupt(run: int, epoch: int, row: dict[str, float]) -> None:
        if (run, epoch) == (1, 0):
            raise Interrupt

    first = TorchCheckpointer(tmp_path, flags, resume=False)
    with pytest.raises(Interrupt):
        ttrain.train_and_evaluate(config, interrupt, checkpoint=first)
    assert len(list(tmp_path.glob("step-*.pt"))) == KEEP == 3  # steps 1-3 of 3 saved
    second = TorchCheckpointer(tmp_path, flags, resume=True)
    assert second.epochs_done() == config.epochs + 1
    resumed = ttrain.train_and_evaluate(config, checkpoint=second)["runs"]
    assert numbers(resumed) == numbers(reference)


def test_torch_killed_process_resumes_to_the_same_bits(tmp_path: Path, torch_cpu, capsys) -> None:
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    argv = [*TINY_FLAGS, "--threads", "1", "--checkpoint-dir", str(ckpt), "--out", str(out)]
    cmd = [sys.executable, "scripts/train_torch.py", *argv]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None and not list(ckpt.glob("step-*.pt")):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (out / "results.json").exists()
    reference = ttrain.train_and_evaluate(TINY)["runs"]
    assert cli.main("torch", [*argv, "--resume"]) == 0
    assert "resuming" in capsys.readouterr().err
    resumed = json.loads((out / "results.json").read_text())["runs"]
    assert numbers(resumed) == numbers(reference)


@pytest.fixture(scope="module")
def flax_checkpoint(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished checkpoint written by the flax CLI (in-process), and its flags."""
    root = tmp_path_factory.mktemp("flax_ckpt")
    argv = [*TINY_FLAGS, "--epochs", "1", "--runs", "1", "--checkpoint-dir", str(root / "ckpt")]
    assert cli.main("flax", [*argv, "--out", str(root / "out")]) == 0
    return root / "ckpt", argv


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        (["--lr", "0.01"], "--lr"),
        (["--model", "cnn"], "--model"),
        (["--nb", "200"], "--nb"),
        (["--optimizer", "adamw"], "--optimizer"),
        (["--seed", "3"], "--seed"),
    ],
)
def test_resume_with_other_flags_is_refused(flax_checkpoint, change, flag, capsys, tmp_path):
    ckpt, argv = flax_checkpoint
    rc = cli.main("flax", [*argv, *change, "--resume", "--out", str(tmp_path)])
    line = one_line_error(capsys.readouterr().err, "train_flax.py")
    assert rc == 2
    assert f"argument {flag}:" in line and "was written with" in line and str(ckpt) in line


def test_checkpoint_folder_misuse_is_refused(flax_checkpoint, capsys, tmp_path) -> None:
    ckpt, argv = flax_checkpoint
    assert cli.main("flax", [*argv, "--out", str(tmp_path)]) == 2  # no --resume
    assert "pass --resume" in one_line_error(capsys.readouterr().err, "train_flax.py")
    assert cli.main("torch", [*argv, "--resume", "--out", str(tmp_path)]) == 2  # a flax folder
    line = one_line_error(capsys.readouterr().err, "train_torch.py")
    assert "not train_torch.py checkpoints" in line
    with pytest.raises(SystemExit) as e:
        cli.main("flax", [*TINY_FLAGS, "--resume"])
    assert e.value.code == 2
    assert "--resume: needs --checkpoint-dir" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as e:
        cli.main("flax", [*TINY_FLAGS, "--checkpoint-dir", str(tmp_path / "a_file")])
    assert e.value.code == 2
    assert "is a file, not a folder" in one_line_error(capsys.readouterr().err, "train_flax.py")


def _interrupted(backend: Any, checkpointer: Any, config: TrainConfig) -> None:
    """Trains `config` until run 1 ends its first epoch, saving a checkpoint every epoch."""

    class Interrupt(Exception):
        pass

    def interrupt(run: int, epoch: int, row: dict[str, float]) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        backend.train_and_evaluate(config, interrupt, checkpoint=checkpointer)
    checkpointer.close()


@pytest.mark.parametrize("damage", ["state", "record"])
def test_flax_truncated_checkpoint_is_refused(damage, tmp_path, capsys) -> None:
    ckpt = tmp_path / "ckpt"
    argv = [*TINY_FLAGS, "--runs", "1", "--checkpoint-dir", str(ckpt), "--resume"]
    args = cli.parse_args(argv)
    (config,) = cli.configs_from_args(args)
    _interrupted(
        train, OrbaxCheckpointer(ckpt, cli.training_flags("flax", args), resume=False), config
    )
    folder = ckpt / "1" / ("state" if damage == "state" else "meta")
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and path.name != "commit_success.txt":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rc = cli.main("flax", [*argv, "--out", str(tmp_path / "out")])
    line = one_line_error(capsys.readouterr().err, "train_flax.py")
    assert rc == 1
    assert str(ckpt / "1") in line and "cannot read" in line
    assert not (tmp_path / "out").exists()


def test_torch_truncated_checkpoint_is_refused(tmp_path, capsys, torch_cpu) -> None:
    ckpt = tmp_path / "ckpt"
    argv = [*TINY_FLAGS, "--runs", "1", "--checkpoint-dir", str(ckpt), "--resume"]
    args = cli.parse_args(argv)
    (config,) = cli.configs_from_args(args)
    flags = cli.training_flags("torch", args)
    _interrupted(ttrain, TorchCheckpointer(ckpt, flags, resume=False), config)
    step = ckpt / "step-1.pt"
    step.write_bytes(step.read_bytes()[: step.stat().st_size // 2])
    rc = cli.main("torch", [*argv, "--out", str(tmp_path / "out")])
    line = one_line_error(capsys.readouterr().err, "train_torch.py")
    assert rc == 1 and str(step) in line and "cannot read" in line


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_state_of_another_model_is_refused(framework, tmp_path, torch_cpu) -> None:
    """A step whose record says `cnn` but whose state is an `mlp`'s: refused, never loaded."""
    backend, opener = (
        (train, OrbaxCheckpointer) if framework == "flax" else (ttrain, TorchCheckpointer)
    )
    mlp, cnn = TINY.replace(runs=1, epochs=2), TINY.replace(model="cnn", runs=1, epochs=2)
    flags = {"framework": framework}
    _interrupted(backend, opener(tmp_path, flags, resume=False), mlp)
    forged = opener(tmp_path, flags, resume=True)
    forged.runs[0]["model"] = "cnn"
    with pytest.raises(CheckpointError) as e:
        backend.train_run(cnn, 0, checkpoint=forged)
    assert "\n" not in str(e.value) and ("does not" in str(e.value) or "cannot" in str(e.value))


# --- Divergence --------------------------------------------------------------------------------


def test_flax_divergence_stops_the_run_and_keeps_the_last_good_state(tmp_path, capsys) -> None:
    # Adam at lr 3e9 truly overflows (a few epochs in, for this seed): no mocking.
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    argv = [*TINY_FLAGS, "--runs", "1", "--epochs", "6", "--lr", "3e9", "--schedule", "constant"]
    assert cli.main("flax", [*argv, "--checkpoint-dir", str(ckpt), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    record = json.loads((out / "results.json").read_text(), parse_constant=pytest.fail)
    (run,) = record["runs"]
    assert run["diverged"] is True
    epoch, step = run["diverged_epoch"], run["diverged_step"]
    assert len(run["test_error"]) == epoch - 1  # the good epochs only, no NaN
    assert all(math.isfinite(v) for v in run["train_loss"] + run["test_loss"])
    warning = next(line for line in err.splitlines() if "diverged" in line)
    assert f"mlp run 1 (seed 0) diverged at epoch {epoch}" in warning
    assert step is None or f"step {step} of 4" in warning
    summary = record["summary"]
    assert summary["diverged_runs"] == 1 and summary["final_test_error_mean"] is None

    # The last good state is a kept step: finite, after epoch `epoch - 1`.
    kept = OrbaxCheckpointer(ckpt, cli.training_flags("flax", cli.parse_args(argv)), resume=True)
    (good_step,) = kept.preserved
    assert str(kept.step_path(good_step)) in warning
    model, tx = train.build(cli.configs_from_args(cli.parse_args(argv))[0])
    template = (train.create_train_state(model, tx, jax.random.PRNGKey(0)), jax.random.PRNGKey(0))
    state, _ = kept.restore_state(good_step, template)
    assert int(state.step) == (epoch - 1) * 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
    kept.close()


def test_torch_divergence_names_run_epoch_and_step(tmp_path, torch_cpu) -> None:
    config = TINY.replace(runs=2, epochs=2, lr=1e30, schedule="constant")
    messages: list[str] = []
    ckpt = TorchCheckpointer(tmp_path, {"framework": "torch"}, resume=False)
    out = ttrain.train_and_evaluate(config, checkpoint=ckpt, on_diverged=messages.append)
    assert [r["diverged"] for r in out["runs"]] == [True, True]
    assert out["summary"]["diverged_runs"] == 2 and out["summary"]["final_test_error_mean"] is None
    first = out["runs"][0]
    assert messages[0] == first["diverged_message"]
    assert f"mlp run 1 (seed 0) diverged at epoch {first['diverged_epoch']}" in messages[0]
    assert first["diverged_step"] is None or f"step {first['diverged_step']} of 4" in messages[0]
    # Each run's last good state is a kept step (beyond the KEEP latest).
    assert len(ckpt.preserved) == 2 and all(ckpt.step_path(s).is_file() for s in ckpt.preserved)


# --- Bad flags: exit 2, one argparse line ------------------------------------------------------
# Through the whole driver (cli.main); tests/test_cli.py runs the scripts as processes.


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--model", "resnet"], "--model"),
        (["--epochs", "0"], "--epochs"),
        (["--runs", "-1"], "--runs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--nb", "0"], "--nb"),
        (["--nb", "10", "--batch-size", "50"], "--batch-size"),
        (["--lr", "0"], "--lr"),
        (["--lr", "-0.001"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--weight-decay", "-0.1"], "--weight-decay"),
        (["--dropout", "1"], "--dropout"),
        (["--dropout", "-0.1"], "--dropout"),
        (["--source", "mnist"], "--source"),
        (["--epochs", "two"], "--epochs"),
    ],
)
def test_bad_flag_is_one_argparse_line(argv, flag, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main("flax", argv)
    assert e.value.code == 2
    assert f"argument {flag}" in one_line_error(capsys.readouterr().err, "train_flax.py")


# --- Bad data: exit 1, one line naming the file -------------------------------------------------


@pytest.fixture
def idx_folder(tmp_path: Path) -> Path:
    """Real digits as IDX: 400 training and 300 test (enough for --nb 100, not --nb 250)."""
    return write_mnist_folder(tmp_path / "mnist", mnist.load_digits("bundled"), 400, 300)


def _damage(folder: Path, case: str) -> str:
    """Breaks `folder` as `case` says; returns the path or text the message must name."""
    pools = mnist.load_digits("bundled")
    if case == "missing folder":
        return str(folder / "nowhere")
    if case == "truncated gz":
        path = folder / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:3000])
        return str(path)
    if case == "corrupt gz":
        path = folder / "t10k-labels-idx1-ubyte.gz"
        raw = bytearray(path.read_bytes())
        raw[20:40] = bytes(20)
        path.write_bytes(bytes(raw))
        return str(path)
    if case == "wrong magic":
        return str(write_idx(folder / "train-labels-idx1-ubyte", pools.train_images[:400]))
    if case == "inconsistent counts":
        write_idx(folder / "t10k-labels-idx1-ubyte", pools.test_labels[:299])
        return "299 labels"
    if case == "raw file shorter than its header says":
        raw = gzip.decompress((folder / "train-labels-idx1-ubyte.gz").read_bytes())[:-5]
        (folder / "train-labels-idx1-ubyte.gz").unlink()
        (folder / "train-labels-idx1-ubyte").write_bytes(raw)
        return str(folder / "train-labels-idx1-ubyte")
    if case == "too few digits for nb":
        return str(folder)
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "missing folder",
        "truncated gz",
        "corrupt gz",
        "wrong magic",
        "inconsistent counts",
        "raw file shorter than its header says",
        "too few digits for nb",
    ],
)
def test_bad_data_is_exit_1_and_one_line(case, idx_folder, capsys, tmp_path) -> None:
    named = _damage(idx_folder, case)
    data_dir = named if case == "missing folder" else str(idx_folder)
    nb = "250" if case == "too few digits for nb" else "100"
    argv = [*TINY_FLAGS, "--runs", "1", "--source", "idx", "--data-dir", data_dir, "--nb", nb]
    rc = cli.main("flax", [*argv, "--out", str(tmp_path / "out")])
    line = one_line_error(capsys.readouterr().err, "train_flax.py")
    assert rc == 1 and named in line
    assert not (tmp_path / "out").exists()


# --- Output ------------------------------------------------------------------------------------


def test_existing_results_are_refused_unless_overwrite(tmp_path, capsys) -> None:
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        cli.main("flax", [*TINY_FLAGS, "--out", str(tmp_path)])
    assert e.value.code == 2
    line = one_line_error(capsys.readouterr().err, "train_flax.py")
    assert "argument --out" in line and "--overwrite" in line
    argv = [*TINY_FLAGS, "--epochs", "1", "--runs", "1", "--out", str(tmp_path), "--overwrite"]
    assert cli.main("flax", argv) == 0
    assert json.loads((tmp_path / "results.json").read_text())["runs"]


def test_results_are_written_atomically(tmp_path) -> None:
    path = tmp_path / "results.json"
    results.write_json(path, {"runs": [1.5, float("nan")]})
    before = path.read_text()
    assert json.loads(before) == {"runs": [1.5, None]}  # strict JSON: NaN becomes null
    with pytest.raises(TypeError):
        results.write_json(path, {"runs": [object()]})  # fails while serialising
    assert path.read_text() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# --- Project II scripts: --out/--overwrite and divergence ----------------------------------------


def _framework_script(name: str) -> Any:
    """scripts/<name>.py as a module, to call its main() in this process."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_framework_out_is_refused_unless_overwrite(tmp_path, capsys) -> None:
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(SystemExit) as e:
        parse_config(["--out", str(tmp_path)], "framework_flax.py", "")
    assert e.value.code == 2
    line = one_line_error(capsys.readouterr().err, "framework_flax.py")
    assert "argument --out" in line and "--overwrite" in line
    _, out = parse_config(["--out", str(tmp_path), "--overwrite"], "framework_flax.py", "")
    assert out == tmp_path


def test_framework_divergence_is_named_and_counted(tmp_path, capsys) -> None:
    # Two linear outputs (no Tanh to bound them) and SGD at lr 100 truly blow up.
    argv = ["--output", "2", "--lr", "100", "--epochs", "2", "--runs", "2", "--batch-size", "100"]
    script = _framework_script("framework_flax")
    assert script.main([*argv, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    record = json.loads((tmp_path / "results.json").read_text(), parse_constant=pytest.fail)
    assert [r["diverged"] for r in record["runs"]] == [True, True]
    assert record["summary"]["diverged_runs"] == 2
    assert record["summary"]["final_test_error_mean"] is None
    for i, run in enumerate(record["runs"]):
        expected = f"run {i + 1} (seed {i}) diverged at epoch {run['diverged_epoch']}"
        assert f"framework_flax.py: warning: {expected}" in err
