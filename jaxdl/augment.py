"""Training-set augmentation for the digit pairs: random shifts and re-pairing, on device, pure.

Both only ever touch the training pairs of a run (the 2 * nb training digits); the test pairs
and every evaluation stay exactly the course's. Keys come from the run's own keys, so a run is
still a deterministic function of its seed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["repair_by", "repair_pairs", "shift_by", "shift_digits"]


def shift_by(x: jax.Array, offsets: jax.Array, max_shift: int) -> jax.Array:
    """Translates digit k of x (B, 2, H, W) (row-major over B, 2) by `offsets[k] - max_shift`.

    `offsets` (2B, 2) holds integers in [0, 2 * max_shift]: the top-left corner of each digit's
    crop of its zero-padded copy. The deterministic half of `shift_digits`, mirrored by
    `torch_reference.augment.shift_by` (same offsets, bit-identical digits).
    """
    b, two, h, w = x.shape
    s = max_shift
    padded = jnp.pad(x.reshape(b * two, h, w), ((0, 0), (s, s), (s, s)))

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1]), (h, w))

    return jax.vmap(crop)(padded, offsets).reshape(b, two, h, w)


def shift_digits(key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
    """Translates every digit of x (B, 2, H, W) by its own random (dy, dx) in [-s, s]^2.

    Pixels shifted in are 0, the background of the raw 0..255 scale (no wrap-around, unlike
    `jnp.roll`). The two digits of a pair move independently: each is its own training digit.
    """
    if max_shift == 0:
        return x
    b, two = x.shape[:2]
    offsets = jax.random.randint(key, (b * two, 2), 0, 2 * max_shift + 1)
    return shift_by(x, offsets, max_shift)


def repair_by(
    x: jax.Array, classes: jax.Array, perm: jax.Array, target_dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Re-pairs the 2n digits of x (n, 2, H, W) in the order `perm` (a permutation of 2n).

    The deterministic half of `repair_pairs`, mirrored by `torch_reference.augment.repair_by`.
    """
    n = x.shape[0]
    new_x = x.reshape(2 * n, *x.shape[2:])[perm].reshape(x.shape)
    new_classes = classes.reshape(2 * n)[perm].reshape(n, 2)
    target = (new_classes[:, 0] <= new_classes[:, 1]).astype(target_dtype)
    return new_x, target, new_classes


def repair_pairs(
    key: jax.Array, x: jax.Array, classes: jax.Array, target_dtype: jnp.dtype
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """New pairs from the same training digits: x (n, 2, H, W) and classes (n, 2) shuffled
    across pairs, the targets recomputed from the classes (digit 0 <= digit 1).

    Returns (x, target, classes) of the same shapes; the multiset of digits is unchanged.
    """
    perm = jax.random.permutation(key, 2 * x.shape[0])
    return repair_by(x, classes, perm, target_dtype)
