"""Issue 7's last untried augmentation: random rotations of the training digits, as a probe.

    python scripts/rotate_probe.py --degrees 10 --shift 1            # siamese_exact, 10 x 25 epochs
    python scripts/rotate_probe.py --degrees 10 --shift 1 --depth 2

Each training digit of a batch is rotated by its own angle, uniform in [-degrees, degrees],
about the image centre (bilinear, zeros shifted in), after `--shift`'s random translation; test
pairs and evaluations are untouched. It replaces `jaxdl.augment.shift_digits` inside this
process only (train.train_batch calls it when shift > 0), so it is not a CLI option: the
measured effect (docs/RESULTS.md, "Beat it") did not earn one.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxdl import augment, train  # noqa: E402
from jaxdl.config import TrainConfig  # noqa: E402


def rotate_by(x: jax.Array, theta: jax.Array) -> jax.Array:
    """Rotates digit k of x (B, 2, H, W) (row-major over B, 2) by theta[k] radians about the
    image centre (bilinear, zeros outside): the deterministic half of `rotate_digits`."""
    b, two, h, w = x.shape
    c = (h - 1) / 2
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=x.dtype) - c, jnp.arange(w, dtype=x.dtype) - c,
                          indexing="ij")  # fmt: skip

    def one(image: jax.Array, t: jax.Array) -> jax.Array:
        # The source of each output pixel: the output grid rotated back about the centre.
        sy = jnp.cos(t) * yy - jnp.sin(t) * xx + c
        sx = jnp.sin(t) * yy + jnp.cos(t) * xx + c
        return jax.scipy.ndimage.map_coordinates(image, [sy, sx], order=1, cval=0.0)

    return jax.vmap(one)(x.reshape(b * two, h, w), theta).reshape(b, two, h, w)


def rotate_digits(key: jax.Array, x: jax.Array, max_degrees: float) -> jax.Array:
    """Rotates every digit of x (B, 2, H, W) by its own uniform angle in [-max, max] degrees."""
    n = x.shape[0] * x.shape[1]
    degrees = jax.random.uniform(key, (n,), minval=-max_degrees, maxval=max_degrees)
    return rotate_by(x, degrees * jnp.pi / 180)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--degrees", type=float, default=10.0)
    p.add_argument("--shift", type=int, default=1, help="as train_flax.py --shift (0: none)")
    p.add_argument("--depth", type=int, default=1, help="as train_flax.py --depth")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--epochs", type=int, default=25)
    args = p.parse_args(argv)
    shift_digits = augment.shift_digits

    def shift_and_rotate(key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
        shift_key, rotate_key = jax.random.split(key)
        x = shift_digits(shift_key, x, args.shift)
        return rotate_digits(rotate_key, x, args.degrees) if args.degrees > 0 else x

    augment.shift_digits = shift_and_rotate
    # train_batch augments only when its shift is > 0; shift_and_rotate reads args.shift itself.
    config = TrainConfig(
        model="siamese_exact", epochs=args.epochs, runs=args.runs, shift=1, depth=args.depth
    )
    start = time.time()
    s = train.train_and_evaluate(config)["summary"]
    print(
        f"rotate {args.degrees:g} deg, shift {args.shift}, depth {args.depth}: test "
        f"{100 * s['final_test_error_mean']:.2f} ± {100 * s['final_test_error_std']:.2f} % "
        f"(min {100 * s['final_test_error_min']:.2f}), train "
        f"{100 * s['final_train_error_mean']:.2f} %, {time.time() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
