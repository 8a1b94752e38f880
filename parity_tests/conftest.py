"""Parity-suite fixtures: strict JAX numerics, float32/float64 precision, and a margins summary.

Strict numerics (as Equinox's test suite): `jax_numpy_rank_promotion="raise"` and
`jax_numpy_dtype_promotion="strict"` turn silent broadcasting and silent float64/int promotion
into errors. They are set with JAX's thread-local context managers around each parity test only,
so unit tests in tests/ that run in the same pytest process keep JAX's defaults.

One scoped exception: float64 tests run with standard dtype promotion, because Flax 0.12's
BatchNorm computes its batch statistics in `jnp.promote_types(x.dtype, jnp.float32)` (its
`force_float32_reductions`), which strict promotion rejects for float64 inputs. Rank promotion
stays "raise" there, and `assert_close` still requires float64 on both sides. Likewise Optax
updates (test_training.py) are applied with standard promotion: Optax 0.2's Adam bias
correction computes `b1 ** count`, a Python float to the power of the int32 step count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import jax
import numpy as np
import pytest
import torch

from parity_tests.compare import F32, F64, MARGINS, Tolerance


@pytest.fixture(autouse=True, scope="package")
def torch_single_thread() -> Iterator[None]:
    """torch on one intra-op thread during the parity suite, restored after.

    The batches here are tiny (8 pairs): on 2 shared cores torch's thread pool only contends with
    XLA's, measured 30x slower (20 Siamese steps: 14 s with 2 threads under load, 0.5 s with 1).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def strict_numerics() -> Iterator[None]:
    """Every parity test runs with rank promotion raising and strict dtype promotion."""
    with jax.numpy_rank_promotion("raise"), jax.numpy_dtype_promotion("strict"):
        yield


@dataclass(frozen=True)
class Precision:
    """One floating-point precision on both sides: torch dtype, numpy dtype and tolerance."""

    torch: torch.dtype
    numpy: type
    tol: Tolerance


FLOAT32 = Precision(torch.float32, np.float32, F32)
FLOAT64 = Precision(torch.float64, np.float64, F64)


@pytest.fixture(params=[FLOAT32, FLOAT64], ids=["float32", "float64"])
def precision(request: pytest.FixtureRequest) -> Iterator[Precision]:
    """Both precisions; float64 runs under `jax.enable_x64()` (restored after) and torch.double."""
    if request.param is FLOAT64:
        with jax.enable_x64(True), jax.numpy_dtype_promotion("standard"):
            yield request.param
    else:
        yield request.param


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The largest difference each parity check saw, per precision (the suite's real margins)."""
    if not MARGINS:
        return
    terminalreporter.section("parity margins (max over all parametrizations)")
    for (check, precision), (max_abs, max_rel) in sorted(MARGINS.items()):
        terminalreporter.write_line(
            f"{check:<48} {precision:<8} max abs {max_abs:.2e}  max rel {max_rel:.2e}"
        )
