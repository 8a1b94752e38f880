"""Figures of jaxdl.experiments with many curves: test error only, mean ± 1 std, legend aside."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_test_errors"]


def plot_test_errors(
    path: str | os.PathLike,
    curves: dict[str, Sequence[dict[str, Any]]],
    title: str,
    ylim: tuple[float, float] | None = None,
) -> None:
    """Mean test error per epoch with a ±1 std band, one colour per recipe.

    Args:
      path: the PNG to write.
      curves: label -> its runs (dicts with a per-epoch `test_error`); diverged runs left out.
      title: the figure title.
      ylim: the error axis in %, to zoom on the low errors the curves end at.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (label, runs) in enumerate(curves.items()):
        good = [r for r in runs if not r.get("diverged")]
        if not good:
            continue
        n = min(len(r["test_error"]) for r in good)
        values = 100 * np.array([r["test_error"][:n] for r in good], dtype=np.float64)
        mean, std = values.mean(axis=0), values.std(axis=0)
        epochs = np.arange(1, n + 1)
        color = f"C{i % 10}"
        ax.plot(epochs, mean, color=color, label=f"{label} ({len(good)} runs)")
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.12, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
