"""Dropout in jaxdl (Flax) and torch_reference (torch) is the same inverted dropout.

The two libraries draw different masks, so agreement is statistical: the drop rate is p, the
survivors are scaled by exactly 1/(1-p), and the mean is kept (inverted dropout), each within
5 standard deviations for a million draws. The models wire the configured rate to every
dropout layer, dropout acts in train mode only, and never in eval mode.
"""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference.models as tmodels
from jaxdl import convert, models
from parity_tests.test_models import pair_inputs

N = 1_000_000
RATES = [0.1, 0.4, 0.5]


def _flax_dropout(p: float) -> np.ndarray:
    layer = fnn.Dropout(rate=p, deterministic=False)
    out = layer.apply({}, jnp.ones(N, jnp.float32), rngs={"dropout": jax.random.key(0)})
    return np.asarray(out)


def _torch_dropout(p: float) -> np.ndarray:
    torch.manual_seed(0)
    return torch.nn.Dropout(p).train()(torch.ones(N)).numpy()


@pytest.mark.parametrize("p", RATES)
@pytest.mark.parametrize("library", ["flax", "torch"])
def test_inverted_dropout_rate_scale_and_mean(library: str, p: float) -> None:
    out = _flax_dropout(p) if library == "flax" else _torch_dropout(p)
    dropped = out == 0
    rate_sd = np.sqrt(p * (1 - p) / N)
    assert abs(dropped.mean() - p) < 5 * rate_sd, (library, dropped.mean(), p)
    # every survivor scaled by 1/(1-p) (float32: to an ulp, as x / (1-p) or x * 1/(1-p))
    np.testing.assert_allclose(out[~dropped], 1 / (1 - p), rtol=2e-7)
    # inverted: E[out] = 1; the mean of N draws has sd sqrt(p / (1 - p) / N)
    mean_sd = np.sqrt(p / (1 - p) / N)
    assert abs(out.mean(dtype=np.float64) - 1) < 5 * mean_sd, (library, out.mean(), p)


def test_both_libraries_scale_survivors_identically() -> None:
    # The survivor value itself, bit for bit: the same inverted scaling, not just close.
    for p in RATES:
        flax_values = np.unique(_flax_dropout(p))
        torch_values = np.unique(_torch_dropout(p))
        assert flax_values[0] == torch_values[0] == 0
        np.testing.assert_allclose(flax_values[1:], torch_values[1:], rtol=2e-7)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_models_use_the_configured_rate_in_train_mode_only(name: str) -> None:
    p = 0.3
    tmodel = tmodels.create_model(name, dropout=p)
    rates = {m.p for m in tmodel.modules() if isinstance(m, torch.nn.Dropout)}
    assert rates == {p}, rates
    x = pair_inputs(8, 0)

    # Flax: same eval output whatever the rate; train outputs change with the dropout key.
    # (Weights converted from torch, not model.init: eager Flax init costs seconds per model.)
    model = models.create_model(name, dropout=p)
    variables = convert.torch_to_flax(tmodel.state_dict(), name)
    no_dropout = models.create_model(name, dropout=0.0)
    eval_out = model.apply(variables, x, train=False)[0]
    np.testing.assert_array_equal(eval_out, no_dropout.apply(variables, x, train=False)[0])

    def train_out(key: int) -> np.ndarray:
        (logit, _), _ = model.apply(
            variables,
            x,
            train=True,
            rngs={"dropout": jax.random.key(key)},
            mutable=["batch_stats"],
        )
        return np.asarray(logit)

    assert not np.array_equal(train_out(1), train_out(2))

    # torch: the same, with the global generator
    tmodel.eval()
    with torch.no_grad():
        first = tmodel(torch.from_numpy(x))[0]
        assert torch.equal(first, tmodel(torch.from_numpy(x))[0])
        tmodel.train()
        torch.manual_seed(1)
        a = tmodel(torch.from_numpy(x))[0]
        torch.manual_seed(2)
        b = tmodel(torch.from_numpy(x))[0]
    assert not torch.equal(a, b)
