"""scripts/arch_gap.py (the research harness behind RESULTS.md's architecture section) still
builds its variants and renders the table of the committed results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import arch_gap  # noqa: E402  (scripts/ is not a package)


@pytest.mark.parametrize(
    "name",
    [
        *("mlp_h512", "mlp_d06", "mlp_h512x3", "cnn_k5c64", "cnn_k5c96h0"),
        *("sia_c64bn10", "sia_c96bn10", "sia_bn10_drophead"),
    ],
)
def test_variant_gives_one_logit_per_pair(name: str) -> None:
    model = arch_gap.VARIANTS[name](dropout=0.4, batchnorm=True)  # as jaxdl.train.build calls it
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 2, 14, 14), maxval=255.0)
    variables = model.init({"params": jax.random.PRNGKey(1)}, x, train=False)
    (logit, aux), _ = model.apply(
        variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)}, mutable=["batch_stats"]
    )
    assert logit.shape == (4,) and aux is None
    assert bool(jnp.all(jnp.isfinite(logit)))


def test_table_lists_every_committed_result() -> None:
    files = sorted(arch_gap.OUT.glob("*.jsonl"))
    if not files:
        pytest.skip("no results in docs/results/arch_gap")
    text = arch_gap.table()
    assert "| **report cnn** |" in text and "| **report sia** |" in text
    assert "| **report mlp** |" in text
    for path in files:
        name = path.stem.rsplit("_", 2)[0]
        assert f"| {name} |" in text, name
    assert "nan" not in text


def test_search_trains_like_train_run(tmp_path, mnist_dir, monkeypatch) -> None:
    """The search's vmapped, scanned epochs draw each seed's data, init and order as
    train.train_run does: the same errors up to float rounding (a few pairs of 1,000)."""
    from jaxdl import models, train

    # The harness registers its variants in jaxdl.models.MODELS: on a copy, for this test only.
    monkeypatch.setattr(models, "MODELS", dict(models.MODELS))

    arch_gap.search(tmp_path, runs=2, first=3, budget_s=60, only=["mlp_base"], epochs=2)
    rows = [json.loads(line) for line in (tmp_path / "mlp_base_221_bs50.jsonl").open()]
    assert [r["seed"] for r in rows] == [3, 4]
    cfg = arch_gap.recipe_config("mlp_base", "221", 50).replace(epochs=2)
    for row in rows:
        ref = train.train_run(cfg, row["seed"])
        np.testing.assert_allclose(row["test"], ref["test_error"], atol=0.006)
        np.testing.assert_allclose(row["train"], ref["train_error"], atol=0.006)


def test_bn_stats_columns_are_train_runs(mnist_dir) -> None:
    from jaxdl import train
    from jaxdl.config import TrainConfig

    config = TrainConfig(model="cnn", epochs=3, nb=200, repair=True)
    errors = arch_gap.bn_stats(config, runs=1, first=4)
    for name, fresh_bn in (("running", False), ("fresh", True)):
        reference = train.train_run(config.replace(seed=4, fresh_bn=fresh_bn), 0)
        np.testing.assert_allclose(errors[name][0], np.array(reference["test_error"]) * 100)
    assert not np.array_equal(errors["running"], errors["fresh"])
    assert "| running |" in arch_gap.bn_stats_table(errors)
