"""The augmentation of jaxdl and torch_reference: bit-identical for the same offsets and order."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference.augment as taugment
from jaxdl import augment


@pytest.mark.parametrize("max_shift", [1, 2, 3])
def test_shift_by_is_bit_identical(max_shift: int) -> None:
    rng = np.random.default_rng(max_shift)
    x = rng.uniform(0, 255, (16, 2, 14, 14)).astype(np.float32)
    offsets = rng.integers(0, 2 * max_shift + 1, (32, 2))
    ours = np.asarray(augment.shift_by(jnp.asarray(x), jnp.asarray(offsets), max_shift))
    theirs = taugment.shift_by(torch.from_numpy(x), torch.from_numpy(offsets), max_shift).numpy()
    assert ours.tobytes() == theirs.tobytes()
    # And both are the translation they claim: offset (s, s) is the identity.
    centre = np.full((32, 2), max_shift)
    same = taugment.shift_by(torch.from_numpy(x), torch.from_numpy(centre), max_shift).numpy()
    np.testing.assert_array_equal(same, x)


def test_repair_by_is_bit_identical() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (50, 2, 14, 14)).astype(np.float32)
    classes = rng.integers(0, 10, (50, 2))
    perm = rng.permutation(100)
    ours = augment.repair_by(jnp.asarray(x), jnp.asarray(classes), jnp.asarray(perm), jnp.int32)
    theirs = taugment.repair_by(
        torch.from_numpy(x), torch.from_numpy(classes), torch.from_numpy(perm)
    )
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(np.asarray(a), b.numpy())
    assert theirs[1].dtype == torch.int64


def test_torch_random_halves_are_seeded_and_keep_the_digits() -> None:
    x = torch.rand(8, 2, 14, 14) * 255
    classes = torch.randint(0, 10, (8, 2))
    a = taugment.shift_digits(torch.Generator().manual_seed(1), x, 2)
    b = taugment.shift_digits(torch.Generator().manual_seed(1), x, 2)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert taugment.shift_digits(torch.Generator(), x, 0) is x
    new_x, target, new_classes = taugment.repair_pairs(torch.Generator().manual_seed(2), x, classes)
    assert sorted(new_classes.ravel().tolist()) == sorted(classes.ravel().tolist())
    assert torch.equal(target, (new_classes[:, 0] <= new_classes[:, 1]).long())
    # Each digit image travels with its class.
    flat = {
        tuple(img.flatten()[:4].tolist()): c
        for img, c in zip(x.reshape(16, 14, 14), classes.ravel(), strict=True)
    }
    for img, c in zip(new_x.reshape(16, 14, 14), new_classes.ravel(), strict=True):
        assert flat[tuple(img.flatten()[:4].tolist())] == c
