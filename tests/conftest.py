"""Shared fixtures: where the full MNIST lives, and a skip with a reason where it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The full official MNIST (IDX, 60k/10k) beside the checkout; skips when absent."""
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"full MNIST not present at {SHARED_MNIST} (the read-only shared/ folder)")
    return SHARED_MNIST
