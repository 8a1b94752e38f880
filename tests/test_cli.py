"""The Project I CLIs end to end: results.json, errors.png, the table, and one-line errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxdl import checkpoint, cli, config

REPO = Path(__file__).resolve().parent.parent
# The recipe of tests/test_train.py's smoke runs: the compiled step is shared in one session.
FAST = ["--nb", "500", "--batch-size", "25", "--source", "bundled", "--epochs", "1"]


def check_outputs(out: Path, framework: str, models: list[str], runs: int, epochs: int) -> dict:
    record = json.loads((out / "results.json").read_text())  # strict JSON: no NaN allowed
    cfg = record["config"]
    assert cfg["framework"] == framework and cfg["models"] == models
    assert cfg["runs"] == runs and cfg["epochs"] == epochs and cfg["nb"] == 500
    assert cfg["data"].startswith("MNIST source: bundled")
    assert cfg["device"] and cfg["versions"]["python"]
    assert set(cfg["param_counts"]) == set(models)
    assert len(record["runs"]) == runs * len(models)
    for run in record["runs"]:
        for key in ("train_error", "test_error", "train_loss", "test_loss"):
            assert len(run[key]) == epochs
            assert all(isinstance(v, float) and math.isfinite(v) for v in run[key])
        assert all(0 <= e <= 1 for e in run["train_error"] + run["test_error"])
        assert run["seconds"] > 0 and not run["diverged"]
    for summary in record["summaries"].values():
        for key in ("final_train_error_mean", "final_test_error_mean", "final_test_error_std"):
            assert 0 <= summary[key] <= 1
        assert summary["final_test_error_min"] <= summary["final_test_error_mean"]
    png = (out / "errors.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    return record


def test_flax_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "flax"
    argv = [*FAST, "--runs", "2", "--model", "siamese_aux", "--out", str(out)]
    assert cli.main("flax", argv) == 0
    record = check_outputs(out, "flax", ["siamese_aux"], runs=2, epochs=1)
    assert record["summary"] == record["summaries"]["siamese_aux"]
    assert [r["seed"] for r in record["runs"]] == [0, 1]
    table = capsys.readouterr().out
    assert "| siamese_aux | 1 | 2/2 |" in table and "±" in table


def test_torch_script_end_to_end_with_two_models(tmp_path):
    out = tmp_path / "torch"
    argv = [*FAST, "--runs", "2", "--model", "mlp", "cnn", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_torch.py"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = check_outputs(out, "torch", ["mlp", "cnn"], runs=2, epochs=1)
    assert set(record["summary"]) == {"mlp", "cnn"}  # several models: one summary each
    assert "| mlp | 1 | 2/2 |" in proc.stdout and "| cnn | 1 | 2/2 |" in proc.stdout
    assert "torch cpu (1 threads)" in record["config"]["device"]


def test_flax_sweep_trains_the_runs_of_the_loop(tmp_path, capsys):
    # A fresh interpreter, so that --sweep's one XLA device per core takes effect.
    argv = [*FAST, "--runs", "3", "--model", "mlp"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_flax.py"), *argv, "--sweep"]
        + ["--out", str(tmp_path / "sweep")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    swept = check_outputs(tmp_path / "sweep", "flax", ["mlp"], runs=3, epochs=1)
    assert swept["config"]["sweep"] is True
    assert f"({os.cpu_count()} device(s))" in swept["config"]["device"]
    assert "| mlp | 1 | 3/3 |" in proc.stdout
    assert cli.main("flax", [*argv, "--out", str(tmp_path / "loop")]) == 0
    loop = json.loads((tmp_path / "loop" / "results.json").read_text())
    for a, b in zip(swept["runs"], loop["runs"], strict=True):
        # The same runs (data, initialisation, order, dropout), other kernels: equal error
        # counts here, losses to float32 rounding.
        assert a["seed"] == b["seed"] and a["test_error"] == b["test_error"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert cli.main("torch", [*argv, "--sweep"]) == 2
    assert "--sweep: only train_flax.py has it" in capsys.readouterr().err


BAD_FLAGS = [
    (["--epochs", "0"], "--epochs"),
    (["--runs", "-1"], "--runs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--nb", "0"], "--nb"),
    (["--nb", "10", "--batch-size", "20"], "larger than --nb"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--dropout", "1"], "--dropout"),
    (["--dropout", "-0.2"], "--dropout"),
    (["--model", "resnet"], "--model"),
    (["--source", "s3"], "--source"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--schedule", "step"], "--schedule"),
    (["--epochs", "two"], "--epochs"),
    (["--width", "0"], "--width"),
    (["--width", "64", "--model", "cnn", "mlp"], "--width: mlp has no convolutions"),
    (["--kernel-size", "4"], "--kernel-size"),
    (["--kernel-size", "5", "--model", "mlp"], "--kernel-size: mlp has no convolutions"),
    (["--hidden", "0", "--model", "mlp"], "--hidden: mlp has no convolutions"),
    (["--hidden", "-1"], "--hidden: must not be negative, got -1"),
    (["--hidden", "x"], "--hidden: expected an integer, got 'x'"),
    (["--mlp-hidden", "256", "128"], "--mlp-hidden: only mlp has these layers"),  # siamese_exact
    (["--model", "mlp", "--mlp-hidden", "0"], "--mlp-hidden: must be a positive integer, got 0"),
    (["--head-input", "sigmoid"], "--head-input"),
    (["--head-input", "bnrelu"], "--head-input: only siamese and siamese_aux"),  # siamese_exact
    (["--head-input", "logits", "--model", "siamese", "cnn"], "--head-input: only siamese"),
    (["--sweep", "--checkpoint-dir", "ckpt"], "--sweep: runs trained together keep no checkpoints"),
    (["--sweep", "--repair"], "--sweep: --repair re-pairs run by run"),
    (["--sweep", "--fresh-bn"], "--sweep: --fresh-bn runs run by run"),
    (["--fresh-bn", "--no-batchnorm"], "--fresh-bn: --no-batchnorm leaves no BatchNorm"),
]


@pytest.mark.parametrize(("argv", "needle"), BAD_FLAGS)
def test_bad_flags_exit_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv, prog="train_flax.py")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train_flax.py: error:") and needle in err


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_scripts_bad_flag_and_bad_data(framework, tmp_path):
    script = str(REPO / "scripts" / f"train_{framework}.py")
    proc = subprocess.run([sys.executable, script, "--epochs", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    missing = tmp_path / "nowhere"
    proc = subprocess.run(
        [
            sys.executable,
            script,
            "--source",
            "idx",
            "--data-dir",
            str(missing),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_defaults_are_the_documented_ones():
    args = cli.parse_args([])
    (cfg,) = cli.configs_from_args(args)
    assert cfg == config.TrainConfig()
    assert (cfg.model, cfg.epochs, cfg.runs, cfg.schedule, cfg.source) == (
        "siamese_exact",  # the best measured model (docs/RESULTS.md), issue 7
        25,
        10,
        "sgdr",
        "auto",
    )


def test_mlp_hidden_reaches_the_config_and_the_checkpoint_check(tmp_path):
    args = cli.parse_args(["--model", "mlp", "--mlp-hidden", "1024", "512"])
    assert [c.mlp_hidden for c in cli.configs_from_args(args)] == [(1024, 512)]
    flags = cli.training_flags("flax", args)
    assert flags["mlp_hidden"] == [1024, 512]  # as it is written to (and read from) JSON
    default = cli.training_flags("flax", cli.parse_args(["--model", "mlp"]))
    with pytest.raises(
        checkpoint.FlagMismatch, match="--mlp-hidden 128 64, not --mlp-hidden 1024 512"
    ):
        checkpoint.check_flags(default, flags, tmp_path)
    # A checkpoint from before the flag existed was written with the default sizes.
    older = {k: v for k, v in default.items() if k != "mlp_hidden"}
    checkpoint.check_flags(older, json.loads(json.dumps(default)), tmp_path)


def test_architecture_flags_reach_the_config_and_the_checkpoint_check(tmp_path):
    argv = ["--model", "siamese", "siamese_aux", "--width", "64", "--head-input", "bnrelu"]
    argv += ["--kernel-size", "5", "--hidden", "0"]
    args = cli.parse_args(argv)
    got = {(c.width, c.kernel_size, c.hidden, c.head_input) for c in cli.configs_from_args(args)}
    assert got == {(64, 5, 0, "bnrelu")}
    flags = cli.training_flags("flax", args)
    assert (flags["width"], flags["kernel_size"], flags["hidden"]) == (64, 5, 0)
    assert flags["head_input"] == "bnrelu"
    for change, flag in (
        (["--width", "16"], "--width"),
        (["--kernel-size", "3"], "--kernel-size"),
        (["--hidden", "100"], "--hidden"),
        (["--head-input", "logits"], "--head-input"),
    ):
        other = cli.training_flags("flax", cli.parse_args([*argv, *change]))
        with pytest.raises(checkpoint.FlagMismatch, match=f"written with {flag} ") as exc:
            checkpoint.check_flags(flags, other, tmp_path)
        assert exc.value.flag == flag.removeprefix("--").replace("-", "_")
    # A checkpoint from before these flags existed was written with their defaults.
    default = cli.training_flags("flax", cli.parse_args(["--model", "siamese"]))
    later = ("width", "kernel_size", "hidden", "head_input")
    older = {k: v for k, v in default.items() if k not in later}
    checkpoint.check_flags(older, default, tmp_path)
    with pytest.raises(checkpoint.FlagMismatch, match="--width 32, not --width 64"):
        checkpoint.check_flags(older, {**default, "width": 64}, tmp_path)
