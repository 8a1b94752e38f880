"""The six Project I digit-pair classifiers in torch, mirrored layer for layer in jaxdl.models.

Same contract as `jaxdl.models`: `model(x)` with x (B, 2, 14, 14) on the raw 0..255 scale returns
`(logit (B,), aux)`, aux being (B, 2, 10) digit logits for the AUX_MODELS, else None.
Train/eval mode via `model.train()` / `model.eval()`. Attribute names equal the Flax submodule
names; layers use torch's default initialisation, which jaxdl.models reproduces in distribution.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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

# Must equal jaxdl.models.MNIST_MEAN / MNIST_STD (a test checks).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Raw 0..255 pixels to zero-mean, unit-variance inputs, the same float ops as in jaxdl."""
    return (x / 255.0 - MNIST_MEAN) / MNIST_STD


def _norm(enabled: bool, norm: Callable[[int], nn.Module], features: int) -> nn.Module:
    # The `batchnorm=False` ablation: an Identity (no parameters, no buffers), as in jaxdl.
    return norm(features) if enabled else nn.Identity()


class MLP(nn.Module):
    """Fully connected on the flattened pair (392): Linear-BN-ReLU-Dropout twice, then 1 logit."""

    def __init__(
        self, hidden: tuple[int, ...] = (128, 64), dropout: float = 0.4, batchnorm: bool = True
    ):
        super().__init__()
        self.hidden = tuple(hidden)
        sizes = (392, *self.hidden)
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            setattr(self, f"fc{i}", nn.Linear(n_in, n_out))
            setattr(self, f"bn{i}", _norm(batchnorm, nn.BatchNorm1d, n_out))
        setattr(self, f"fc{len(self.hidden) + 1}", nn.Linear(sizes[-1], 1))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        x = normalize(x).reshape(x.shape[0], -1)
        for i in range(1, len(self.hidden) + 1):
            x = getattr(self, f"fc{i}")(x)
            x = self.dropout(F.relu(getattr(self, f"bn{i}")(x)))
        logit = getattr(self, f"fc{len(self.hidden) + 1}")(x)
        return logit[:, 0], None


class ConvFeatures(nn.Module):
    """Two conv blocks (k x k conv, BN, ReLU, 2x2 max pool) and a Linear-BN-ReLU layer.

    Input NCHW (N, C, 14, 14); output (N, hidden), or with `hidden=0` (no Linear) the flattened
    (N, c2 * 3 * 3) map; `out_features` is that width.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, int] = (32, 64),
        hidden: int = 100,
        batchnorm: bool = True,
        depth: int = 1,
        kernel_size: int = 3,
    ):
        super().__init__()
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size}")
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0 (0: no Dense layer), got {hidden}")
        c1, c2 = channels
        k, p = kernel_size, kernel_size // 2  # "same" convolutions: the spatial size is kept
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=k, padding=p)
        self.bn1 = _norm(batchnorm, nn.BatchNorm2d, c1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=k, padding=p)
        self.bn2 = _norm(batchnorm, nn.BatchNorm2d, c2)
        # Deeper branches (jaxdl's ConvFeatures.depth): extra convs before each pool.
        for j, c in ((1, c1), (2, c2)):
            for i in range(2, depth + 1):
                setattr(self, f"conv{j}_{i}", nn.Conv2d(c, c, kernel_size=k, padding=p))
                setattr(self, f"bn{j}_{i}", _norm(batchnorm, nn.BatchNorm2d, c))
        self.hidden = hidden
        self.out_features = hidden or c2 * 3 * 3  # hidden=0: the flattened map, no Linear
        if hidden:
            self.fc1 = nn.Linear(c2 * 3 * 3, hidden)
            self.bn3 = _norm(batchnorm, nn.BatchNorm1d, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in (1, 2):
            x = F.relu(getattr(self, f"bn{k}")(getattr(self, f"conv{k}")(x)))
            for i in range(2, self.depth + 1):
                x = F.relu(getattr(self, f"bn{k}_{i}")(getattr(self, f"conv{k}_{i}")(x)))
            x = F.max_pool2d(x, 2)
        x = x.reshape(x.shape[0], -1)  # (N, c2*3*3) in (C, H, W) order
        if not self.hidden:
            return x
        return F.relu(self.bn3(self.fc1(x)))


class CNN(nn.Module):
    """The report's LegacyCNN: both digits as 2 channels, dropout before the final classifier.

    With `aux`, a 20-way head on the same features gives two 10-way digit classifications.
    """

    def __init__(
        self,
        aux: bool = False,
        dropout: float = 0.4,
        batchnorm: bool = True,
        width: int = 32,
        kernel_size: int = 3,
        hidden: int = 100,
    ):
        super().__init__()
        self.aux = aux
        self.features = ConvFeatures(
            2, (width, 2 * width), hidden, batchnorm=batchnorm, kernel_size=kernel_size
        )
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(self.features.out_features, 1)
        if aux:
            self.fc_aux = nn.Linear(self.features.out_features, 20)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.dropout(self.features(normalize(x)))
        logit = self.fc_out(h)[:, 0]
        if not self.aux:
            return logit, None
        return logit, self.fc_aux(h).reshape(-1, 2, 10)


class DigitBranch(nn.Module):
    """One digit (N, 1, 14, 14) to 10 digit logits: ConvFeatures, dropout, Linear(10)."""

    def __init__(
        self,
        dropout: float = 0.4,
        batchnorm: bool = True,
        depth: int = 1,
        width: int = 32,
        kernel_size: int = 3,
        hidden: int = 100,
    ):
        super().__init__()
        channels = (width, 2 * width)
        self.features = ConvFeatures(
            1, channels, hidden, batchnorm=batchnorm, depth=depth, kernel_size=kernel_size
        )
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(self.features.out_features, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.dropout(self.features(x)))


class Siamese(nn.Module):
    """Weight sharing: one DigitBranch (one parameter set) applied to each digit, 20 -> head -> 1.

    Both digits go through the branch as ONE batch of 2B images (BatchNorm statistics over all
    2B digits, one running-statistics update per step), exactly as in jaxdl. The head sees
    `head_input` of each digit's 10 outputs: "softmax" (default), "logits", or "bnrelu"
    (BatchNorm `branch_bn` + ReLU); see jaxdl.models.Siamese.
    """

    def __init__(
        self,
        aux: bool = False,
        dropout: float = 0.4,
        head_hidden: int = 64,
        head_input: str = "softmax",
        batchnorm: bool = True,
        width: int = 32,
        kernel_size: int = 3,
        hidden: int = 100,
    ):
        super().__init__()
        if head_input not in HEAD_INPUTS:
            choices = ", ".join(HEAD_INPUTS)
            raise ValueError(f"unknown head_input {head_input!r}; choose from {choices}")
        self.aux = aux
        self.head_input = head_input
        self.branch = DigitBranch(
            dropout, batchnorm, width=width, kernel_size=kernel_size, hidden=hidden
        )
        if head_input == "bnrelu":
            self.branch_bn = _norm(batchnorm, nn.BatchNorm1d, 10)
        self.head_fc1 = nn.Linear(20, head_hidden)
        self.head_bn = _norm(batchnorm, nn.BatchNorm1d, head_hidden)
        self.head_fc2 = nn.Linear(head_hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = x.shape[0]
        d = self.branch(normalize(x).reshape(2 * b, 1, 14, 14))  # (2B, 10)
        if self.head_input == "softmax":
            h = F.softmax(d, dim=-1)
        elif self.head_input == "bnrelu":
            h = F.relu(self.branch_bn(d))
        else:
            h = d
        h = h.reshape(b, 20)
        h = F.relu(self.head_bn(self.head_fc1(h)))
        logit = self.head_fc2(h)[:, 0]
        return logit, (d.reshape(b, 2, 10) if self.aux else None)


def comparison_logit(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """The logit of P(a <= b) for a ~ softmax(logits_a), b ~ softmax(logits_b), as in jaxdl.

    log P - log(1 - P) as the difference of log-sum-exps of the joint log-probabilities over
    the i <= j and i > j cells (P and 1 - P are never formed).
    """
    log_a = F.log_softmax(logits_a, dim=-1)
    log_b = F.log_softmax(logits_b, dim=-1)
    joint = (log_a[..., :, None] + log_b[..., None, :]).flatten(-2)  # (..., 100), i major
    idx = torch.arange(10, device=joint.device)
    le = (idx[:, None] <= idx[None, :]).flatten()
    log_le = torch.logsumexp(joint.masked_fill(~le, float("-inf")), dim=-1)
    log_gt = torch.logsumexp(joint.masked_fill(le, float("-inf")), dim=-1)
    return log_le - log_gt


class SiameseExact(nn.Module):
    """The Siamese branch with no learned head: the comparison is exactly P(digit a <= digit b)."""

    def __init__(
        self,
        dropout: float = 0.4,
        batchnorm: bool = True,
        depth: int = 1,
        width: int = 32,
        kernel_size: int = 3,
        hidden: int = 100,
    ):
        super().__init__()
        self.branch = DigitBranch(dropout, batchnorm, depth, width, kernel_size, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        d = self.branch(normalize(x).reshape(2 * b, 1, 14, 14)).reshape(b, 2, 10)
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


def param_count(model: nn.Module) -> int:
    """Number of trainable scalars (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())
