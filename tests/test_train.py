"""Project I training in both packages: losses, optimizers, errors, a smoke epoch per model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import torch_reference.train as ttrain
from jaxdl import config, results, train

# Small and fast: the bundled digits, 20 steps of 25 pairs. The CLI test reuses this recipe so
# that the compiled functions are shared within the test session.
PROJECT_I_MODELS = ("mlp", "cnn", "siamese", "cnn_aux", "siamese_aux")
SMOKE = config.TrainConfig(epochs=1, runs=1, nb=500, batch_size=25, source="bundled")


def test_compute_losses_bce_plus_weighted_ce():
    logit = jnp.array([0.3, -1.2, 2.0])
    target = jnp.array([1, 0, 0])
    aux = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 10)), jnp.float32)
    classes = np.array([[1, 2], [3, 3], [9, 0]])
    total, bce, ce = train.compute_losses(logit, aux, target, jnp.asarray(classes), 0.8)
    t_total, t_bce, t_ce = ttrain.compute_losses(
        torch.tensor(np.asarray(logit)),
        torch.tensor(np.asarray(aux)),
        torch.tensor(np.asarray(target)),
        torch.tensor(classes),
        0.8,
    )
    np.testing.assert_allclose([total, bce, ce], [t_total, t_bce, t_ce], rtol=1e-6)
    np.testing.assert_allclose(total, bce + 0.8 * ce, rtol=1e-6)
    _, _, no_ce = train.compute_losses(logit, None, target, jnp.asarray(classes), 0.8)
    assert float(no_ce) == 0.0


def test_error_count_rounds_the_sigmoid():
    logit = np.array([-3.0, -0.1, 0.0, 0.1, 4.0], np.float32)
    target = np.array([0, 1, 0, 0, 1])
    # sigmoid(0) = 0.5 rounds to 0 (half to even) in both frameworks.
    assert int(train.error_count(jnp.asarray(logit), jnp.asarray(target))) == 2
    assert ttrain.error_count(torch.tensor(logit), torch.tensor(target)) == 2


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_optimizers_match_torch_for_a_few_steps(name):
    """adam = coupled L2 (decay in the gradient), adamw = decoupled; 5 steps on a quadratic."""
    w0 = np.array([1.0, -2.0, 0.5], np.float32)
    target = np.array([0.3, 0.1, -0.4], np.float32)
    tx = train.make_optimizer(name, 1e-2, 0.1)
    w = jnp.asarray(w0)
    state = tx.init(w)
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = ttrain.make_optimizer(name, [tw], 1e-2, 0.1)
    for _ in range(5):
        grad = jax.grad(lambda w: jnp.sum((w - target) ** 2))(w)
        updates, state = tx.update(grad, state, w)
        w = optax.apply_updates(w, updates)
        topt.zero_grad()
        ((tw - torch.tensor(target)) ** 2).sum().backward()
        topt.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="unknown optimizer"):
        train.make_optimizer("sgd", 1e-2, 0.0)


def test_epoch_batches_is_a_seeded_shuffle():
    a = np.asarray(train.epoch_batches(jax.random.PRNGKey(0), 103, 10))
    assert a.shape == (10, 10) and len(set(a.ravel())) == 100 and a.max() < 103
    assert (a == np.asarray(train.epoch_batches(jax.random.PRNGKey(0), 103, 10))).all()
    assert (a != np.asarray(train.epoch_batches(jax.random.PRNGKey(1), 103, 10))).any()
    t = ttrain.epoch_batches(torch.Generator().manual_seed(0), 103, 10)
    assert t.shape == (10, 10) and len(set(t.ravel().tolist())) == 100


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # Two threads on two shared cores were up to 7x slower per step than one (docs/PROJECT1.md).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smoke_pairs():
    return train.load_pairs(SMOKE, seed=0)


def falls(losses: np.ndarray) -> bool:
    return float(np.mean(losses[-5:])) < float(np.mean(losses[:5]))


@pytest.mark.parametrize("name", PROJECT_I_MODELS)
def test_flax_one_epoch_loss_falls(name, smoke_pairs):
    cfg = SMOKE.replace(model=name)
    pairs, _ = smoke_pairs
    model, tx = train.build(cfg)
    state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    batch_idx = train.epoch_batches(jax.random.PRNGKey(1), cfg.nb, cfg.batch_size)
    state, steps = train.train_epoch(state, pairs, batch_idx, cfg.aux_weight)
    losses = np.asarray(steps["loss"])
    assert losses.shape == (cfg.steps_per_epoch,) and np.isfinite(losses).all()
    assert falls(losses), losses
    assert int(state.step) == cfg.steps_per_epoch


@pytest.mark.parametrize("name", PROJECT_I_MODELS)
def test_torch_one_epoch_loss_falls(name):
    cfg = SMOKE.replace(model=name)
    pairs, _ = ttrain.load_pairs(cfg, seed=0)
    torch.manual_seed(0)
    model = ttrain.create_model(cfg)
    opt = ttrain.make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    batch_idx = ttrain.epoch_batches(torch.Generator().manual_seed(1), cfg.nb, cfg.batch_size)
    losses = ttrain.train_epoch(model, opt, pairs, batch_idx, cfg.aux_weight)["loss"].numpy()
    assert losses.shape == (cfg.steps_per_epoch,) and np.isfinite(losses).all()
    assert falls(losses), losses
    assert 0 <= ttrain.evaluate(model, pairs, cfg.aux_weight)["errors"] <= cfg.nb


def check_results(res: dict, cfg: config.TrainConfig) -> None:
    assert len(res["runs"]) == cfg.runs
    for run, r in enumerate(res["runs"]):
        assert r["seed"] == cfg.seed + run and r["model"] == cfg.model and not r["diverged"]
        for key in ("train_error", "test_error", "train_loss", "test_loss"):
            assert len(r[key]) == cfg.epochs and np.isfinite(r[key]).all()
        assert all(0 <= e <= 1 for e in r["train_error"] + r["test_error"])
    assert res["summary"]["runs"] == cfg.runs and res["summary"]["diverged_runs"] == 0


def test_flax_runs_reseed_and_reuse_the_compiled_step():
    cfg = SMOKE.replace(runs=2, epochs=2)
    train.train_and_evaluate(cfg.replace(runs=1))  # compiles
    compiled = train.train_batch._cache_size()
    res = train.train_and_evaluate(cfg)
    check_results(res, cfg)
    assert train.train_batch._cache_size() == compiled, "a second run recompiled the step"
    a, b = res["runs"]
    assert a["train_loss"] != b["train_loss"]  # different pairs, init and order
    again = train.train_run(cfg, 1)
    assert again["test_error"] == b["test_error"] and again["train_loss"] == b["train_loss"]


def test_torch_runs_reseed_and_repeat():
    cfg = SMOKE.replace(runs=2, epochs=2, model="mlp")
    res = ttrain.train_and_evaluate(cfg)
    check_results(res, cfg)
    assert res["runs"][0]["train_loss"] != res["runs"][1]["train_loss"]
    again = ttrain.train_run(cfg, 1)
    assert again["train_loss"] == res["runs"][1]["train_loss"]


def test_summary_excludes_diverged_runs_and_never_reports_nan():
    good = {"train_error": [0.2, 0.1], "test_error": [0.3, 0.2], "train_loss": [1.0, 0.5]}
    runs = [
        {**good, "seconds": 1.0},
        {**good, "test_error": [0.3, 0.1], "seconds": 1.0},
        {
            "train_error": [0.5],
            "test_error": [0.5],
            "train_loss": [2.0],
            "seconds": 1.0,
            "diverged": True,
            "diverged_epoch": 2,
        },
    ]
    s = results.summarize(runs)
    assert s["diverged_runs"] == 1 and s["runs"] == 3
    assert s["final_test_error_mean"] == pytest.approx(0.15)
    assert s["final_test_error_min"] == pytest.approx(0.1)
    assert "diverged" in results.format_table([("cnn", 2, s)])
    none = results.summarize(runs[2:])
    assert none["final_test_error_mean"] is None
    assert "n/a" in results.format_table([("cnn", 2, none)])


def test_fresh_batch_stats_are_the_sets_own() -> None:
    # With the fresh statistics, eval mode (running averages) must give what train mode (the
    # batch's own statistics) gives on the same set: dropout 0, so the two passes agree.
    cfg = config.TrainConfig(model="cnn", dropout=0.0, nb=64, source="bundled")
    model, tx = train.build(cfg)
    state = train.create_train_state(model, tx, jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (64, 2, 14, 14), maxval=255.0)
    stats = train.fresh_batch_stats(state, x, jax.random.PRNGKey(2))
    variables = {"params": state.params, "batch_stats": stats}
    (evaluated, _) = state.apply_fn(variables, x, train=False)
    (trained, _), _ = state.apply_fn(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(evaluated, trained, rtol=1e-4, atol=1e-4)
    # ... and not what the initial running statistics (mean 0, variance 1) give.
    (initial, _) = state.apply_fn(
        {"params": state.params, "batch_stats": state.batch_stats}, x, train=False
    )
    assert float(jnp.max(jnp.abs(initial - trained))) > 1e-2


@pytest.mark.parametrize("framework", ["flax", "torch"])
def test_fresh_bn_changes_the_evaluation_only(framework):
    # --fresh-bn replaces the running statistics before each evaluation; training reads batch
    # statistics and its dropout draws are untouched, so the losses are the same bit for bit
    # and only the errors (eval mode) move.
    trainer = train if framework == "flax" else ttrain
    cfg = SMOKE.replace(model="cnn", epochs=3)
    plain = trainer.train_run(cfg, 0)
    fresh = trainer.train_run(cfg.replace(fresh_bn=True), 0)
    assert fresh["train_loss"] == plain["train_loss"]
    assert fresh["test_error"] != plain["test_error"] or fresh["test_loss"] != plain["test_loss"]
