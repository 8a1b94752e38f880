"""The Project I models in both packages: registry, shapes, pinned parameter counts, sharing."""

from __future__ import annotations

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference.models as tmodels
import torch_reference.train as ttrain
from jaxdl import config, models, train

# Pinned: a change here is a change of architecture, in both packages at once.
PARAM_COUNTS = {
    "mlp": 59_009,
    "cnn": 77_297,
    "siamese": 79_455,
    "cnn_aux": 79_317,
    "siamese_aux": 79_455,
    "siamese_exact": 77_918,  # siamese_aux's branch, no head
}
# The architecture options (width, head_input): (model, hparams, parameter count).
VARIANTS = [
    ("cnn", {"width": 64}, 191_057),  # scripts/arch_gap.py's cnn_c64
    ("cnn_aux", {"width": 16}, 36_261),
    ("siamese", {"width": 16, "head_input": "bnrelu"}, 36_563),  # + branch_bn's 20
    ("siamese_aux", {"head_input": "logits"}, 79_455),  # the input changes, not the layers
    ("siamese_aux", {"head_input": "bnrelu"}, 79_475),
    ("siamese_exact", {"width": 16}, 35_006),
    ("cnn", {"width": 64, "kernel_size": 5}, 324_177),  # scripts/arch_gap.py's cnn_k5c64
    ("siamese_exact", {"width": 16, "kernel_size": 5}, 43_454),
    # The `arch` section's Legacy CNN: 96/192 channels, 5x5, no hidden Dense (arch_gap's
    # cnn_k5c96h0): conv 4,896 + 460,992, BN 192 + 384, fc_out 1,729.
    ("cnn", {"width": 96, "kernel_size": 5, "hidden": 0}, 468_193),
    ("siamese_aux", {"width": 16, "hidden": 0}, 9_323),
    # The `arch` section's MLP (--mlp-hidden 1024 512): 392*1024 + 1024*512 + 512 + biases + BN.
    ("mlp", {"hidden": (1024, 512)}, 930_817),  # fc_out 288 -> 10
]
CASES = [(name, {}, count) for name, count in PARAM_COUNTS.items()] + VARIANTS
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw, _ in CASES]
BATCH = 3


def flax_variables_shape(name: str, **hparams) -> dict:
    model = models.create_model(name, **hparams)
    # eval_shape: shapes without running (or compiling) the initialisers.
    return jax.eval_shape(
        lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.zeros((1, 2, 14, 14)))
    )


def test_registries_agree():
    assert tuple(models.MODELS) == tuple(tmodels.MODELS) == config.MODEL_NAMES
    assert (models.MNIST_MEAN, models.MNIST_STD) == (tmodels.MNIST_MEAN, tmodels.MNIST_STD)
    for name in config.MODEL_NAMES:
        expected = name.endswith("_aux") or name == "siamese_exact"
        assert models.has_aux(name) == tmodels.has_aux(name) == expected


@pytest.mark.parametrize(("name", "hparams", "count"), CASES, ids=CASE_IDS)
def test_flax_param_count_and_shapes(name, hparams, count):
    variables = flax_variables_shape(name, **hparams)
    assert models.param_count(variables["params"]) == count
    model = models.create_model(name, **hparams)
    x = jax.ShapeDtypeStruct((BATCH, 2, 14, 14), jnp.float32)
    (logit, aux), updates = jax.eval_shape(
        lambda v, x: model.apply(
            v, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"]
        ),
        variables,
        x,
    )
    assert logit.shape == (BATCH,)
    assert jax.tree_util.tree_structure(updates["batch_stats"]) == jax.tree_util.tree_structure(
        variables["batch_stats"]
    )
    logit_eval, aux_eval = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert logit_eval.shape == (BATCH,)
    if models.has_aux(name):
        assert aux.shape == aux_eval.shape == (BATCH, 2, 10)
    else:
        assert aux is None and aux_eval is None


@pytest.mark.parametrize(("name", "hparams", "count"), CASES, ids=CASE_IDS)
def test_torch_param_count_and_shapes(name, hparams, count):
    torch.manual_seed(0)
    model = tmodels.create_model(name, **hparams)
    assert tmodels.param_count(model) == count
    x = torch.rand(BATCH, 2, 14, 14) * 255
    for mode in (True, False):
        model.train(mode)
        logit, aux = model(x)
        assert logit.shape == (BATCH,)
        if tmodels.has_aux(name):
            assert aux.shape == (BATCH, 2, 10)
        else:
            assert aux is None


@pytest.mark.parametrize(("name", "hparams", "count"), CASES, ids=CASE_IDS)
def test_layer_names_mirror(name, hparams, count):
    """Every torch parameter has a Flax counterpart of the same path (weight/kernel, etc.)."""
    flax_params = flax_variables_shape(name, **hparams)["params"]
    flax_paths = {
        "/".join(str(k.key) for k in path)
        for path, _ in jax.tree_util.tree_flatten_with_path(flax_params)[0]
    }
    renames = {"weight": "kernel"}
    torch_paths = set()
    for key, p in tmodels.create_model(name, **hparams).named_parameters():
        *mods, leaf = key.split(".")
        is_bn = p.ndim == 1 and "bn" in mods[-1]
        leaf = "scale" if (is_bn and leaf == "weight") else renames.get(leaf, leaf)
        torch_paths.add("/".join([*mods, leaf]))
    assert flax_paths == torch_paths


def test_siamese_branch_is_one_parameter_set():
    flax_params = flax_variables_shape("siamese_aux")["params"]
    assert set(flax_params) == {"branch", "head_fc1", "head_bn", "head_fc2"}
    torch_model = tmodels.create_model("siamese_aux")
    branch = sum(p.numel() for p in torch_model.branch.parameters())
    assert branch == models.param_count(flax_params["branch"])
    # The head is tiny: almost every parameter is in the one shared branch.
    assert branch > 0.95 * PARAM_COUNTS["siamese_aux"]


def test_siamese_applies_the_same_branch_to_both_digits():
    """Swapping the two digits swaps the digit logits exactly: one function, used twice."""
    x = np.random.default_rng(0).uniform(0, 255, (4, 2, 14, 14)).astype(np.float32)
    swapped = x[:, ::-1].copy()

    torch.manual_seed(0)
    tm = tmodels.create_model("siamese_aux").eval()
    with torch.no_grad():
        _, a = tm(torch.from_numpy(x))
        _, b = tm(torch.from_numpy(swapped))
    np.testing.assert_allclose(b.numpy(), a.numpy()[:, ::-1], rtol=0, atol=1e-6)

    # The model object and compiled initialiser of the training code, shared with test_train.
    fm, _ = train.build(config.TrainConfig(model="siamese_aux"))
    variables = train._init_variables(fm, jax.random.PRNGKey(0))
    apply = jax.jit(lambda x: fm.apply(variables, x, train=False)[1])
    np.testing.assert_allclose(apply(swapped), np.asarray(apply(x))[:, ::-1], rtol=0, atol=1e-6)


def test_mlp_has_no_width_and_only_siamese_heads_have_head_input():
    for create in (models.create_model, tmodels.create_model):
        with pytest.raises(TypeError):
            create("mlp", width=64)
        with pytest.raises(TypeError):
            create("siamese_exact", head_input="bnrelu")
    with pytest.raises(ValueError, match="unknown head_input 'sigmoid'; choose from softmax"):
        tmodels.create_model("siamese", head_input="sigmoid")
    x = jnp.zeros((1, 2, 14, 14))
    with pytest.raises(ValueError, match="unknown head_input 'sigmoid'; choose from softmax"):
        models.create_model("siamese", head_input="sigmoid").init(jax.random.PRNGKey(0), x)


def test_default_options_build_the_default_models():
    assert config.TrainConfig().model_hparams() == {}
    assert config.TrainConfig(width=64, depth=2).model_hparams() == {"depth": 2, "width": 64}
    assert config.TrainConfig(kernel_size=5).model_hparams() == {"kernel_size": 5}
    assert config.TrainConfig(hidden=0).model_hparams() == {"hidden": 0}
    # The MLP's layer sizes reach its constructor's `hidden`.
    mlp = config.TrainConfig(model="mlp", mlp_hidden=(16, 8))
    assert mlp.model_hparams() == {"hidden": (16, 8)}
    assert train.build(mlp)[0] == models.create_model("mlp", hidden=(16, 8))
    assert ttrain.create_model(mlp).hidden == (16, 8)
    # Every option reaches the model that training builds (train.build and torch's build).
    options = {"width": 16, "kernel_size": 5, "hidden": 0, "head_input": "bnrelu"}
    built = train.build(config.TrainConfig(model="siamese", **options))[0]
    assert built == models.create_model("siamese", **options)
    torch_built = ttrain.create_model(config.TrainConfig(model="siamese", **options))
    assert torch_built.branch.features.conv2.kernel_size == (5, 5)
    assert torch_built.branch.features.conv2.out_channels == 32
    assert torch_built.branch.fc_out.in_features == 32 * 3 * 3  # hidden=0: the flattened map
    assert models.CNN.hidden == config.TrainConfig.hidden == 100
    assert models.CNN.kernel_size == tmodels_default_kernel() == config.TrainConfig.kernel_size
    assert config.HEAD_INPUTS[0] == models.Siamese.head_input == "softmax"
    assert models.CNN.width == config.TrainConfig.width == 32
    default = train.build(config.TrainConfig(model="siamese"))[0]
    assert default == models.create_model("siamese")


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        models.create_model("resnet")
    with pytest.raises(ValueError, match="unknown model"):
        tmodels.create_model("resnet")


# conv_same: XLA's convolution forward, im2col matmuls for the gradient on the CPU (issue 6),
# for every odd kernel size.
@pytest.mark.parametrize(("cin", "k"), [(1, 3), (2, 3), (32, 3), (2, 5), (8, 7)])
def test_conv_same_value_and_gradients_equal_xla_convolution(cin, k):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(cin), 3)
    x = jax.random.normal(kx, (5, 7, 7, cin))
    w = jax.random.normal(kw, (k, k, cin, 6))
    g = jax.random.normal(kg, (5, 7, 7, 6))

    def vjp(conv):
        y, pullback = jax.vjp(conv, x, w)
        return (y, *pullback(g))

    # conv_same is the im2col VJP on the CPU for 3x3 kernels; other sizes are tested directly.
    conv = models.conv_same if k == 3 else models._conv_im2col
    ours = jax.jit(lambda: vjp(conv))()
    xla = jax.jit(lambda: vjp(models._conv_same_xla))()
    # Outside differentiation: bit for bit XLA's convolution (evaluation is unchanged).
    forward = jax.jit(models.conv_same)(x, w)
    np.testing.assert_array_equal(forward, jax.jit(models._conv_same_xla)(x, w))
    for a, b, what in zip(ours, xla, ["y", "dx", "dkernel"], strict=True):
        np.testing.assert_allclose(
            a, b, rtol=1e-5, atol=1e-4 * float(jnp.abs(b).max()), err_msg=what
        )


def test_conv_same_gradient_under_vmap_is_each_members_gradient():
    # Sweeps vmap the train step over runs: a batch of kernels, one per run.
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 7, 7, 2))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 2, 4))

    def loss(x, w):
        return jnp.sum(jnp.tanh(models.conv_same(x, w)))

    batched = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(x, w)
    for r in range(3):
        one = jax.grad(loss, argnums=(0, 1))(x[r], w[r])
        for a, b in zip(batched, one, strict=True):
            np.testing.assert_allclose(a[r], b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [3, 5])
def test_conv_module_is_nn_conv_with_the_same_parameters(k):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 14, 14, 3))
    ours = models.ConvSame(8, 3, kernel_size=k)
    flax_conv = flax.linen.Conv(
        8,
        (k, k),
        padding=((k // 2, k // 2), (k // 2, k // 2)),
        kernel_init=models._torch_kernel_init,
        bias_init=models._torch_bias_init(3 * k * k),
    )
    v_ours, v_flax = ours.init(jax.random.PRNGKey(5), x), flax_conv.init(jax.random.PRNGKey(5), x)
    jax.tree.map(np.testing.assert_array_equal, v_ours, v_flax)  # same names, shapes, draws
    np.testing.assert_array_equal(ours.apply(v_ours, x), flax_conv.apply(v_flax, x))


def test_even_kernel_sizes_are_refused_by_both_frameworks():
    x = jnp.zeros((1, 2, 14, 14))
    with pytest.raises(ValueError, match="kernel_size must be an odd positive integer, got 4"):
        models.create_model("cnn", kernel_size=4).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="kernel_size must be an odd positive integer, got 4"):
        tmodels.create_model("cnn", kernel_size=4)


def test_negative_hidden_is_refused_by_both_frameworks():
    x = jnp.zeros((1, 2, 14, 14))
    with pytest.raises(ValueError, match="hidden must be >= 0 \\(0: no Dense layer\\), got -1"):
        models.create_model("cnn", hidden=-1).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="hidden must be >= 0 \\(0: no Dense layer\\), got -1"):
        tmodels.create_model("cnn", hidden=-1)


def tmodels_default_kernel() -> int:
    return tmodels.ConvFeatures(1).conv1.kernel_size[0]
