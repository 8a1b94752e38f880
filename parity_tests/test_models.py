"""jaxdl.models and torch_reference.models compute the same outputs and BatchNorm statistics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch import nn

import torch_reference.models as tmodels
import torch_reference.train as ttrain
from jaxdl import convert, models, train
from parity_tests.compare import assert_close, to_numpy
from parity_tests.conftest import FLOAT32, Precision

MODEL_NAMES = list(models.MODELS)
BATCH = 8
MOMENTUM = 0.1  # torch's BatchNorm momentum; Flax's is 1 - 0.1
# (model, architecture hparams): every registered model as built by default, and the options
# found by scripts/arch_gap.py: conv width (64/128 for cnn; 16/32 elsewhere keeps the suite fast),
# 5x5 kernels, no Dense layer after the convs (hidden=0: the classifiers read the flattened map,
# so their weights take the NCHW/NHWC flatten permutation) and the Siamese head input ("bnrelu"
# adds the branch_bn layer).
CASES: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in MODEL_NAMES] + [
    ("cnn", {"width": 64}),
    ("cnn", {"width": 16, "kernel_size": 5}),
    ("cnn_aux", {"width": 16, "hidden": 0}),
    ("mlp", {"hidden": (64, 32, 16)}),
    ("siamese_exact", {"width": 16, "hidden": 0}),
    ("siamese", {"head_input": "bnrelu", "width": 16}),
    ("siamese_aux", {"head_input": "logits"}),
]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in hparams.items()) for name, hparams in CASES]


def pair_inputs(batch: int, seed: int, dtype: type = np.float32) -> np.ndarray:
    """Random pairs on the data's grid: 2x2 means of 0..255 integers are multiples of 1/4."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 4 * 255 + 1, (batch, 2, 14, 14)) / 4).astype(dtype)


def torch_model(
    name: str, precision: Precision, seed: int, dropout: float = 0.0, **hparams: Any
) -> nn.Module:
    """A torch_reference model in `precision` with non-trivial running statistics."""
    torch.manual_seed(seed)
    model = tmodels.create_model(name, dropout=dropout, **hparams).to(precision.torch)
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # Away from the (0, 1) initial values, so eval mode really uses stored statistics
            # and a swapped mean/var or a missed layer shows.
            shape, dtype = module.running_mean.shape, precision.torch
            module.running_mean.copy_(torch.rand(shape, generator=gen, dtype=dtype) - 0.5)
            module.running_var.copy_(torch.rand(shape, generator=gen, dtype=dtype) + 0.5)
            module.weight.data.copy_(torch.rand(shape, generator=gen, dtype=dtype) + 0.5)
            module.bias.data.copy_(torch.rand(shape, generator=gen, dtype=dtype) - 0.5)
            module.num_batches_tracked.fill_(7)
    return model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_has_a_conversion_layout(name: str) -> None:
    assert set(convert.FLATTENED_CONV_INPUTS) == set(models.MODELS)
    assert name in convert.FLATTENED_CONV_INPUTS


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_converted_tree_matches_flax_init(name: str, hparams: dict[str, Any]) -> None:
    # Same paths, shapes and dtypes as the Flax model's own variables: no layer missed or renamed.
    x = pair_inputs(2, 0)
    model = models.create_model(name, **hparams)
    init = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False))
    converted = convert.torch_to_flax(torch_model(name, FLOAT32, 0, **hparams).state_dict(), name)
    shapes = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), converted)
    assert shapes == jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), dict(init))


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_round_trip_torch_flax_torch_is_identity(
    name: str, hparams: dict[str, Any], precision: Precision
) -> None:
    state = torch_model(name, precision, 1, **hparams).state_dict()
    back = convert.flax_to_torch(
        convert.torch_to_flax(state, name),
        name,
        num_batches_tracked=convert.num_batches_tracked(state),
    )
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype, key
        assert torch.equal(back[key], tensor), key  # bit for bit
    tmodels.create_model(name, **hparams).to(precision.torch).load_state_dict(back, strict=True)


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_round_trip_flax_torch_flax_is_identity(name: str, hparams: dict[str, Any]) -> None:
    # Flax's structure (eval_shape: no eager init) filled with random values: any numbers must
    # survive the round trip bit for bit.
    x = pair_inputs(2, 0)
    model = models.create_model(name, **hparams)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(3)}, x, train=False))
    rng = np.random.default_rng(3)
    variables = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), dict(shapes)
    )
    back = convert.torch_to_flax(convert.flax_to_torch(variables, name), name)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, dict(variables))


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_eval_outputs_agree(name: str, hparams: dict[str, Any], precision: Precision) -> None:
    tmodel = torch_model(name, precision, 2, **hparams).eval()
    variables = convert.torch_to_flax(tmodel.state_dict(), name)
    x = pair_inputs(BATCH, 2, precision.numpy)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x))
    actual = models.create_model(name, dropout=0.0, **hparams).apply(variables, x, train=False)
    assert_close(actual, expected, precision.tol, check="eval outputs")


def _bn_counts(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """n of each BatchNorm (values per channel it normalises over), recorded in a forward pass."""
    counts: dict[str, int] = {}
    hooks = []
    for path, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):

            def record(mod: nn.Module, args: tuple, path: str = path) -> None:
                counts[path] = args[0].numel() // args[0].shape[1]

            hooks.append(module.register_forward_pre_hook(record))
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return counts


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_train_outputs_and_running_statistics_agree(
    name: str, hparams: dict[str, Any], precision: Precision
) -> None:
    tmodel = torch_model(name, precision, 3, **hparams)
    variables = convert.torch_to_flax(tmodel.state_dict(), name)
    x = pair_inputs(BATCH, 3, precision.numpy)
    counts = _bn_counts(tmodel.eval(), torch.from_numpy(x))
    tmodel.train()
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x))  # batch statistics, dropout 0
    actual, updates = models.create_model(name, dropout=0.0, **hparams).apply(
        variables, x, train=True, mutable=["batch_stats"]
    )
    assert_close(actual, expected, precision.tol, check="train outputs")

    torch_stats = convert.torch_to_flax(tmodel.state_dict(), name)["batch_stats"]
    flax_stats = to_numpy(updates["batch_stats"])
    old_stats = to_numpy(variables["batch_stats"])
    means = {p: s["mean"] for p, s in _by_path(flax_stats).items()}
    torch_means = {p: s["mean"] for p, s in _by_path(torch_stats).items()}
    assert_close(means, torch_means, precision.tol, check="running mean after 1 step")
    # The running variances genuinely differ: torch adds 0.1 * the unbiased batch variance,
    # Flax 0.1 * the biased one. Undo exactly the n/(n-1) factor on the Flax side and they agree.
    corrected = {
        p: convert.biased_to_unbiased(s["var"], _by_path(old_stats)[p]["var"], counts[p], MOMENTUM)
        for p, s in _by_path(flax_stats).items()
    }
    torch_vars = {p: s["var"] for p, s in _by_path(torch_stats).items()}
    assert_close(corrected, torch_vars, precision.tol, check="running var after 1 step (n/(n-1))")
    # ... and without the factor they do not (so the check above is not vacuous): the gap,
    # (1 - m) * var / (n - 1), is far above the tolerance where n is the batch size (the
    # BatchNorm1d layers). A model with hidden=0 may have only conv BatchNorms, where n is
    # batch * H * W and the gap is smaller; it must still exceed the tolerance.
    raw = {p: s["var"] for p, s in _by_path(flax_stats).items()}
    gap = max(float(np.abs(raw[p] - np.asarray(torch_vars[p])).max()) for p in raw)
    has_bn1d = any(isinstance(m, nn.BatchNorm1d) for m in tmodel.modules())
    assert gap > (100 if has_bn1d else 2) * precision.tol.abs, gap


@pytest.mark.parametrize(("name", "hparams"), CASES, ids=CASE_IDS)
def test_fresh_batch_statistics_agree(
    name: str, hparams: dict[str, Any], precision: Precision
) -> None:
    # --fresh-bn: both packages replace every running statistic by the set's own (dropout 0
    # here, so both passes see the same activations).
    tmodel = torch_model(name, precision, 4, **hparams)
    variables = convert.torch_to_flax(tmodel.state_dict(), name)
    x = pair_inputs(BATCH, 4, precision.numpy)
    counts = _bn_counts(tmodel.eval(), torch.from_numpy(x))
    ttrain.fresh_batch_stats(tmodel, torch.from_numpy(x))
    model = models.create_model(name, dropout=0.0, **hparams)
    state = train.TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        tx=optax.identity(),
        key=jax.random.PRNGKey(0),
    )
    fresh = _by_path(to_numpy(train.fresh_batch_stats(state, x, jax.random.PRNGKey(1))))
    torch_stats = _by_path(convert.torch_to_flax(tmodel.state_dict(), name)["batch_stats"])
    means = {p: s["mean"] for p, s in fresh.items()}
    torch_means = {p: s["mean"] for p, s in torch_stats.items()}
    assert_close(means, torch_means, precision.tol, check="fresh means")
    # torch keeps the unbiased variance, Flax the biased one: exactly n/(n-1) apart.
    unbiased = {
        p: convert.biased_to_unbiased(s["var"], np.zeros_like(s["var"]), counts[p], 1.0)
        for p, s in fresh.items()
    }
    torch_vars = {p: s["var"] for p, s in torch_stats.items()}
    assert_close(unbiased, torch_vars, precision.tol, check="fresh variances (n/(n-1))")
    # Not the statistics the models started with (so the comparison is not vacuous).
    old = _by_path(to_numpy(variables["batch_stats"]))
    assert max(float(np.abs(means[p] - old[p]["mean"]).max()) for p in means) > 1e-2


def _by_path(stats: dict, prefix: str = "") -> dict[str, dict]:
    """batch_stats as {torch module path: {'mean', 'var'}}."""
    out: dict[str, dict] = {}
    for key, value in stats.items():
        path = f"{prefix}.{key}" if prefix else key
        if "mean" in value and not isinstance(value["mean"], dict):
            out[path] = value
        else:
            out.update(_by_path(value, path))
    return out


def test_strict_numerics_are_on() -> None:
    # The autouse fixture in conftest.py: implicit rank and dtype promotion raise here.
    with pytest.raises(ValueError, match="rank"):
        _ = jnp.ones(3) + jnp.ones((2, 3))
    with pytest.raises(jax.dtypes.TypePromotionError):
        _ = jnp.ones(3, jnp.float32) + jnp.ones(3, jnp.int32)
