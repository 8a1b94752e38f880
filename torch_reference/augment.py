"""Training-set augmentation for the digit pairs in torch: random shifts and re-pairing.

Mirrors `jaxdl.augment`: the deterministic halves (`shift_by`, `repair_by`) give bit-identical
results for the same offsets and permutation (`parity_tests/test_augment.py`); the random halves
draw from the run's batch-order generator, so a run stays a deterministic function of its seed
and a checkpoint of that generator resumes it exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["repair_by", "repair_pairs", "shift_by", "shift_digits"]


def shift_by(x: torch.Tensor, offsets: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translates digit k of x (B, 2, H, W) (row-major over B, 2) by `offsets[k] - max_shift`.

    `offsets` (2B, 2) holds integers in [0, 2 * max_shift]: the top-left corner of each digit's
    crop of its zero-padded copy.
    """
    b, two, h, w = x.shape
    s = max_shift
    padded = F.pad(x.reshape(b * two, h, w), (s, s, s, s))
    offsets = offsets.long()
    rows = offsets[:, 0, None] + torch.arange(h)  # (2B, H)
    cols = offsets[:, 1, None] + torch.arange(w)  # (2B, W)
    digit = torch.arange(b * two)[:, None, None]
    return padded[digit, rows[:, :, None], cols[:, None, :]].reshape(b, two, h, w)


def shift_digits(generator: torch.Generator, x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translates every digit of x (B, 2, H, W) by its own random (dy, dx) in [-s, s]^2;
    pixels shifted in are 0 (no wrap-around)."""
    if max_shift == 0:
        return x
    b, two = x.shape[:2]
    offsets = torch.randint(0, 2 * max_shift + 1, (b * two, 2), generator=generator)
    return shift_by(x, offsets, max_shift)


def repair_by(
    x: torch.Tensor, classes: torch.Tensor, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Re-pairs the 2n digits of x (n, 2, H, W) in the order `perm` (a permutation of 2n);
    targets recomputed from the classes (digit 0 <= digit 1), int64."""
    n = x.shape[0]
    new_x = x.reshape(2 * n, *x.shape[2:])[perm].reshape(x.shape)
    new_classes = classes.reshape(2 * n)[perm].reshape(n, 2)
    target = (new_classes[:, 0] <= new_classes[:, 1]).long()
    return new_x, target, new_classes


def repair_pairs(
    generator: torch.Generator, x: torch.Tensor, classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """New pairs from the same training digits, shuffled across pairs; see `repair_by`."""
    return repair_by(x, classes, torch.randperm(2 * x.shape[0], generator=generator))
