"""The six Project I digit-pair classifiers in Flax Linen, mirrored layer for layer in torch.

Contract shared with `torch_reference.models`: a model applied to x of shape (B, 2, 14, 14) on
the raw 0..255 scale returns `(logit, aux)`: `logit` (B,) is the comparison logit (target 1 when
digit 0 <= digit 1), `aux` is (B, 2, 10) digit logits for the AUX_MODELS, None otherwise.

    variables = model.init({"params": key}, x, train=False)
    (logit, aux), updates = model.apply(variables, x, train=True,
                                        rngs={"dropout": key}, mutable=["batch_stats"])
    logit, aux = model.apply(variables, x, train=False)

Layout: the input arrives NCHW (as the course's tensors); convolutional models transpose to NHWC
at their entry, so the first Dense after the convolutions sees features flattened in (H, W, C)
order where torch flattens (C, H, W). Submodule names equal the torch attribute names.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdl.config import HEAD_INPUTS

__all__ = [
    "AUX_MODELS",
    "MNIST_MEAN",
    "MNIST_STD",
    "MODELS",
    "comparison_logit",
    "create_model",
    "has_aux",
    "normalize",
    "param_count",
]

# The usual MNIST pixel statistics (on the 0..1 scale); the same constants in torch_reference.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# torch defaults: BatchNorm momentum 0.1 (Flax counts the other way: 1 - 0.1), eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def normalize(x: jax.Array) -> jax.Array:
    """Raw 0..255 pixels to zero-mean, unit-variance inputs, the same float ops as in torch."""
    return (x / 255.0 - MNIST_MEAN) / MNIST_STD


def _torch_bias_init(fan_in: int) -> Callable[..., jax.Array]:
    # torch's default bias init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) needs fan_in, which Flax's
    # bias initializers are not given: bind it here.
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# torch's default weight init, kaiming_uniform(a=sqrt(5)), is U(-1/sqrt(fan_in), 1/sqrt(fan_in)):
# variance_scaling(1/3, fan_in, uniform) draws from U(-sqrt(3 * (1/3) / fan_in), +...), the same.
_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _dense(features: int, fan_in: int, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=_torch_kernel_init,
        bias_init=_torch_bias_init(fan_in),
        name=name,
    )


NHWC = ("NHWC", "HWIO", "NHWC")


def _conv_same_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """k x k (k odd), stride 1, padding k // 2 in NHWC/HWIO: what `nn.Conv` computes (before
    its bias)."""
    p = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)), dimension_numbers=NHWC)


def _patches(x: jax.Array, k: int) -> jax.Array:
    """(N, H, W, C) -> (N, H, W, k k C): each pixel's padded k x k neighbourhood, in HWIO order."""
    h, w, p = x.shape[1], x.shape[2], k // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return jnp.concatenate([xp[:, i : i + h, j : j + w] for i in range(k) for j in range(k)], -1)


# On XLA:CPU the training step of the conv models is bound by the convolutions' gradients
# (issue 6): XLA:CPU runs the backward convolutions at a fraction of its matmul rate. Under
# differentiation this VJP computes the convolution as im2col matmuls instead (patches (N H W,
# k k C) @ kernel (k k C, C_out); the kernel's gradient patches^T @ g; the input's gradient
# g @ kernel^T folded back by k k shifted adds), the same function up to float rounding.
# Outside differentiation (evaluation) it is XLA's convolution, exactly `nn.Conv`'s. Other
# backends keep XLA's own convolution and its gradient (cuDNN on the GPU is faster than this).
@jax.custom_vjp
def _conv_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _conv_same_xla(x, kernel)


def _conv_im2col_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple]:
    n, h, w, _ = x.shape
    patches = _patches(x, kernel.shape[0]).reshape(n * h * w, -1)
    y = patches @ kernel.reshape(patches.shape[-1], -1)
    return y.reshape(n, h, w, -1), (patches, kernel, x.shape)


def _conv_im2col_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    patches, kernel, (n, h, w, c) = res
    k = kernel.shape[0]
    p = k // 2
    g2 = g.reshape(n * h * w, -1)
    dkernel = (patches.T @ g2).reshape(kernel.shape)
    dpatches = (g2 @ kernel.reshape(k * k * c, -1).T).reshape(n, h, w, k * k * c)
    dxp = jnp.zeros((n, h + 2 * p, w + 2 * p, c), g.dtype)
    for t, (i, j) in enumerate((i, j) for i in range(k) for j in range(k)):
        dxp = dxp.at[:, i : i + h, j : j + w].add(dpatches[..., t * c : (t + 1) * c])
    return dxp[:, p : p + h, p : p + w], dkernel


_conv_im2col.defvjp(_conv_im2col_fwd, _conv_im2col_bwd)


def conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A k x k same-padding convolution (k odd; NHWC, HWIO kernel), its gradient fast on every
    backend: im2col on the CPU for 3x3 kernels only. For 5x5 the patches are 25 C wide and
    XLA's own gradient was faster (`cnn --width 64 --kernel-size 5`, 10-epoch runs 7.5-7.9 s
    against 8.7-9.2 s with im2col: `python scripts/speed_probes.py k5-grad xla|im2col`)."""
    if kernel.shape[0] != 3:
        return _conv_same_xla(x, kernel)
    return jax.lax.platform_dependent(x, kernel, cpu=_conv_im2col, default=_conv_same_xla)


class ConvSame(nn.Module):
    """torch `Conv2d(in, out, k, padding=k // 2)` for odd k (3 by default): `nn.Conv`'s
    parameters (names, shapes, initial draws) and forward, with `conv_same`'s gradient."""

    features: int
    in_channels: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        shape = (k, k, x.shape[-1], self.features)
        kernel = self.param("kernel", _torch_kernel_init, shape)
        bias = self.param("bias", _torch_bias_init(self.in_channels * k * k), (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias)
        return conv_same(x, kernel) + bias.reshape(1, 1, 1, -1)


def _conv(features: int, in_channels: int, name: str, kernel_size: int = 3) -> ConvSame:
    # k x k, stride 1, padding k // 2 (torch `Conv2d(in, out, k, padding=k // 2)`): size kept.
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size}")
    return ConvSame(features, in_channels, kernel_size, name=name)


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
    # use_fast_variance=False: E[(x - mean)^2] like torch, not E[x^2] - mean^2 (less cancellation).
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        use_fast_variance=False,
        name=name,
    )


def _norm(enabled: bool, train: bool, name: str) -> Callable[[jax.Array], jax.Array]:
    # The `batchnorm=False` ablation: the layer is left out (no parameters, no statistics).
    return _batch_norm(train, name) if enabled else (lambda x: x)


def _max_pool(x: jax.Array) -> jax.Array:
    # torch MaxPool2d(2): 2x2 windows, stride 2, floor (14 -> 7 -> 3).
    return _max_pool_2x2(x.shape[1] % 2, x.shape[2] % 2, x)


# Outside differentiation the forward pass is Flax's max_pool; under differentiation the VJP's
# forward takes the same maximum from the four window slices (see below), and the gradient is
# written out. XLA differentiates reduce_window max to select-and-scatter, which XLA:CPU runs
# as a variadic reduce-window over iotas plus a scatter: about half of a Siamese train step
# (issue 6). Here the forward records
# which of the window's four inputs (row-major) holds its first maximum, and the backward
# routes the gradient there with one elementwise select: the same rule as select-and-scatter
# and torch (ties go to the first maximum), so the gradients are bit-identical.
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _max_pool_2x2(odd_h: int, odd_w: int, x: jax.Array) -> jax.Array:
    return nn.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


def _max_pool_2x2_fwd(odd_h: int, odd_w: int, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    h2, w2 = x.shape[1] // 2, x.shape[2] // 2
    x = x[:, : 2 * h2, : 2 * w2]
    a, b, c, d = x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    # The maximum of the same four slices that `first` compares against (the same values as
    # max_pool's): with max_pool's output instead, jit on XLA:CPU gave wrong conv gradients
    # for float64 at 128 channels (cnn width=64; parity_tests), right ones eagerly.
    y = jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
    first = jnp.where(a == y, 0, jnp.where(b == y, 1, jnp.where(c == y, 2, 3)))
    return y, first.astype(jnp.int8)


def _max_pool_2x2_bwd(odd_h: int, odd_w: int, first: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    n, h2, w2, ch = g.shape

    def upsample(t: jax.Array) -> jax.Array:
        # Each window's value to its four positions: broadcast + reshape. (Interleaving four
        # strided arrays with stack + reshape instead was miscompiled by XLA:CPU's fusion
        # emitters inside the full train step: wrong gradients under jit, right ones eagerly.)
        wide = jnp.broadcast_to(t[:, :, None, :, None, :], (n, h2, 2, w2, 2, ch))
        return wide.reshape(n, 2 * h2, 2 * w2, ch)

    rows, cols = np.arange(2 * h2) % 2, np.arange(2 * w2) % 2
    position = (2 * rows[:, None] + cols[None, :]).astype(np.int8)[None, :, :, None]
    g_up = upsample(g)
    dx = jnp.where(upsample(first) == position, g_up, jnp.zeros_like(g_up))
    return (jnp.pad(dx, ((0, 0), (0, odd_h), (0, odd_w), (0, 0))),)


_max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


class MLP(nn.Module):
    """Fully connected on the flattened pair (392): Dense-BN-ReLU-Dropout twice, then 1 logit."""

    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.4
    batchnorm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, None]:
        x = normalize(x).reshape(x.shape[0], -1)  # NCHW flatten: same order as torch
        for i, features in enumerate(self.hidden, start=1):
            x = _dense(features, x.shape[-1], f"fc{i}")(x)
            x = nn.relu(_norm(self.batchnorm, train, f"bn{i}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        logit = _dense(1, x.shape[-1], f"fc{len(self.hidden) + 1}")(x)
        return logit[:, 0], None


class ConvFeatures(nn.Module):
    """Two conv blocks (k x k conv, BN, ReLU, 2x2 max pool) and a Dense-BN-ReLU layer.

    Input NHWC (N, 14, 14, C); output (N, hidden), or with `hidden=0` (no Dense layer) the
    flattened (N, 3 * 3 * c2) map. Shared by `cnn` (C=2, both digits as channels) and the
    Siamese branch (C=1, one digit).
    """

    channels: tuple[int, int] = (32, 64)
    hidden: int = 100
    batchnorm: bool = True
    depth: int = 1  # conv-BN-ReLU layers per block (extra ones named conv{k}_{i}, bn{k}_{i})
    kernel_size: int = 3  # every conv: k x k, padding k // 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        bn = functools.partial(_norm, self.batchnorm, train)
        conv = functools.partial(_conv, kernel_size=self.kernel_size)
        for k, c in enumerate(self.channels, start=1):
            x = nn.relu(bn(f"bn{k}")(conv(c, x.shape[-1], f"conv{k}")(x)))
            for i in range(2, self.depth + 1):
                x = nn.relu(bn(f"bn{k}_{i}")(conv(c, c, f"conv{k}_{i}")(x)))
            x = _max_pool(x)
        x = x.reshape(x.shape[0], -1)  # (N, 3*3*c2) in (H, W, C) order
        if self.hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0: no Dense layer), got {self.hidden}")
        if not self.hidden:
            return x
        x = _dense(self.hidden, x.shape[-1], "fc1")(x)
        return nn.relu(bn("bn3")(x))


class CNN(nn.Module):
    """The report's LegacyCNN: both digits as 2 channels, dropout before the final classifier.

    With `aux`, a 20-way head on the same features gives two 10-way digit classifications.
    """

    aux: bool = False
    dropout: float = 0.4
    batchnorm: bool = True
    width: int = 32  # conv channels (width, 2 * width)
    kernel_size: int = 3  # conv kernels k x k
    hidden: int = 100  # the Dense layer after the convs (0: none)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array | None]:
        x = jnp.transpose(normalize(x), (0, 2, 3, 1))  # NCHW -> NHWC
        channels = (self.width, 2 * self.width)
        features = ConvFeatures(
            channels,
            hidden=self.hidden,
            batchnorm=self.batchnorm,
            kernel_size=self.kernel_size,
            name="features",
        )
        h = features(x, train)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        logit = _dense(1, h.shape[-1], "fc_out")(h)[:, 0]
        if not self.aux:
            return logit, None
        digits = _dense(20, h.shape[-1], "fc_aux")(h).reshape(-1, 2, 10)
        return logit, digits


class DigitBranch(nn.Module):
    """One digit (N, 14, 14, 1) to 10 digit logits: ConvFeatures, dropout, Dense(10)."""

    dropout: float = 0.4
    batchnorm: bool = True
    depth: int = 1
    width: int = 32  # conv channels (width, 2 * width)
    kernel_size: int = 3  # conv kernels k x k
    hidden: int = 100  # the Dense layer after the convs (0: none)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        channels = (self.width, 2 * self.width)
        features = ConvFeatures(
            channels,
            hidden=self.hidden,
            batchnorm=self.batchnorm,
            depth=self.depth,
            kernel_size=self.kernel_size,
            name="features",
        )
        h = features(x, train)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return _dense(10, h.shape[-1], "fc_out")(h)


class Siamese(nn.Module):
    """Weight sharing: one DigitBranch (one parameter set) applied to each digit, 20 -> head -> 1.

    Both digits go through the branch as ONE batch of 2B images, so BatchNorm sees all 2B digits
    and updates its running statistics once per step (torch_reference does the same).
    With `aux` the branch outputs (never transformed) are also returned as digit logits (B, 2, 10).
    What the head sees of each digit's 10 outputs is `head_input`:
    - "softmax" (the default): two class distributions whose scale does not drift as the digit
      logits grow more confident; on raw logits the head overfits (test error ~10% instead of
      ~3%, see docs/PROJECT1.md);
    - "logits": the raw outputs (that ablation);
    - "bnrelu": BatchNorm (`branch_bn`, over the 2B digits; left out with `batchnorm=False`)
      and ReLU of them, the report-era variant (docs/RESULTS.md, "Why cnn and siamese trail").
    """

    aux: bool = False
    dropout: float = 0.4
    head_hidden: int = 64
    head_input: str = "softmax"
    batchnorm: bool = True
    width: int = 32  # conv channels (width, 2 * width)
    kernel_size: int = 3  # conv kernels k x k
    hidden: int = 100  # the Dense layer after the convs (0: none)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array | None]:
        b = x.shape[0]
        # (B, 2, 14, 14) -> (2B, 14, 14, 1): digits of a pair stay adjacent, no transpose needed.
        digits = normalize(x).reshape(2 * b, 14, 14, 1)
        branch = DigitBranch(
            self.dropout,
            self.batchnorm,
            width=self.width,
            kernel_size=self.kernel_size,
            hidden=self.hidden,
            name="branch",
        )
        d = branch(digits, train)  # (2B, 10)
        h = self._head_input(d, train).reshape(b, 20)
        h = _dense(self.head_hidden, 20, "head_fc1")(h)
        h = nn.relu(_norm(self.batchnorm, train, "head_bn")(h))
        logit = _dense(1, self.head_hidden, "head_fc2")(h)[:, 0]
        return logit, (d.reshape(b, 2, 10) if self.aux else None)

    def _head_input(self, d: jax.Array, train: bool) -> jax.Array:
        if self.head_input == "softmax":
            return jax.nn.softmax(d)
        if self.head_input == "logits":
            return d
        if self.head_input == "bnrelu":
            return nn.relu(_norm(self.batchnorm, train, "branch_bn")(d))
        choices = ", ".join(HEAD_INPUTS)
        raise ValueError(f"unknown head_input {self.head_input!r}; choose from {choices}")


def comparison_logit(logits_a: jax.Array, logits_b: jax.Array) -> jax.Array:
    """The logit of P(a <= b) for independent digits a ~ softmax(logits_a), b ~ softmax(logits_b).

    P = sum over i <= j of p_a(i) p_b(j); the logit log P - log(1 - P) is computed as the
    difference of two log-sum-exps of the joint log-probabilities over the i <= j and i > j
    cells, so neither P nor 1 - P is ever formed (no log(0) when the branch is confident).
    Args: (..., 10) digit logits each. Returns: (...,) comparison logits.
    """
    log_a = jax.nn.log_softmax(logits_a, axis=-1)
    log_b = jax.nn.log_softmax(logits_b, axis=-1)
    joint = log_a[..., :, None] + log_b[..., None, :]  # (..., i, j)
    le = jnp.arange(10)[:, None] <= jnp.arange(10)[None, :]
    log_le = jax.nn.logsumexp(jnp.where(le, joint, -jnp.inf), axis=(-2, -1))
    log_gt = jax.nn.logsumexp(jnp.where(le, -jnp.inf, joint), axis=(-2, -1))
    return log_le - log_gt


class SiameseExact(nn.Module):
    """The Siamese branch with no learned head: the comparison is exactly P(digit a <= digit b).

    Both digits go through one DigitBranch (as in `siamese_aux`, the same parameters); the
    logit is `comparison_logit` of the two digit distributions, so the only thing to learn is
    digit recognition, which the BCE (through the comparison) and the aux CE both train.
    """

    dropout: float = 0.4
    batchnorm: bool = True
    depth: int = 1  # deeper branches: conv layers per block (see ConvFeatures)
    width: int = 32  # conv channels (width, 2 * width)
    kernel_size: int = 3  # conv kernels k x k
    hidden: int = 100  # the Dense layer after the convs (0: none)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        b = x.shape[0]
        digits = normalize(x).reshape(2 * b, 14, 14, 1)
        branch = DigitBranch(
            self.dropout,
            self.batchnorm,
            self.depth,
            self.width,
            self.kernel_size,
            self.hidden,
            name="branch",
        )
        d = branch(digits, train).reshape(b, 2, 10)
        return comparison_logit(d[:, 0], d[:, 1]), d


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "siamese": Siamese,
    "cnn_aux": functools.partial(CNN, aux=True),
    "siamese_aux": functools.partial(Siamese, aux=True),
    "siamese_exact": SiameseExact,
}

# The models that return digit logits, trained with the auxiliary cross-entropy.
AUX_MODELS = frozenset({"cnn_aux", "siamese_aux", "siamese_exact"})


def create_model(name: str, **hparams: Any) -> nn.Module:
    """The registered model `name` (see MODELS); hparams such as `dropout` go to its constructor."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](**hparams)


def has_aux(name: str) -> bool:
    """Whether the model returns digit logits (and is trained with the auxiliary loss)."""
    return name in AUX_MODELS


def param_count(params: Any) -> int:
    """Number of scalars in a parameter pytree (BatchNorm running statistics are not parameters)."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
