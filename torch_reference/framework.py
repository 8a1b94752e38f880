"""The graded mini framework: torch tensor operations only, hand-written backward, no torch.nn.

The course's rules: tensors come from `torch.empty` and tensor methods, autograd is off while
training (`torch.set_grad_enabled(False)`, done by the trainer and the script rather than at
import, so that importing this module never changes another module's autograd), and no
`torch.nn`. `jaxdl.framework` is the same framework as pure JAX functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "SGD",
    "Linear",
    "LossMSE",
    "Module",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "constant_lr",
    "cosine_lr",
    "export_params",
    "load_params",
]

Tensor = torch.Tensor


class Module:
    """The course's interface: forward, backward, param."""

    def forward(self, *input: Tensor) -> Tensor:
        raise NotImplementedError

    def backward(self, *gradwrtoutput: Tensor) -> Tensor:
        """Gradient w.r.t. the input of the last forward; accumulates parameter gradients."""
        raise NotImplementedError

    def param(self) -> list[tuple[Tensor, Tensor]]:
        """(parameter, gradient) pairs; empty for parameter-free modules."""
        return []

    def zero_grad(self) -> None:
        for _, grad in self.param():
            grad.zero_()

    def __call__(self, *input: Tensor) -> Tensor:
        return self.forward(*input)


def _zeros(*shape: int, dtype: torch.dtype) -> Tensor:
    return torch.empty(*shape, dtype=dtype).zero_()


class Linear(Module):
    """y = x W^T + b with W (out, in), as torch.nn.Linear stores it.

    Initialised as torch.nn.Linear by default (and jaxdl.framework.linear): W and b uniform in
    +-1/sqrt(in_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        bound = 1.0 / math.sqrt(in_features)
        self.weight = torch.empty(out_features, in_features, dtype=dtype).uniform_(
            -bound, bound, generator=generator
        )
        self.bias = torch.empty(out_features, dtype=dtype).uniform_(
            -bound, bound, generator=generator
        )
        self.grad_weight = _zeros(out_features, in_features, dtype=dtype)
        self.grad_bias = _zeros(out_features, dtype=dtype)
        self._input: Tensor | None = None

    def forward(self, *input: Tensor) -> Tensor:
        (x,) = input
        self._input = x
        return x @ self.weight.T + self.bias

    def backward(self, *gradwrtoutput: Tensor) -> Tensor:
        (dy,) = gradwrtoutput
        if self._input is None:
            raise RuntimeError("Linear.backward called before forward")
        self.grad_weight += dy.T @ self._input
        self.grad_bias += dy.sum(dim=0)
        return dy @ self.weight

    def param(self) -> list[tuple[Tensor, Tensor]]:
        return [(self.weight, self.grad_weight), (self.bias, self.grad_bias)]


class _Elementwise(Module):
    """A parameter-free y = f(x); subclasses say what to keep for the derivative."""

    def __init__(self) -> None:
        self._saved: Tensor | None = None

    def _saved_or_raise(self) -> Tensor:
        if self._saved is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._saved


class ReLU(_Elementwise):
    """max(x, 0); derivative 0 at exactly 0, as torch.relu's."""

    def forward(self, *input: Tensor) -> Tensor:
        (x,) = input
        self._saved = x > 0
        return x * self._saved

    def backward(self, *gradwrtoutput: Tensor) -> Tensor:
        (dy,) = gradwrtoutput
        return dy * self._saved_or_raise()


class Tanh(_Elementwise):
    """tanh(x); derivative 1 - tanh(x)^2 from the saved output."""

    def forward(self, *input: Tensor) -> Tensor:
        (x,) = input
        self._saved = x.tanh()
        return self._saved

    def backward(self, *gradwrtoutput: Tensor) -> Tensor:
        (dy,) = gradwrtoutput
        y = self._saved_or_raise()
        return dy * (1 - y * y)


class Sigmoid(_Elementwise):
    """1 / (1 + exp(-x)); derivative s (1 - s) from the saved output."""

    def forward(self, *input: Tensor) -> Tensor:
        (x,) = input
        self._saved = x.sigmoid()
        return self._saved

    def backward(self, *gradwrtoutput: Tensor) -> Tensor:
        (dy,) = gradwrtoutput
        y = self._saved_or_raise()
        return dy * (y * (1 - y))


class Sequential(Module):
    """Modules in series: forward in order, backward in reverse."""

    def __init__(self, *modules: Module) -> None:
        if not modules:
            raise ValueError("Sequential needs at least one module")
        self.modules = list(modules)

    def forward(self, *input: Tensor) -> Tensor:
        (x,) = input
        for module in self.modules:
            x = module.forward(x)
        return x

    def backward(self, *gradwrtoutput: Tensor) -> Tensor:
        (dy,) = gradwrtoutput
        for module in reversed(self.modules):
            dy = module.backward(dy)
        return dy

    def param(self) -> list[tuple[Tensor, Tensor]]:
        return [pair for module in self.modules for pair in module.param()]


class LossMSE(Module):
    """Mean over all elements of (pred - target)^2, as torch.nn.MSELoss()."""

    def __init__(self) -> None:
        self._diff: Tensor | None = None

    def forward(self, *input: Tensor) -> Tensor:
        pred, target = input
        if pred.shape != target.shape:
            # Silent broadcasting of (n, 1) against (n,) is the classic MSE bug: refuse it.
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        self._diff = pred - target
        return (self._diff * self._diff).mean()

    def backward(self, *gradwrtoutput: Tensor) -> Tensor:
        """d loss / d pred, times the upstream gradient if one is given (default 1)."""
        if self._diff is None:
            raise RuntimeError("LossMSE.backward called before forward")
        grad = self._diff * (2.0 / self._diff.numel())
        if gradwrtoutput:
            grad = grad * gradwrtoutput[0]
        return grad


def constant_lr(lr: float) -> Callable[[int], float]:
    """The same learning rate at every step."""
    return lambda step: lr


def cosine_lr(lr: float, total_steps: int, final_fraction: float = 0.0) -> Callable[[int], float]:
    """Cosine decay from lr to lr * final_fraction over total_steps, then flat (as jaxdl's)."""

    def schedule(step: int) -> float:
        t = min(step, total_steps) / max(total_steps, 1)
        return lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t)))

    return schedule


class SGD:
    """Stochastic gradient descent with torch.optim.SGD's momentum convention.

    v <- momentum * v + g;  p <- p - lr(step) * v   (plain p <- p - lr * g when momentum is 0)
    """

    def __init__(
        self,
        params: Sequence[tuple[Tensor, Tensor]],
        lr: float | Callable[[int], float],
        momentum: float = 0.0,
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.params = list(params)
        self.schedule = lr if callable(lr) else constant_lr(lr)
        self.momentum = momentum
        self.step_count = 0
        self.velocity = [_zeros(*p.shape, dtype=p.dtype) for p, _ in self.params]

    def zero_grad(self) -> None:
        for _, grad in self.params:
            grad.zero_()

    def step(self) -> None:
        lr = self.schedule(self.step_count)
        for (p, g), v in zip(self.params, self.velocity, strict=True):
            if self.momentum:
                v.mul_(self.momentum).add_(g)
                g = v
            # `lr * g` rounded first, then subtracted (no fused add with alpha): jaxdl's sgd
            # does the same, which keeps float32 runs of the two bit-close.
            p -= lr * g
        self.step_count += 1


def load_params(module: Module, params: Any) -> None:
    """Copies jaxdl.framework params (nested tuples, LinearParams (w (in,out), b)) into module.

    The one conversion between the two layouts: jaxdl's w is the transpose of Linear.weight.
    Leaves may be NumPy arrays or anything torch.as_tensor accepts.
    """
    if isinstance(module, Sequential):
        if len(params) != len(module.modules):
            raise ValueError(f"{len(params)} param entries for {len(module.modules)} modules")
        for sub, p in zip(module.modules, params, strict=True):
            load_params(sub, p)
    elif isinstance(module, Linear):
        w, b = params
        w = torch.as_tensor(w, dtype=module.weight.dtype)
        b = torch.as_tensor(b, dtype=module.bias.dtype)
        if w.T.shape != module.weight.shape or b.shape != module.bias.shape:
            raise ValueError(f"shapes {tuple(w.shape)}, {tuple(b.shape)} do not fit {module}")
        module.weight.copy_(w.T)
        module.bias.copy_(b)
    elif len(params) != 0:
        raise ValueError(f"{type(module).__name__} has no parameters, got {params!r}")


def export_params(module: Module, *, grads: bool = False) -> Any:
    """The inverse of load_params: parameters (or, with grads=True, their accumulated
    gradients) as jaxdl's nested tuples of tensors, weights transposed to (in, out)."""
    if isinstance(module, Sequential):
        return tuple(export_params(sub, grads=grads) for sub in module.modules)
    if isinstance(module, Linear):
        w, b = (module.grad_weight, module.grad_bias) if grads else (module.weight, module.bias)
        return (w.T.clone(), b.clone())
    return ()
