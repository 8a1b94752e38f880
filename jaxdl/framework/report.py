"""Project II results: the report's table, results.json and loss.png (no JAX, no torch import)."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxdl.results import summarize, write_json

__all__ = [
    "divergence_warnings",
    "environment",
    "epoch_table",
    "plot_history",
    "run_record",
    "summarise",
    "table",
    "write_results",
]


def run_record(seed: int, history: Any, seconds: float) -> dict[str, Any]:
    """One run as Project I records it; `history` has per-epoch train_loss, train_error,
    test_error, test_loss sequences. A non-finite loss marks the run diverged."""
    record: dict[str, Any] = {"seed": int(seed)}
    for key in ("train_error", "test_error", "train_loss", "test_loss"):
        values = [float(v) for v in np.asarray(getattr(history, key), dtype=np.float64)]
        if key.endswith("error"):
            # k/1000 computed in float32 (JAX) carries ~1e-8 of noise: 6 decimals are exact.
            values = [round(v, 6) for v in values]
        record[key] = values
    bad = [i for i, v in enumerate(record["train_loss"]) if not math.isfinite(v)]
    record["diverged"] = bool(bad)
    if bad:
        record["diverged_epoch"] = bad[0] + 1
    record["seconds"] = float(seconds)
    return record


def divergence_warnings(runs: Sequence[dict[str, Any]]) -> list[str]:
    """One line per diverged run, naming the run, its seed and the first non-finite epoch.

    The step is not named: the compiled epoch reduces its step losses to their mean (which is
    non-finite exactly when one of them is), and a run takes well under a second to redo.
    """
    return [
        f"run {i + 1} (seed {r['seed']}) diverged at epoch {r['diverged_epoch']}: non-finite "
        "training loss; the run is marked diverged and left out of the summary"
        for i, r in enumerate(runs)
        if r.get("diverged")
    ]


def summarise(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Project I's summary (jaxdl.results.summarize: mean, population std, min of the final
    epoch, diverged runs excluded, None rather than NaN) plus the maxima the report's table
    shows."""
    out = summarize(runs)
    good = [r for r in runs if not r.get("diverged")]
    for name, key in (("final_train_error", "train_error"), ("final_test_error", "test_error")):
        out[f"{name}_max"] = float(max(r[key][-1] for r in good)) if good else None
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def table(summary: dict[str, Any]) -> str:
    """The report's table (section 3.3): final train and test error in %, over the runs."""
    lines = ["| Metric | Train (%) | Test (%) |", "|--------|-----------|----------|"]
    for stat in ("mean", "min", "max", "std"):
        train = summary[f"final_train_error_{stat}"]
        test = summary[f"final_test_error_{stat}"]
        lines.append(f"| {stat} | {_pct(train)} | {_pct(test)} |")
    n, bad = summary["runs"], summary["diverged_runs"]
    lines.append(f"\n{n - bad} of {n} runs" + (f" ({bad} diverged, excluded)" if bad else ""))
    return "\n".join(lines)


def epoch_table(runs: Sequence[dict[str, Any]]) -> str:
    """Per epoch, the mean over the runs of train loss, train error and test error."""
    good = [r for r in runs if not r.get("diverged")] or list(runs)
    cols = {
        k: np.array([r[k] for r in good], dtype=np.float64)
        for k in ("train_loss", "train_error", "test_error")
    }
    lines = ["epoch  train loss  train err %  test err %"]
    loss, train, test = cols["train_loss"], 100 * cols["train_error"], 100 * cols["test_error"]
    for e in range(loss.shape[1]):
        lines.append(
            f"{e + 1:5d}  {loss[:, e].mean():10.5f}  {train[:, e].mean():11.2f}  "
            f"{test[:, e].mean():10.2f}"
        )
    return "\n".join(lines)


def environment(framework: str, device: str, versions: dict[str, str]) -> dict[str, Any]:
    """What ran it: framework, device, library versions, Python, machine."""
    return {
        "framework": framework,
        "device": device,
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **versions},
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
    }


def plot_history(path: str | os.PathLike, runs: Sequence[dict[str, Any]], title: str) -> None:
    """Two panels per epoch: train loss, and train/test error; mean over runs, +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [r for r in runs if not r.get("diverged")]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4))
    if good:
        epochs = np.arange(1, len(good[0]["train_loss"]) + 1)
        for ax, key, label, scale in (
            (ax_loss, "train_loss", "train loss (MSE)", 1.0),
            (ax_err, "train_error", "train error", 100.0),
            (ax_err, "test_error", "test error", 100.0),
        ):
            values = scale * np.array([r[key] for r in good], dtype=np.float64)
            mean, std = values.mean(axis=0), values.std(axis=0)
            (line,) = ax.plot(epochs, mean, label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_err.set_ylabel("error (%)")
    ax_err.set_ylim(bottom=0)
    for ax in (ax_loss, ax_err):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # nothing to label when every run diverged
            ax.legend()
    fig.suptitle(f"{title} ({len(good)} runs, mean ± std)")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_results(
    out_dir: str | os.PathLike, config: dict[str, Any], runs: Sequence[dict[str, Any]], title: str
) -> dict[str, Any]:
    """Writes out_dir/results.json ({config, runs, summary}, strict JSON) and out_dir/loss.png."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"config": config, "runs": list(runs), "summary": summarise(runs)}
    write_json(out_dir / "results.json", results)
    plot_history(out_dir / "loss.png", runs, title)
    return results
