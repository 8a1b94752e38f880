"""jaxdl.schedules gives, step by step, the learning rate of torch's own per-epoch schedulers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference.schedules as tschedules
from jaxdl import schedules
from parity_tests.compare import F64, assert_close
from parity_tests.conftest import Precision

LR = 1e-3
EPOCHS_STEPPED = 60  # the horizon: 11 SGDR restarts
STEPS_PER_EPOCH = 3

# (schedule, run length in epochs). cosine/25 is stepped past its T_max: torch's recursive
# CosineAnnealingLR then climbs the cosine back up, and jaxdl must follow it.
CASES = [("constant", 60), ("cosine", 60), ("cosine", 25), ("sgdr", 60), ("sgdr", 25)]


def torch_epoch_lrs(name: str, epochs: int, n: int = EPOCHS_STEPPED) -> np.ndarray:
    """The lr torch's real scheduler object gives epochs 0..n-1 (one `step()` after each epoch)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=LR)
    scheduler = tschedules.make_scheduler(name, optimizer, epochs=epochs)
    lrs = []
    for _ in range(n):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # the order torch requires: optimizer steps, then the scheduler
        scheduler.step()
    return np.asarray(lrs, dtype=np.float64)


def test_torch_schedulers_are_the_named_classes() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=LR)
    lrs = torch.optim.lr_scheduler
    sgdr = tschedules.make_scheduler("sgdr", opt, epochs=25)
    assert isinstance(sgdr, lrs.CosineAnnealingWarmRestarts)
    assert (sgdr.T_0, sgdr.T_mult, sgdr.eta_min) == (schedules.T_0, 1, schedules.ETA_MIN)
    cosine = tschedules.make_scheduler("cosine", opt, epochs=25)
    assert isinstance(cosine, lrs.CosineAnnealingLR)
    assert (cosine.T_max, cosine.eta_min) == (25, schedules.ETA_MIN)
    assert set(tschedules.SCHEDULES) == set(schedules.SCHEDULES)


@pytest.mark.parametrize(("name", "epochs"), CASES)
def test_per_step_lr_equals_torch_scheduler(name: str, epochs: int, precision: Precision) -> None:
    expected = torch_epoch_lrs(name, epochs).astype(precision.numpy)
    schedule = schedules.make_schedule(name, LR, epochs=epochs, steps_per_epoch=STEPS_PER_EPOCH)
    counts = jnp.arange(EPOCHS_STEPPED * STEPS_PER_EPOCH)
    # optax's constant schedule returns the Python float itself, whatever the count: broadcast
    # it, and give it the precision's dtype as Optax's update does when it scales the step.
    values = schedule(counts)
    if name == "constant":
        values = np.asarray(values, dtype=precision.numpy)
    per_step = np.broadcast_to(np.asarray(values), counts.shape)
    per_step = per_step.reshape(EPOCHS_STEPPED, STEPS_PER_EPOCH)
    # Piecewise constant over an epoch, as a torch scheduler stepped once per epoch is.
    assert (per_step == per_step[:, :1]).all()
    assert_close(per_step[:, 0], expected, precision.tol, check="lr per step", kind="rel")


@pytest.mark.parametrize(("name", "epochs"), CASES)
def test_closed_form_epoch_lrs_equal_torch(name: str, epochs: int) -> None:
    # float64 closed form over the run's epochs vs torch's float64 (recursive for cosine) values.
    expected = torch_epoch_lrs(name, epochs, n=epochs)
    actual = schedules.epoch_lrs(name, LR, epochs)
    assert_close(actual, expected, F64, check="lr closed form (epoch_lrs)", kind="rel")


def test_sgdr_restarts_every_t0_epochs(precision: Precision) -> None:
    torch_lrs = torch_epoch_lrs("sgdr", EPOCHS_STEPPED)
    schedule = schedules.make_schedule("sgdr", LR, epochs=EPOCHS_STEPPED, steps_per_epoch=1)
    ours = np.asarray(schedule(jnp.arange(EPOCHS_STEPPED))).astype(np.float64)
    restarts = np.arange(0, EPOCHS_STEPPED, schedules.T_0)
    np.testing.assert_array_equal(torch_lrs[restarts], LR)  # torch restarts at exactly lr
    np.testing.assert_allclose(ours[restarts], LR, rtol=precision.tol.rel)
    # Just before each restart: the cosine's last value above eta_min, the smallest of the cycle.
    last = restarts[1:] - 1
    floor = schedules.ETA_MIN + (LR - schedules.ETA_MIN) * (1 + np.cos(np.pi * 4 / 5)) / 2
    np.testing.assert_allclose(torch_lrs[last], floor, rtol=1e-12)
    np.testing.assert_allclose(ours[last], floor, rtol=precision.tol.rel)
