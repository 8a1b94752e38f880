"""Training-set augmentation (jaxdl.augment), siamese_exact's comparison and the batchnorm flag."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference.models as tmodels
from jaxdl import augment, models

REPO = Path(__file__).resolve().parent.parent


def test_shift_moves_each_digit_without_wrapping():
    x = jnp.ones((4, 2, 14, 14), jnp.float32)
    shifted = np.asarray(augment.shift_digits(jax.random.key(0), x, 2))
    assert shifted.shape == x.shape
    # A shift only brings in zeros: every digit keeps at least (14 - 2)^2 of its ones.
    kept = shifted.reshape(8, -1).sum(axis=1)
    assert np.all(kept >= 12 * 12) and np.all(kept <= 14 * 14)
    assert np.all(np.isin(shifted, [0.0, 1.0]))
    assert augment.shift_digits(jax.random.key(0), x, 0) is x


def test_shift_is_a_translation():
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (3, 2, 14, 14)), jnp.float32)
    shifted = np.asarray(augment.shift_digits(jax.random.key(1), x, 1))
    for img, out in zip(np.asarray(x).reshape(6, 14, 14), shifted.reshape(6, 14, 14), strict=True):
        padded = np.pad(img, 1)
        assert any(
            np.array_equal(out, padded[dy : dy + 14, dx : dx + 14])
            for dy in range(3)
            for dx in range(3)
        )


def test_repair_keeps_the_digits_and_recomputes_targets():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 10, (50, 2))
    # Each image holds its class, so the images must follow their classes through the shuffle.
    x = np.broadcast_to(classes[:, :, None, None], (50, 2, 14, 14)).astype(np.float32)
    new_x, target, new_classes = augment.repair_pairs(
        jax.random.key(3), jnp.asarray(x), jnp.asarray(classes), jnp.int32
    )
    new_x, target, new_classes = map(np.asarray, (new_x, target, new_classes))
    assert sorted(new_classes.ravel()) == sorted(classes.ravel())
    np.testing.assert_array_equal(new_x[:, :, 0, 0], new_classes)
    np.testing.assert_array_equal(target, new_classes[:, 0] <= new_classes[:, 1])
    assert not np.array_equal(new_classes, classes)


def test_comparison_logit_is_the_exact_probability_in_both_packages():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 10)) * 3
    pa = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    pb = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    p = np.array(
        [sum(pa[k, i] * pb[k, j] for i in range(10) for j in range(i, 10)) for k in range(5)]
    )
    expected = np.log(p) - np.log1p(-p)
    with jax.enable_x64():
        ours = models.comparison_logit(jnp.asarray(a), jnp.asarray(b))
    np.testing.assert_allclose(ours, expected, rtol=1e-10)
    theirs = tmodels.comparison_logit(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(theirs, expected, rtol=1e-10)


def test_comparison_logit_stays_finite_when_certain():
    # Confident digits: P rounds to 1 in float32, yet the logit and its gradient stay finite.
    a = jnp.zeros((1, 10)).at[0, 2].set(60.0)
    b = jnp.zeros((1, 10)).at[0, 7].set(60.0)
    logit, grad = jax.value_and_grad(lambda a: models.comparison_logit(a, b).sum())(a)
    assert np.isfinite(float(logit)) and float(logit) > 50
    assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("name", ["mlp", "cnn", "siamese_aux", "siamese_exact"])
def test_batchnorm_off_leaves_out_every_batchnorm_in_both_packages(name):
    model = models.create_model(name, batchnorm=False)
    x = jnp.zeros((2, 2, 14, 14))
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x))
    assert set(variables) == {"params"}
    paths = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    assert not any("bn" in jax.tree_util.keystr(p) for p, _ in paths)
    tmodel = tmodels.create_model(name, batchnorm=False)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in tmodel.modules())
    assert models.param_count(variables["params"]) == tmodels.param_count(tmodel)


def test_deeper_siamese_exact_converts_and_agrees_with_torch():
    """depth=2 adds conv{k}_2/bn{k}_2 in both packages; converted weights give the same outputs."""
    from jaxdl import convert

    torch.manual_seed(0)
    tmodel = tmodels.create_model("siamese_exact", depth=2, dropout=0.0).eval()
    x = np.random.default_rng(0).uniform(0, 255, (4, 2, 14, 14)).astype(np.float32)
    with torch.no_grad():
        t_logit, t_aux = tmodel(torch.from_numpy(x))
    variables = convert.torch_to_flax(tmodel.state_dict(), "siamese_exact")
    fmodel = models.create_model("siamese_exact", depth=2, dropout=0.0)
    logit, aux = fmodel.apply(variables, jnp.asarray(x), train=False)
    np.testing.assert_allclose(np.asarray(aux), t_aux.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(logit), t_logit.numpy(), rtol=1e-4, atol=1e-4)


def test_torch_training_with_augmentation_is_seeded():
    # torch_reference mirrors --shift/--repair: draws from the run's generator, so a run is a
    # deterministic function of its seed, and the augmentation really changes the training.
    from jaxdl.config import TrainConfig
    from torch_reference import train as ttrain

    torch.set_num_threads(1)
    base = TrainConfig(model="siamese_exact", epochs=2, runs=1, nb=100, source="bundled")
    aug = base.replace(shift=1, repair=True)
    a, b = ttrain.train_run(aug, 0), ttrain.train_run(aug, 0)
    plain = ttrain.train_run(base, 0)
    assert a["train_loss"] == b["train_loss"] and a["test_error"] == b["test_error"]
    assert a["train_loss"] != plain["train_loss"]


def test_rotate_probe_rotates_about_the_centre() -> None:
    # scripts/rotate_probe.py (issue 7's rotation experiment): 0 is the identity, a quarter
    # turn is np.rot90(k=-1) (the sign is immaterial: angles are drawn symmetric about 0).
    import importlib.util

    spec = importlib.util.spec_from_file_location("rotate_probe", REPO / "scripts/rotate_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    x = np.random.default_rng(0).uniform(0, 255, (3, 2, 14, 14)).astype(np.float32)
    same = probe.rotate_by(jnp.asarray(x), jnp.zeros(6))
    np.testing.assert_allclose(np.asarray(same), x, atol=1e-4)
    quarter = probe.rotate_by(jnp.asarray(x), jnp.full(6, np.pi / 2))
    np.testing.assert_allclose(np.asarray(quarter), np.rot90(x, -1, axes=(2, 3)), atol=1e-3)
    turned = probe.rotate_digits(jax.random.PRNGKey(0), jnp.asarray(x), 10.0)
    assert turned.shape == x.shape and not np.allclose(np.asarray(turned), x)
