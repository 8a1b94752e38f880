"""jaxdl.data and torch_reference.data build bit-identical pair sets from the same permutation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import torch_reference.data as tdata
from jaxdl import data, mnist

SHARED_MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def _sources() -> list:
    sources = [pytest.param(("bundled", None), id="bundled")]
    reason = f"full MNIST not present at {SHARED_MNIST}"
    present = (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file()
    mark = pytest.mark.skipif(not present, reason=reason)
    sources.append(pytest.param(("idx", SHARED_MNIST), id="idx", marks=mark))
    return sources


@pytest.mark.parametrize("source", _sources())
@pytest.mark.parametrize("seed", [0, 7])
def test_pairs_bit_identical_for_the_same_permutation(source, seed: int) -> None:
    pools = mnist.load_digits(*source)
    nb = 1000
    for images, labels in (
        (pools.train_images, pools.train_labels),
        (pools.test_images, pools.test_labels),
    ):
        perm = np.random.default_rng(seed).permutation(len(labels))
        ours = data.mnist_to_pairs(nb, images, labels, perm)
        theirs = tdata.mnist_to_pairs(
            nb, torch.tensor(images), torch.tensor(labels), torch.from_numpy(perm)
        )
        for a, b in zip(ours, theirs, strict=True):
            assert a.dtype == b.numpy().dtype
            assert a.tobytes() == b.numpy().tobytes()


def test_torch_permutation_fed_to_jaxdl_is_bit_identical() -> None:
    # The other direction: torch's own randperm, as `torch_reference.generate_pair_sets` uses it.
    pools = mnist.load_digits("bundled")
    _, test_perm = tdata.pair_permutations(3, 2500, 2500)
    ours = data.mnist_to_pairs(300, pools.test_images, pools.test_labels, test_perm.numpy())
    theirs = tdata.mnist_to_pairs(
        300, torch.tensor(pools.test_images), torch.tensor(pools.test_labels), test_perm
    )
    for a, b in zip(ours, theirs, strict=True):
        assert a.tobytes() == b.numpy().tobytes()


@pytest.mark.parametrize("seed", [0, 1])
def test_disk_labels_agree_on_the_same_points(seed: int) -> None:
    points, labels = data.generate_disk_set(5000, seed=seed)
    np.testing.assert_array_equal(tdata.disk_labels(torch.from_numpy(points)).numpy(), labels)
