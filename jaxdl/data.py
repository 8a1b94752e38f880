"""The course's data sets as NumPy arrays: MNIST digit pairs (Project I), the disk (Project II)."""

from __future__ import annotations

import math
import os

import numpy as np

from jaxdl.mnist import DataError, DigitPools, load_digits

__all__ = [
    "DataError",
    "generate_disk_set",
    "generate_pair_sets",
    "mnist_to_pairs",
    "pair_permutations",
]

DISK_RADIUS = 1.0 / math.sqrt(2.0 * math.pi)


def pool_2x2(images: np.ndarray) -> np.ndarray:
    """Average-pools (n, 28, 28) digits to (n, 14, 14) float32 on the raw 0..255 scale.

    The four summands are integers, so the mean is exact in float32 whatever the summation
    order: bit-identical to torch's `F.avg_pool2d(x, 2)`.
    """
    x = images.astype(np.float32)
    n, h, w = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4), dtype=np.float32)


def mnist_to_pairs(
    nb: int, images: np.ndarray, labels: np.ndarray, perm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The course's `mnist_to_pairs` for a given permutation of the split.

    The first 2*nb indices of `perm`, viewed as nb rows of 2, pick the pairs: no digit is used
    twice. Returns (input (nb,2,14,14) float32, target (nb,) int64, classes (nb,2) int64), with
    target = classes[:,0] <= classes[:,1].
    """
    if len(perm) < 2 * nb:
        raise DataError(f"nb={nb} pairs need {2 * nb} digits but the permutation has {len(perm)}")
    a = np.asarray(perm[: 2 * nb], dtype=np.int64).reshape(nb, 2)
    pooled = pool_2x2(images[a.reshape(-1)]).reshape(nb, 2, 14, 14)
    classes = labels[a].astype(np.int64)
    target = (classes[:, 0] <= classes[:, 1]).astype(np.int64)
    return pooled, target, classes


def _check_nb(nb: int, pools: DigitPools) -> None:
    if not isinstance(nb, int | np.integer) or nb <= 0:
        raise DataError(f"nb must be a positive integer, got {nb!r}")
    for split, labels in (("training", pools.train_labels), ("test", pools.test_labels)):
        if 2 * nb > len(labels):
            raise DataError(
                f"nb={nb} pairs need {2 * nb} digits but the {split} pool of source "
                f"'{pools.source}' ({pools.location}) holds only {len(labels)}"
            )


def pair_permutations(seed: int, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """The permutations of the training and test splits that `generate_pair_sets` uses."""
    rng = np.random.default_rng(seed)
    return rng.permutation(n_train), rng.permutation(n_test)


def generate_pair_sets(
    nb: int,
    *,
    seed: int = 0,
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, ...]:
    """nb training pairs from the training split and nb test pairs from the test split.

    Returns, in the order of the course's `dlc_practical_prologue.generate_pair_sets`:
    train_input (nb,2,14,14) float32 on the 0..255 scale, train_target (nb,) int64,
    train_classes (nb,2) int64, test_input, test_target, test_classes. Deterministic in `seed`.
    """
    pools = load_digits(source, data_dir)
    _check_nb(nb, pools)
    train_perm, test_perm = pair_permutations(seed, len(pools.train_labels), len(pools.test_labels))
    train = mnist_to_pairs(nb, pools.train_images, pools.train_labels, train_perm)
    test = mnist_to_pairs(nb, pools.test_images, pools.test_labels, test_perm)
    return (*train, *test)


def disk_labels(points: np.ndarray) -> np.ndarray:
    """1 inside the disk of centre (0.5, 0.5) and radius 1/sqrt(2*pi), else 0 (int64)."""
    d2 = ((points - 0.5) ** 2).sum(axis=1)
    return (d2 < DISK_RADIUS**2).astype(np.int64)


def generate_disk_set(nb: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """nb points uniform in [0,1]^2 (float32) and their disk labels (int64); disk area 1/2."""
    if not isinstance(nb, int | np.integer) or nb <= 0:
        raise DataError(f"nb must be a positive integer, got {nb!r}")
    points = np.random.default_rng(seed).random((nb, 2), dtype=np.float32)
    return points, disk_labels(points)
