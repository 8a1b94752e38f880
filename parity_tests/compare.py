"""Pytree comparison for the parity tests: which leaf differs, by how much, and the worst seen."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import torch

__all__ = [
    "F32",
    "F64",
    "MARGINS",
    "Tolerance",
    "assert_close",
    "record",
    "to_numpy",
]


@dataclass(frozen=True)
class Tolerance:
    """Bounds of one precision: `abs` for outputs and losses, `rel` for gradients and trajectories.

    Relative means relative to the compared leaf's largest magnitude, max|a - b| / max|b|: an
    elementwise relative error is meaningless for gradient entries that are ~0 by cancellation.
    """

    name: str
    abs: float
    rel: float


# Issue 4: float32 1e-5 absolute (HuggingFace's PT<->Flax tests) and 1e-4 relative; float64 1e-10.
F32 = Tolerance("float32", abs=1e-5, rel=1e-4)
F64 = Tolerance("float64", abs=1e-10, rel=1e-10)

# (check, precision) -> (max abs diff, max rel diff) over the session, printed in the summary.
MARGINS: dict[tuple[str, str], tuple[float, float]] = {}


def to_numpy(x: Any) -> Any:
    """A pytree of torch tensors / JAX arrays as numpy arrays (float64 kept, no copy needed)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, Mapping):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(to_numpy(v) for v in x)
    return None if x is None else np.asarray(x)


def _leaves(tree: Any) -> dict[str, np.ndarray]:
    flat, _ = jax.tree_util.tree_flatten_with_path(to_numpy(tree))
    return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf for path, leaf in flat}


def assert_close(
    actual: Any,
    expected: Any,
    tol: Tolerance,
    *,
    check: str,
    kind: str = "abs",
    atol: float | None = None,
) -> tuple[float, float]:
    """Asserts two pytrees agree leaf by leaf; the failure names every differing path.

    Args:
      actual, expected: pytrees (dicts/tuples of arrays or tensors) of the same structure;
        `expected` is the torch side, the reference.
      tol: the precision's bounds.
      check: a label, e.g. "eval outputs", under which the worst difference is recorded.
      kind: "abs" bounds max|a - b| by `tol.abs`; "rel" bounds max|a - b| / max|b| by `tol.rel`;
        "norm" bounds ||a - b||_2 / ||b||_2 by `tol.rel` (for float32 trajectories, where a few
        elements are rounding-dominated: see test_training.py).
      atol: an explicitly looser absolute bound; the caller says why in a comment.

    Returns:
      The largest absolute and relative difference over all leaves.
    """
    a, e = _leaves(actual), _leaves(expected)
    assert a.keys() == e.keys(), (
        f"{check}: paths differ; only in actual {sorted(a.keys() - e.keys())}, "
        f"only in expected {sorted(e.keys() - a.keys())}"
    )
    bound = (atol if atol is not None else tol.abs) if kind == "abs" else tol.rel
    assert kind in ("abs", "rel", "norm"), kind
    worst_abs = worst_rel = 0.0
    failures = []
    for path in sorted(a):
        x, y = a[path], e[path]
        assert x.shape == y.shape, f"{check}: {path} shape {x.shape} != {y.shape}"
        assert x.dtype == y.dtype, f"{check}: {path} dtype {x.dtype} != {y.dtype}"
        diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
        max_abs = float(diff.max(initial=0.0))
        scale = float(np.abs(y).max(initial=0.0))
        max_rel = max_abs / scale if scale > 0 else max_abs
        if kind == "norm":
            norm = float(np.linalg.norm(y.astype(np.float64)))
            max_rel = float(np.linalg.norm(diff)) / norm if norm > 0 else max_abs
        worst_abs, worst_rel = max(worst_abs, max_abs), max(worst_rel, max_rel)
        value = max_abs if kind == "abs" else max_rel
        if not value <= bound:  # also catches NaN
            where = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
            failures.append(
                f"  {path}: max abs {max_abs:.3e}, max rel {max_rel:.3e} (bound {kind} "
                f"{bound:.0e}), worst at {tuple(int(i) for i in where)}: "
                f"{x[where]!r} vs torch {y[where]!r}"
            )
    record(check, tol.name, worst_abs, worst_rel)
    assert not failures, f"{check} ({tol.name}): {len(failures)} leaves differ\n" + "\n".join(
        failures
    )
    return worst_abs, worst_rel


def record(check: str, precision: str, max_abs: float, max_rel: float) -> None:
    """Adds a measured difference to the session's margins (printed in the terminal summary)."""
    old_abs, old_rel = MARGINS.get((check, precision), (0.0, 0.0))
    MARGINS[(check, precision)] = (max(old_abs, max_abs), max(old_rel, max_rel))
