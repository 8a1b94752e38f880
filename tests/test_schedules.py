"""The per-epoch learning-rate schedules, against their closed form and torch's own schedulers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference.schedules as tschedules
from jaxdl import config, schedules

LR = 1e-3
STEPS = 7  # steps per epoch


def jax_epoch_lrs(name: str, epochs: int, horizon: int) -> np.ndarray:
    """The Optax schedule read at every step of `horizon` epochs, shape (horizon, STEPS)."""
    sched = schedules.make_schedule(name, LR, epochs=epochs, steps_per_epoch=STEPS)
    counts = jnp.arange(horizon * STEPS)
    values = jnp.broadcast_to(jnp.asarray(sched(counts)), counts.shape)  # constant: a scalar
    return np.asarray(values, np.float64).reshape(horizon, STEPS)


def torch_epoch_lrs(scheduler_factory, horizon: int) -> np.ndarray:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=LR)
    scheduler = scheduler_factory(opt)
    lrs = []
    for _ in range(horizon):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()  # once per epoch, as the training loops do
    return np.array(lrs)


def test_names_agree():
    assert schedules.SCHEDULES == tschedules.SCHEDULES == config.SCHEDULES
    assert (schedules.T_0, schedules.ETA_MIN) == (tschedules.T_0, tschedules.ETA_MIN) == (5, 1e-4)


@pytest.mark.parametrize("name", config.SCHEDULES)
def test_constant_within_each_epoch(name):
    lrs = jax_epoch_lrs(name, epochs=10, horizon=12)
    assert (lrs == lrs[:, :1]).all()


def test_sgdr_values():
    lrs = jax_epoch_lrs("sgdr", epochs=25, horizon=25)[:, 0]
    cycle = [
        1e-3,
        9.140576474687264e-4,
        6.890576474687264e-4,
        4.109423525312737e-4,
        1.859423525312737e-4,
    ]
    np.testing.assert_allclose(lrs, np.tile(cycle, 5), rtol=1e-6)
    # Restarts: epochs 5, 10, ... are back at lr; never below eta_min.
    np.testing.assert_allclose(lrs[::5], LR, rtol=1e-6)
    assert lrs.min() > schedules.ETA_MIN


def test_cosine_and_constant_values():
    cos = jax_epoch_lrs("cosine", epochs=25, horizon=25)[:, 0]
    np.testing.assert_allclose(cos, schedules.epoch_lrs("cosine", LR, 25), rtol=1e-6)
    assert cos[0] == pytest.approx(LR, rel=1e-6) and np.all(np.diff(cos) < 0)
    np.testing.assert_allclose(jax_epoch_lrs("constant", 25, 25), LR, rtol=1e-7)


@pytest.mark.parametrize(
    ("name", "factory"),
    [
        (
            "sgdr",
            lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
                opt, T_0=5, T_mult=1, eta_min=1e-4
            ),
        ),
        (
            "cosine",
            lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=60, eta_min=1e-4),
        ),
        ("constant", lambda opt: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)),
    ],
)
def test_against_torch_schedulers_over_60_epochs(name, factory):
    want = torch_epoch_lrs(factory, 60)
    # Our torch construction and the Optax schedule, both against torch's own object.
    ours = torch_epoch_lrs(lambda opt: tschedules.make_scheduler(name, opt, epochs=60), 60)
    np.testing.assert_allclose(ours, want, rtol=1e-12)
    np.testing.assert_allclose(jax_epoch_lrs(name, epochs=60, horizon=60)[:, 0], want, rtol=1e-6)
    np.testing.assert_allclose(schedules.epoch_lrs(name, LR, 60), want, rtol=1e-12)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        schedules.make_schedule("step", LR, epochs=5, steps_per_epoch=1)
