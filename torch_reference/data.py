"""The course's data sets as torch tensors: MNIST digit pairs (Project I) and the disk (Project II).

Mirrors `jaxdl.data`; the digit pools come from the same framework-neutral reader
(`jaxdl.mnist`, NumPy only), the pairing and pooling are torch (`torch.randperm`,
`F.avg_pool2d`) as in the course's `dlc_practical_prologue`.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from jaxdl.mnist import DataError, DigitPools, load_digits

__all__ = [
    "DataError",
    "generate_disk_set",
    "generate_pair_sets",
    "mnist_to_pairs",
    "pair_permutations",
]

DISK_RADIUS = 1.0 / math.sqrt(2.0 * math.pi)


def mnist_to_pairs(
    nb: int, images: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The course's `mnist_to_pairs` for a given permutation of the split.

    `images` are (n, 28, 28) uint8 or float; returns (input (nb,2,14,14) float32,
    target (nb,) int64, classes (nb,2) int64).
    """
    if len(perm) < 2 * nb:
        raise DataError(f"nb={nb} pairs need {2 * nb} digits but the permutation has {len(perm)}")
    a = perm[: 2 * nb].long().view(nb, 2)
    chosen = images[a.reshape(-1)].view(-1, 1, 28, 28).float()
    pooled = F.avg_pool2d(chosen, kernel_size=2).view(nb, 2, 14, 14)
    classes = labels[a].long()
    target = (classes[:, 0] <= classes[:, 1]).long()
    return pooled, target, classes


def _check_nb(nb: int, pools: DigitPools) -> None:
    if not isinstance(nb, int) or nb <= 0:
        raise DataError(f"nb must be a positive integer, got {nb!r}")
    for split, labels in (("training", pools.train_labels), ("test", pools.test_labels)):
        if 2 * nb > len(labels):
            raise DataError(
                f"nb={nb} pairs need {2 * nb} digits but the {split} pool of source "
                f"'{pools.source}' ({pools.location}) holds only {len(labels)}"
            )


def pair_permutations(seed: int, n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The permutations of the training and test splits that `generate_pair_sets` uses."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=g), torch.randperm(n_test, generator=g)


def generate_pair_sets(
    nb: int,
    *,
    seed: int = 0,
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, ...]:
    """nb training pairs from the training split and nb test pairs from the test split.

    Same order, shapes and dtypes as `jaxdl.data.generate_pair_sets`, as torch tensors.
    """
    pools = load_digits(source, data_dir)
    _check_nb(nb, pools)
    train_perm, test_perm = pair_permutations(seed, len(pools.train_labels), len(pools.test_labels))
    # The cached pools are read-only NumPy arrays; torch wants its own writable copy.
    train = mnist_to_pairs(
        nb, torch.tensor(pools.train_images), torch.tensor(pools.train_labels), train_perm
    )
    test = mnist_to_pairs(
        nb, torch.tensor(pools.test_images), torch.tensor(pools.test_labels), test_perm
    )
    return (*train, *test)


def disk_labels(points: torch.Tensor) -> torch.Tensor:
    """1 inside the disk of centre (0.5, 0.5) and radius 1/sqrt(2*pi), else 0 (int64)."""
    d2 = ((points - 0.5) ** 2).sum(dim=1)
    return (d2 < DISK_RADIUS**2).long()


def generate_disk_set(nb: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """nb points uniform in [0,1]^2 (float32) and their disk labels (int64)."""
    if not isinstance(nb, int) or nb <= 0:
        raise DataError(f"nb must be a positive integer, got {nb!r}")
    points = torch.rand(nb, 2, generator=torch.Generator().manual_seed(seed))
    return points, disk_labels(points)
