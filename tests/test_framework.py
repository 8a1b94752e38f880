"""Project II unit tests: every hand-written backward against autodiff and finite differences."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from jaxdl.framework import layers as L
from jaxdl.framework import report
from jaxdl.framework import train as jtrain
from jaxdl.framework.cli import default_out_dir, parse_config
from jaxdl.framework.losses import mse_loss, mse_loss_backward
from jaxdl.framework.optim import cosine_lr, sgd
from torch_reference import framework as tfw
from torch_reference import framework_train as ttrain

EXACT = 1e-12  # float64: hand-written backward vs autodiff, relative to the largest entry

# float64 in JAX is switched on with `jax.enable_x64(True)` inside each test that needs it: a
# context manager, so it never leaks into other tests of the same process.


def _max_rel(a: Any, b: Any) -> float:
    """max |a - b| / max(1, max |b|) over all leaves of two pytrees of the same structure."""
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape
        worst = max(worst, float(np.abs(x - y).max(initial=0.0)) / max(1.0, np.abs(y).max()))
    return worst


# --- jaxdl.framework layers ------------------------------------------------------------------

LAYERS: dict[str, Callable[[int], L.Layer]] = {
    "linear": L.linear,
    "relu": lambda d: L.relu(),
    "tanh": lambda d: L.tanh(),
    "sigmoid": lambda d: L.sigmoid(),
    "sequential": lambda d: L.sequential(L.linear(4), L.relu(), L.linear(d), L.tanh()),
}

# (batch, in, out) from small sets: every new shape costs JAX a compilation of each eager op, so
# a few sizes (including the degenerate 1) keep the suite fast while the values vary freely.
shapes = st.tuples(st.sampled_from([1, 3]), st.sampled_from([1, 2, 5]), st.sampled_from([1, 4]))
values = st.floats(-3.0, 3.0, allow_nan=False, width=64)


@st.composite
def layer_cases(draw: st.DrawFn) -> tuple[str, np.ndarray, np.ndarray, int]:
    name = draw(st.sampled_from(sorted(LAYERS)))
    batch, d_in, d_out = draw(shapes)
    if name not in ("linear", "sequential"):
        d_out = d_in
    x = draw(hnp.arrays(np.float64, (batch, d_in), elements=values))
    dy = draw(hnp.arrays(np.float64, (batch, d_out), elements=values))
    return name, x, dy, draw(st.integers(0, 2**16))


def _random_params(layer: L.Layer, d_in: int, seed: int) -> Any:
    """float64 params of the layer's shapes, standard normal: wider than any initialisation.

    jax.eval_shape traces init without compiling it (eager JAX compiles every op per shape).
    """
    _, shapes = jax.eval_shape(lambda: layer.init(jax.random.key(0), d_in))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape)), shapes)


@functools.cache
def _checked_layer(name: str, d_out: int) -> tuple[L.Layer, Callable[..., Any]]:
    """The layer and one jitted function giving its forward, backward and jax.vjp reference.

    Cached so each (layer, shape) compiles once: far cheaper than JAX's op-by-op compilation.
    """
    layer = LAYERS[name](d_out)

    @jax.jit
    def check(params: Any, x: jax.Array, dy: jax.Array) -> tuple[Any, ...]:
        y, cache = layer.forward(params, x)
        dx, grads = layer.backward(params, cache, dy)
        _, vjp = jax.vjp(lambda p, v: layer.forward(p, v)[0], params, x)
        ref_grads, ref_dx = vjp(dy)
        return y, dx, grads, ref_dx, ref_grads

    return layer, check


@settings(max_examples=40, deadline=None)
@given(layer_cases())
def test_jax_layer_backward_equals_vjp_of_forward(case: tuple) -> None:
    with jax.enable_x64(True):
        name, x, dy, seed = case
        layer, check = _checked_layer(name, dy.shape[1])
        params = _random_params(layer, x.shape[1], seed)
        y, dx, grads, ref_dx, ref_grads = check(params, jnp.asarray(x), jnp.asarray(dy))
        assert y.dtype == jnp.float64 and y.shape == dy.shape
        assert jax.tree.structure(grads) == jax.tree.structure(params)
        assert _max_rel(dx, ref_dx) <= EXACT
        assert _max_rel(grads, ref_grads) <= EXACT


def _finite_difference(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float) -> np.ndarray:
    """Central differences of a scalar function, one coordinate at a time."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


@settings(max_examples=10, deadline=None)
@given(layer_cases())
def test_jax_layer_backward_passes_finite_differences(case: tuple) -> None:
    with jax.enable_x64(True):
        name, x, dy, seed = case
        # Keep clear of relu's kink, where a central difference straddles two slopes.
        x = np.where(np.abs(x) < 1e-3, 0.5, x)
        layer, check = _checked_layer(name, dy.shape[1])
        params = _random_params(layer, x.shape[1], seed)
        _, dx, grads, _, _ = check(params, jnp.asarray(x), jnp.asarray(dy))
        flat, unflatten = ravel_pytree(params)

        # <forward(x), dy> is the scalar whose gradient backward computes; jitted once, as the
        # differences call it twice per coordinate.
        @jax.jit
        def inner(p: jax.Array, v: jax.Array) -> jax.Array:
            return jnp.sum(layer.forward(unflatten(p), v)[0] * dy)

        fd_x = _finite_difference(lambda v: float(inner(flat, v)), x, 1e-6)
        assert np.allclose(dx, fd_x, rtol=1e-6, atol=1e-6)
        if flat.size:
            fd_p = _finite_difference(lambda p: float(inner(p, x)), np.asarray(flat), 1e-6)
            assert np.allclose(ravel_pytree(grads)[0], fd_p, rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from([1, 4]).flatmap(
        lambda n: st.tuples(
            hnp.arrays(np.float64, (n, 2), elements=values),
            hnp.arrays(np.float64, (n, 2), elements=values),
        )
    )
)
def test_mse_loss_matches_torch_and_its_vjp(pair: tuple) -> None:
    with jax.enable_x64(True):
        pred, target = pair
        loss, cache = mse_loss(jnp.asarray(pred), jnp.asarray(target))
        ref = F.mse_loss(torch.as_tensor(pred), torch.as_tensor(target))
        assert abs(float(loss) - float(ref)) <= EXACT * max(1.0, float(ref))
        _, vjp = jax.vjp(lambda p: mse_loss(p, jnp.asarray(target))[0], jnp.asarray(pred))
        assert _max_rel(mse_loss_backward(cache), vjp(jnp.ones((), jnp.float64))[0]) <= EXACT


def test_mse_loss_refuses_broadcasting() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        mse_loss(jnp.zeros((4, 1)), jnp.zeros(4))
    with pytest.raises(ValueError, match="differ"):
        tfw.LossMSE().forward(torch.zeros(4, 1), torch.zeros(4))


def test_relu_derivative_at_zero_is_zero_in_both() -> None:
    layer = L.relu()
    x = jnp.array([[-1.0, 0.0, 2.0]])
    dx, _ = layer.backward((), layer.forward((), x)[1], jnp.ones_like(x))
    module = tfw.ReLU()
    module.forward(torch.tensor([[-1.0, 0.0, 2.0]]))
    assert np.array_equal(dx, [[0.0, 0.0, 1.0]])
    assert module.backward(torch.ones(1, 3)).tolist() == [[0.0, 0.0, 1.0]]


def test_linear_init_matches_torch_default_bounds() -> None:
    _, params = L.linear(300).init(jax.random.key(0), 25)
    assert params.w.shape == (25, 300) and params.b.shape == (300,)
    bound = 1 / math.sqrt(25)
    for a in (params.w, params.b):
        assert float(jnp.abs(a).max()) <= bound and float(jnp.abs(a).max()) > 0.9 * bound
    module = tfw.Linear(25, 300, generator=torch.Generator().manual_seed(0))
    assert module.weight.shape == (300, 25)
    assert float(module.weight.abs().max()) <= bound


def test_sequential_threads_shapes_and_params() -> None:
    net = jtrain.disk_network(1)
    out_dim, params = net.init(jax.random.key(0), 2)
    assert out_dim == 1 and len(params) == 8 and params[1] == () and params[7] == ()
    n_params = sum(a.size for a in jax.tree.leaves(params))
    assert n_params == (2 * 25 + 25) + 2 * (25 * 25 + 25) + (25 + 1)
    assert len(ttrain.disk_network(1).param()) == 8  # 4 Linear x (weight, bias)
    y, _ = net.forward(params, jnp.zeros((3, 2)))
    assert y.shape == (3, 1)


# --- jaxdl.framework optimizer -----------------------------------------------------------------


def test_sgd_plain_and_momentum_steps() -> None:
    params = {"a": jnp.array([1.0, 2.0])}
    grads = {"a": jnp.array([0.5, -1.0])}
    opt = sgd(0.1)
    new, state = opt.update(grads, opt.init(params), params)
    assert np.allclose(new["a"], [0.95, 2.1]) and int(state.step) == 1

    opt = sgd(0.1, momentum=0.9)
    state = opt.init(params)
    p1, state = opt.update(grads, state, params)
    p2, state = opt.update(grads, state, p1)
    # v1 = g, v2 = 0.9 g + g = 1.9 g: the second step moves 1.9x as far.
    assert np.allclose(p2["a"] - p1["a"], 1.9 * (p1["a"] - params["a"]))
    with pytest.raises(ValueError):
        sgd(0.1, momentum=1.0)


def test_sgd_matches_torch_optim_sgd_with_momentum() -> None:
    rng = np.random.default_rng(0)
    p0, gs = rng.normal(size=(3, 4)), rng.normal(size=(5, 3, 4))
    opt = sgd(0.05, momentum=0.9)
    params, state = jnp.asarray(p0, jnp.float32), None
    state = opt.init(params)
    ref = torch.tensor(p0, dtype=torch.float32, requires_grad=True)
    ref_opt = torch.optim.SGD([ref], lr=0.05, momentum=0.9)
    ours = torch.tensor(p0, dtype=torch.float32)
    our_grad = torch.empty(3, 4).zero_()
    our_opt = tfw.SGD([(ours, our_grad)], lr=0.05, momentum=0.9)
    for g in gs:
        params, state = opt.update(jnp.asarray(g, jnp.float32), state, params)
        ref.grad = torch.tensor(g, dtype=torch.float32)
        ref_opt.step()
        our_grad.copy_(torch.tensor(g))
        our_opt.step()
    assert np.allclose(params, ref.detach().numpy(), atol=1e-6)
    assert np.allclose(ours.numpy(), ref.detach().numpy(), atol=1e-6)


def test_cosine_schedules_agree_and_reach_zero() -> None:
    jax_sched, torch_sched = cosine_lr(0.1, 100), tfw.cosine_lr(0.1, 100)
    for step in (0, 25, 50, 99, 100, 150):
        assert abs(float(jax_sched(jnp.asarray(step))) - torch_sched(step)) < 1e-7
    assert torch_sched(0) == pytest.approx(0.1) and torch_sched(100) == pytest.approx(0.0)


# --- jaxdl.framework training ------------------------------------------------------------------


def _stacked(seeds: list[int], output: int) -> jtrain.DiskData:
    return jtrain.DiskData(
        *(np.stack(a) for a in zip(*(jtrain.disk_data(s, output) for s in seeds), strict=True))
    )


def test_vmapped_runs_learn_and_equal_single_runs_and_call_back_each_epoch() -> None:
    calls: list[int] = []
    epochs, batch_size = 8, 10
    kwargs = dict(
        layer=jtrain.disk_network(1),
        optimizer=sgd(jtrain.make_schedule(0.03, "cosine", epochs * 1000 // batch_size)),
        epochs=epochs,
        batch_size=batch_size,
    )
    keys = jax.vmap(jax.random.key)(jnp.arange(2))
    on_epoch = lambda e, m: calls.append(int(e))  # noqa: E731
    params, history = jax.jit(functools.partial(jtrain.train_runs, on_epoch=on_epoch, **kwargs))(
        keys, _stacked([0, 1], 1)
    )
    jax.effects_barrier()
    assert calls == list(range(epochs))
    assert history.test_error.shape == (2, epochs)
    assert np.all(np.isfinite(history.train_loss))
    assert np.all(history.test_error[:, -1] < 0.1)  # it learns the disk
    assert np.all(history.train_loss[:, -1] < history.train_loss[:, 0])

    one_params, one = jax.jit(functools.partial(jtrain.train_run, **kwargs))(
        keys[1], jtrain.disk_data(1, 1)
    )
    assert np.allclose(one.train_loss, history.train_loss[1], rtol=1e-5)
    assert _max_rel(one_params, jax.tree.map(lambda a: a[1], params)) <= 1e-5


def test_targets_and_predictions() -> None:
    labels = np.array([0, 1, 1])
    assert np.array_equal(jtrain.encode_targets(labels, 2), [[1, 0], [0, 1], [0, 1]])
    assert np.array_equal(jtrain.encode_targets(labels, 1), [[-1], [1], [1]])
    t = torch.tensor([0, 1, 1])
    assert ttrain.encode_targets(t, 2).tolist() == [[1, 0], [0, 1], [0, 1]]
    assert ttrain.encode_targets(t, 1).tolist() == [[-1], [1], [1]]
    assert jtrain.predict_labels(jnp.array([[0.2, 0.7], [0.9, 0.1]])).tolist() == [1, 0]
    assert jtrain.predict_labels(jnp.array([[-0.3], [0.4]])).tolist() == [0, 1]
    data = jtrain.disk_data(0, 1)
    assert np.allclose(data.train_x.mean(0), 0, atol=1e-6)
    assert np.allclose(data.train_x.std(0), 1, atol=1e-5)
    raw = jtrain.disk_data(0, 1, inputs="raw")
    assert raw.train_x.min() >= 0 and raw.train_x.max() <= 1
    t_data = ttrain.disk_data(0, 1)
    assert torch.allclose(t_data.train_x.mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(t_data.train_x.std(0, unbiased=False), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError):
        ttrain.disk_data(0, 1, inputs="minmax")


# --- torch_reference.framework ----------------------------------------------------------------


def _torch_case(name: str, d_in: int, d_out: int) -> tuple[tfw.Module, Callable[..., torch.Tensor]]:
    """A module and a reference built from torch's own functions, given leaf tensors."""
    g = torch.Generator().manual_seed(d_in * 7 + d_out)
    if name == "linear":
        m = tfw.Linear(d_in, d_out, generator=g, dtype=torch.float64)
        return m, lambda x, w, b: F.linear(x, w, b)
    if name == "relu":
        return tfw.ReLU(), lambda x: torch.relu(x)
    if name == "tanh":
        return tfw.Tanh(), lambda x: torch.tanh(x)
    if name == "sigmoid":
        return tfw.Sigmoid(), lambda x: torch.sigmoid(x)
    a = tfw.Linear(d_in, 4, generator=g, dtype=torch.float64)
    b = tfw.Linear(4, d_out, generator=g, dtype=torch.float64)
    m = tfw.Sequential(a, tfw.ReLU(), b, tfw.Tanh())
    return m, lambda x, w1, b1, w2, b2: torch.tanh(
        F.linear(torch.relu(F.linear(x, w1, b1)), w2, b2)
    )


@settings(max_examples=60, deadline=None)
@given(layer_cases())
def test_torch_module_backward_equals_autograd(case: tuple) -> None:
    name, x, dy, _ = case
    module, reference = _torch_case(name, x.shape[1], dy.shape[1])
    x_t, dy_t = torch.as_tensor(x), torch.as_tensor(dy)

    with torch.no_grad():  # the framework itself never needs autograd
        module.zero_grad()
        y = module.forward(x_t)
        dx = module.backward(dy_t)

    leaves = [x_t.clone().requires_grad_(True)]
    leaves += [p.clone().requires_grad_(True) for p, _ in module.param()]
    with torch.enable_grad():
        ref_y = reference(*leaves)
        ref_grads = torch.autograd.grad(ref_y, leaves, dy_t, allow_unused=True)

    assert _max_rel(y, ref_y.detach()) <= EXACT
    assert _max_rel(dx, ref_grads[0]) <= EXACT
    for (_, grad), ref in zip(module.param(), ref_grads[1:], strict=True):
        assert _max_rel(grad, ref) <= EXACT


def test_torch_linear_accumulates_until_zero_grad() -> None:
    m = tfw.Linear(3, 2, dtype=torch.float64)
    x, dy = torch.ones(4, 3, dtype=torch.float64), torch.ones(4, 2, dtype=torch.float64)
    m.forward(x)
    m.backward(dy)
    once = m.grad_weight.clone()
    m.forward(x)
    m.backward(dy)
    assert torch.equal(m.grad_weight, 2 * once)
    m.zero_grad()
    assert not m.grad_weight.any() and not m.grad_bias.any()


def test_torch_loss_backward_matches_autograd() -> None:
    pred = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.zeros(5, 2, dtype=torch.float64)
    loss = tfw.LossMSE()
    value = loss.forward(pred, target)
    leaf = pred.clone().requires_grad_(True)
    with torch.enable_grad():
        (ref,) = torch.autograd.grad(F.mse_loss(leaf, target), leaf)
    assert abs(float(value) - float(F.mse_loss(pred, target))) < 1e-15
    assert _max_rel(loss.backward(), ref) <= EXACT


def test_params_round_trip_between_frameworks() -> None:
    _, params = jtrain.disk_network(2).init(jax.random.key(3), 2)
    model = ttrain.disk_network(2)
    tfw.load_params(model, jax.tree.map(np.array, params))
    back = jax.tree.leaves(tfw.export_params(model))
    assert len(back) == len(jax.tree.leaves(params)) == 8
    for ours, theirs in zip(back, jax.tree.leaves(params), strict=True):
        assert np.array_equal(ours.numpy(), np.asarray(theirs))  # bit-exact both ways
    assert torch.equal(model.modules[0].weight, torch.as_tensor(np.array(params[0].w)).T)
    with pytest.raises(ValueError):
        tfw.load_params(model, params[:3])


def test_torch_training_leaves_autograd_as_it_was() -> None:
    assert torch.is_grad_enabled()
    _, history = ttrain.train_run(0, output=1, epochs=2, batch_size=100, lr=0.05)
    assert torch.is_grad_enabled()  # the trainer switched it off only inside its own scope
    assert len(history.test_error) == 2 and all(0 <= e <= 1 for e in history.test_error)


# --- the two scripts -----------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = ["framework_torch.py", "framework_flax.py"]


def _run_script(script: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def _strict_json(path: Path) -> Any:
    def no_nan(name: str) -> None:
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=no_nan)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_end_to_end_writes_json_and_png(script: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    flags = [
        "--epochs",
        "2",
        "--runs",
        "2",
        "--batch-size",
        "100",
        "--seed",
        "5",
        "--out",
        str(out),
    ]
    proc = _run_script(script, *flags, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| mean |" in proc.stdout and "| std |" in proc.stdout

    results = _strict_json(out / "results.json")
    assert set(results) == {"config", "runs", "summary"}
    config = results["config"]
    assert config["epochs"] == 2 and config["batch_size"] == 100 and config["output"] == 1
    assert {"device", "versions", "lr", "schedule", "momentum", "seed", "runs"} <= set(config)
    assert config["out"] == str(out) and config["inputs"] == "standardised"
    assert [r["seed"] for r in results["runs"]] == [5, 6]
    for run in results["runs"]:
        for key in ("train_error", "test_error", "train_loss"):
            assert len(run[key]) == 2
        assert all(0 <= e <= 1 for e in run["train_error"] + run["test_error"])
        assert run["seconds"] > 0
    summary = results["summary"]
    for stat in ("mean", "min", "max", "std"):
        assert 0 <= summary[f"final_test_error_{stat}"] <= 1
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_bad_flag_exits_2_with_one_line(script: str, tmp_path: Path) -> None:
    proc = _run_script(script, "--batch-size", "0", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--batch-size" in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "flags",
    [
        ["--output", "3"],
        ["--epochs", "0"],
        ["--runs", "-1"],
        ["--batch-size", "1001"],
        ["--lr", "nan"],
        ["--lr", "0"],
        ["--momentum", "1"],
        ["--schedule", "step"],
        ["--seed", "-1"],
        ["--inputs", "minmax"],
        ["--epochs", "two"],
        ["--unknown"],
    ],
)
def test_cli_rejects_bad_flags(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(flags, "framework_test", "test")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("framework_test: error:") and err.count("\n") == 1


def test_cli_defaults_and_out_dir() -> None:
    config, out = parse_config([], "framework_test", "test")
    assert (config.epochs, config.runs, config.batch_size, config.output) == (50, 10, 1, 1)
    assert out is None
    assert default_out_dir("flax").parts[0] == "runs"
    assert default_out_dir("torch").name.endswith("-framework-torch")


def test_diverged_run_keeps_nan_out_of_json_and_summary(tmp_path: Path) -> None:
    nan = float("nan")
    good = jtrain.History([0.5, 0.1], [0.2, 0.05], [0.25, 0.06], [0.5, 0.1])
    bad = jtrain.History([0.5, nan], [0.2, 0.5], [0.25, 0.5], [0.5, nan])
    runs = [report.run_record(0, good, 1.0), report.run_record(1, bad, 1.0)]
    assert not runs[0]["diverged"] and runs[1]["diverged"] and runs[1]["diverged_epoch"] == 2
    results = report.write_results(tmp_path, {"epochs": 2}, runs, "test")
    summary = results["summary"]
    assert summary["diverged_runs"] == 1 and summary["final_test_error_mean"] == 0.06
    assert all(v is None or math.isfinite(v) for v in summary.values())
    on_disk = _strict_json(tmp_path / "results.json")
    assert on_disk["runs"][1]["train_loss"] == [0.5, None]
    assert "1 diverged" in report.table(summary)

    all_bad = report.summarise([runs[1]])
    assert all_bad["final_test_error_mean"] is None and all_bad["final_test_error_max"] is None
