"""Exact weight conversion between a torch_reference `state_dict` and jaxdl Flax variables.

One converter each way, for every model in `jaxdl.models.MODELS`; names match because every
Flax submodule is named like the torch attribute (`features.conv1.weight` <->
`params/features/conv1/kernel`). Each layer kind has one conversion, applied by shape:

- Conv2d `weight` (O, I, kh, kw) <-> Conv `kernel` (kh, kw, I, O): transpose (2, 3, 1, 0).
  Both libraries cross-correlate (no kernel flip), so nothing else changes.
- Linear `weight` (out, in) <-> Dense `kernel` (in, out): transpose.
- The Linear layers that read the flattened conv map (`FLATTENED_CONV_INPUTS`: the features'
  `fc1`, or without it, `hidden=0`, the classifiers after it): torch flattens their input
  NCHW, index c*H*W + h*W + w; Flax flattens NHWC, index h*W*C + w*C + c. The kernel's rows are
  therefore permuted as well as transposed: (out, C, H, W) -> (H, W, C, out). The layout fixes
  (H, W); C is the kernel's input size / (H * W), so any conv width converts.
- BatchNorm `weight`/`bias` <-> `scale`/`bias`; `running_mean`/`running_var` <->
  `batch_stats` `mean`/`var`, copied unchanged. Both libraries normalise with the stored value in
  eval mode, so the stored value must not be rescaled. What differs is the TRAINING update:
  torch adds (1 - m) * the UNBIASED batch variance (sum / (n - 1)), Flax 0.12 adds (1 - m) * the
  BIASED one (sum / n), n being the number of values per channel (batch, or batch*H*W). After one
  training step from the same state the two running variances differ by exactly
  (1 - m) * var_biased / (n - 1); `parity_tests/test_models.py` checks this, and
  `biased_to_unbiased` gives the torch value from the Flax one.
- `num_batches_tracked` (int64, one per BatchNorm) has no Flax counterpart: torch only reads it
  when momentum=None, which no model here uses. `flax_to_torch` writes the count it is given
  (a TrainState's `step` is the natural one), so torch -> Flax -> torch is the identity.

Arrays keep their dtype (float32 or float64); converting float64 to Flax needs
`jax.enable_x64()`, otherwise JAX would downcast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import torch

__all__ = [
    "FLATTENED_CONV_INPUTS",
    "biased_to_unbiased",
    "flax_to_torch",
    "num_batches_tracked",
    "torch_to_flax",
]

# Per registered model: the torch Linear layers (module paths) that can read a flattened conv
# feature map (14x14 inputs, two 2x2 pools -> (C, 3, 3); C, 2 * width, is read off the weight's
# shape). The first is the conv features' hidden Linear `fc1`; a model built with `hidden=0` has
# none, and then the layers after it (the rest of the tuple) read the map.
FLATTENED_CONV_INPUTS: dict[str, tuple[str, ...]] = {
    "mlp": (),  # flattens the raw (2, 14, 14) input in NCHW order in both libraries
    "cnn": ("features.fc1", "fc_out"),
    "cnn_aux": ("features.fc1", "fc_out", "fc_aux"),
    "siamese": ("branch.features.fc1", "branch.fc_out"),
    "siamese_aux": ("branch.features.fc1", "branch.fc_out"),
    "siamese_exact": ("branch.features.fc1", "branch.fc_out"),
}
MAP_HW = (3, 3)  # the conv map's spatial size where it is flattened


def _channels(module: str, inputs: int, h: int, w: int) -> int:
    # The flattened (C, H, W) map's C from the Linear's input size.
    if inputs % (h * w):
        raise ValueError(f"{module}: {inputs} inputs are not a flattened (C, {h}, {w}) map")
    return inputs // (h * w)


def _flattened_readers(model: str, modules: Iterable[str]) -> frozenset[str]:
    """The modules (of those the model has, `modules`) whose input is the flattened map."""
    if model not in FLATTENED_CONV_INPUTS:
        raise ValueError(
            f"no conversion layout for model {model!r}; add it to FLATTENED_CONV_INPUTS"
        )
    readers = FLATTENED_CONV_INPUTS[model]
    if not readers:
        return frozenset()
    hidden, after = readers[0], readers[1:]
    return frozenset([hidden] if hidden in set(modules) else after)


def _group_by_module(state_dict: Mapping[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in state_dict.items():
        module, _, leaf = key.rpartition(".")
        # A copy, not numpy's view of torch's memory: JAX may read a host buffer after
        # jnp.asarray returns (asynchronous transfer), and torch updates BatchNorm buffers in
        # place, so a later torch forward could leak into the Flax variables (seen: a parity
        # run whose "old" running mean already held torch's updated one).
        modules.setdefault(module, {})[leaf] = tensor.detach().cpu().numpy().copy()
    return modules


def _set(tree: dict[str, Any], path: list[str], leaf: str, value: np.ndarray) -> None:
    for name in path:
        tree = tree.setdefault(name, {})
    tree[leaf] = jnp.asarray(value)


def torch_to_flax(state_dict: Mapping[str, torch.Tensor], model: str) -> dict[str, Any]:
    """Flax variables `{'params', 'batch_stats'}` holding exactly the torch model's numbers.

    Args:
      state_dict: `torch_reference` model `state_dict()` (or any mapping with its keys, e.g.
        parameter gradients, which convert like the parameters).
      model: the registered model name (selects the flatten-order permutation).

    Returns:
      `{'params': ..., 'batch_stats': ...}` as `jaxdl.models` expects (`batch_stats` omitted
      when the mapping has no running statistics).
    """
    grouped = _group_by_module(state_dict)
    readers = _flattened_readers(model, grouped)
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for module, leaves in grouped.items():
        path = module.split(".")
        weight = leaves.get("weight")
        if "running_mean" in leaves or (weight is not None and weight.ndim == 1):
            if weight is not None:
                _set(params, path, "scale", weight)
                _set(params, path, "bias", leaves["bias"])
            if "running_mean" in leaves:
                _set(stats, path, "mean", leaves["running_mean"])
                _set(stats, path, "var", leaves["running_var"])
        elif weight is not None and weight.ndim == 4:
            _set(params, path, "kernel", weight.transpose(2, 3, 1, 0))
            _set(params, path, "bias", leaves["bias"])
        elif weight is not None and weight.ndim == 2:
            if module in readers:
                h, w = MAP_HW
                c = _channels(module, weight.shape[1], h, w)
                kernel = weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
            else:
                kernel = weight.T
            _set(params, path, "kernel", kernel)
            _set(params, path, "bias", leaves["bias"])
        else:
            raise ValueError(f"cannot convert torch module {module!r} with {sorted(leaves)}")
    variables: dict[str, Any] = {"params": params}
    if stats:
        variables["batch_stats"] = stats
    return variables


def _walk(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
    # Yields (module path, {leaf name: array}) for every dict that holds arrays.
    leaves = {k: v for k, v in tree.items() if not isinstance(v, Mapping)}
    if leaves:
        yield prefix, leaves
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _walk(v, (*prefix, k))


def flax_to_torch(
    variables: Mapping[str, Any], model: str, *, num_batches_tracked: int = 0
) -> dict[str, torch.Tensor]:
    """The torch `state_dict` holding exactly the Flax numbers (inverse of `torch_to_flax`).

    Args:
      variables: `{'params': ..., 'batch_stats': ...}` of a `jaxdl.models` model (or
        `{'params': grads}`).
      model: the registered model name (selects the flatten-order permutation).
      num_batches_tracked: written into every BatchNorm's `num_batches_tracked` (training steps
        taken; torch does not use it with momentum 0.1).

    Returns:
      A dict for `torch_reference` `model.load_state_dict(..., strict=True)`.
    """
    modules = list(_walk(variables["params"]))
    readers = _flattened_readers(model, (".".join(path) for path, _ in modules))
    out: dict[str, torch.Tensor] = {}
    stats = dict(_walk(variables.get("batch_stats", {})))
    for path, leaves in modules:
        module = ".".join(path)
        arrays = {k: np.array(v) for k, v in leaves.items()}  # writable copies for torch
        if "scale" in arrays:
            out[f"{module}.weight"] = torch.from_numpy(arrays["scale"])
            out[f"{module}.bias"] = torch.from_numpy(arrays["bias"])
            if path in stats:
                running = stats.pop(path)
                out[f"{module}.running_mean"] = torch.from_numpy(np.array(running["mean"]))
                out[f"{module}.running_var"] = torch.from_numpy(np.array(running["var"]))
                out[f"{module}.num_batches_tracked"] = torch.tensor(
                    num_batches_tracked, dtype=torch.int64
                )
            continue
        kernel = arrays["kernel"]
        if kernel.ndim == 4:
            weight = kernel.transpose(3, 2, 0, 1)
        elif module in readers:
            h, w = MAP_HW
            c = _channels(module, kernel.shape[0], h, w)
            weight = kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)
        else:
            weight = kernel.T
        out[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        out[f"{module}.bias"] = torch.from_numpy(arrays["bias"])
    if stats:
        raise ValueError(f"batch_stats without matching BatchNorm params: {sorted(stats)}")
    return out


def num_batches_tracked(state_dict: Mapping[str, torch.Tensor]) -> int:
    """The (common) `num_batches_tracked` of a state_dict's BatchNorm layers; 0 without any."""
    counts = {int(v) for k, v in state_dict.items() if k.endswith(".num_batches_tracked")}
    if len(counts) > 1:
        raise ValueError(f"BatchNorm layers disagree on num_batches_tracked: {sorted(counts)}")
    return counts.pop() if counts else 0


def biased_to_unbiased(
    new_var: np.ndarray, old_var: np.ndarray, n: int, momentum: float = 0.1, steps: int = 1
) -> np.ndarray:
    """torch's running_var after `steps` training steps, from Flax's after the same steps.

    Both start from `old_var` and decay it by (1 - momentum) per step; Flax adds momentum * the
    biased batch variance (sum / n), torch that variance times n / (n - 1). The recursion is
    linear, so with the same n every step (a fixed batch size) the accumulated part differs by
    exactly n / (n - 1) after any number of steps. `momentum` is torch's (Flax's is 1 - it).
    """
    decayed = (1.0 - momentum) ** steps * old_var
    return decayed + (new_var - decayed) * (n / (n - 1))
