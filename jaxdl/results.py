"""Summaries, the results table, results.json and errors.png of Project I runs (no framework)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_table", "plot_errors", "summarize", "write_json"]


def _finite_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if not r.get("diverged")]


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std (population, as NumPy's default) and min of the final errors over the runs.

    Diverged runs (a non-finite loss) are excluded from every statistic and counted in
    `diverged_runs`; when all runs diverged the statistics are None, never NaN.
    """
    good = _finite_runs(runs)
    out: dict[str, Any] = {"runs": len(runs), "diverged_runs": len(runs) - len(good)}
    keys = {
        "final_train_error": "train_error",
        "final_test_error": "test_error",
        "final_train_loss": "train_loss",
    }
    for name, key in keys.items():
        finals = np.array([r[key][-1] for r in good], dtype=np.float64)
        if len(finals) == 0:
            out.update({f"{name}_mean": None, f"{name}_std": None, f"{name}_min": None})
            continue
        out[f"{name}_mean"] = float(finals.mean())
        out[f"{name}_std"] = float(finals.std())
        out[f"{name}_min"] = float(finals.min())
    best = [min(r["test_error"]) for r in good]
    out["best_epoch_test_error_min"] = float(min(best)) if best else None
    out["seconds_mean"] = float(np.mean([r["seconds"] for r in runs])) if runs else None
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def format_table(rows: Sequence[tuple[str, int, dict[str, Any]]]) -> str:
    """A Markdown table like the report's: (model, epochs, summary) per row, errors in %."""
    lines = [
        "| Model | Epochs | Runs | Train Error (%) | Test Error (%) | Minimum Test Error (%) |",
        "|---|---|---|---|---|---|",
    ]
    for model, epochs, s in rows:
        runs = f"{s['runs'] - s['diverged_runs']}/{s['runs']}"
        test = _pct(s["final_test_error_mean"])
        if s["final_test_error_std"] is not None:
            test += f" ± {_pct(s['final_test_error_std'])}"
        lines.append(
            f"| {model} | {epochs} | {runs} | {_pct(s['final_train_error_mean'])} | {test} "
            f"| {_pct(s['final_test_error_min'])} |"
        )
    notes = [f"{m}: {s['diverged_runs']} run(s) diverged" for m, _, s in rows if s["diverged_runs"]]
    if notes:
        lines.append("")
        lines.append("Diverged runs (non-finite loss) are excluded from the statistics: ")
        lines.extend(f"- {n}" for n in notes)
    return "\n".join(lines)


def _clean(obj: Any) -> Any:
    # JSON has no NaN/Infinity: non-finite floats become null so the file stays valid JSON.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Writes `data` as strict JSON (no NaN), atomically: a temporary file, then a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def plot_errors(
    path: str | os.PathLike, curves: dict[str, Sequence[dict[str, Any]]], title: str = ""
) -> None:
    """Mean train (dashed) and test (solid) error per epoch with a ±1 std band, one colour a model.

    Args:
      path: the PNG to write.
      curves: model name -> its runs (dicts with per-epoch `train_error` / `test_error`).
      title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (model, runs) in enumerate(curves.items()):
        good = _finite_runs(runs)
        if not good:
            continue
        color = f"C{i}"
        for key, style in (("train_error", "--"), ("test_error", "-")):
            n = min(len(r[key]) for r in good)
            values = 100 * np.array([r[key][:n] for r in good], dtype=np.float64)
            mean, std = values.mean(axis=0), values.std(axis=0)
            epochs = np.arange(1, n + 1)
            label = f"{model} {key.split('_')[0]}"
            ax.plot(epochs, mean, style, color=color, label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15, lw=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to label when every run diverged
        ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
