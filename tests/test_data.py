"""The MNIST reader, the data sources, the course's pair semantics and the disk set."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import torch_reference.data as tdata
from jaxdl import data, mnist
from jaxdl.mnist import DataError


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None, gz: bool = True) -> Path:
    """Writes an unsigned-byte IDX file (the format the reader must accept)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist_folder(folder: Path, pools: mnist.DigitPools, n_train: int, n_test: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", pools.train_images[:n_train])
    write_idx(folder / "train-labels-idx1-ubyte", pools.train_labels[:n_train])
    write_idx(folder / "t10k-images-idx3-ubyte", pools.test_images[:n_test])
    write_idx(folder / "t10k-labels-idx1-ubyte", pools.test_labels[:n_test])
    return folder


@pytest.fixture(scope="module")
def bundled() -> mnist.DigitPools:
    return mnist.load_digits("bundled")


@pytest.fixture
def small_folder(tmp_path: Path, bundled: mnist.DigitPools) -> Path:
    """A valid IDX folder of 400 training and 300 test real digits."""
    return write_mnist_folder(tmp_path / "mnist", bundled, 400, 300)


# --- The IDX reader on the real files -------------------------------------------------------


def test_idx_reader_on_full_mnist(mnist_dir: Path) -> None:
    pools = mnist.load_digits("idx", mnist_dir)
    assert pools.source == "idx"
    assert pools.train_images.shape == (60000, 28, 28) and pools.train_images.dtype == np.uint8
    assert pools.test_images.shape == (10000, 28, 28)
    assert pools.train_labels.tolist()[:8] == [5, 0, 4, 1, 9, 2, 1, 3]
    assert pools.test_labels.tolist()[:8] == [7, 2, 1, 0, 4, 1, 4, 9]
    assert np.bincount(pools.train_labels).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert "60000 train / 10000 test" in pools.describe()


def test_raw_and_gzip_idx_read_the_same(mnist_dir: Path, tmp_path: Path) -> None:
    gz = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress(gz.read_bytes()))
    np.testing.assert_array_equal(mnist.read_idx(gz, 2049), mnist.read_idx(raw, 2049))


def test_auto_finds_the_shared_folder(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    source, location = mnist.resolve_source("auto")
    assert source == "idx" and Path(location).resolve() == mnist_dir.resolve()


def test_env_var_and_torchvision_layout(
    tmp_path: Path, bundled: mnist.DigitPools, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist_folder(tmp_path / "tv" / "MNIST" / "raw", bundled, 100, 100)
    monkeypatch.setenv(mnist.ENV_VAR, str(tmp_path / "tv"))
    source, location = mnist.resolve_source("auto")
    assert source == "idx" and location == str(tmp_path / "tv" / "MNIST" / "raw")
    pools = mnist.load_digits("idx")
    np.testing.assert_array_equal(pools.train_images, bundled.train_images[:100])


def test_auto_falls_back_to_bundled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(mnist.ENV_VAR, raising=False)
    monkeypatch.setattr(mnist, "default_search_dirs", lambda: [tmp_path / "nothing"])
    assert mnist.resolve_source("auto") == ("bundled", None)


# --- The bundled source ---------------------------------------------------------------------


def test_bundled_split_is_stratified_and_disjoint(bundled: mnist.DigitPools) -> None:
    assert bundled.train_images.shape == (2500, 28, 28)
    assert bundled.test_images.shape == (2500, 28, 28)
    train_counts = np.bincount(bundled.train_labels, minlength=10)
    test_counts = np.bincount(bundled.test_labels, minlength=10)
    assert np.all(np.abs(train_counts - test_counts) <= 1)  # stratified: halves of each class
    train_keys = {img.tobytes() for img in bundled.train_images}
    assert not any(img.tobytes() in train_keys for img in bundled.test_images)
    # Real digits: mean intensity of MNIST is about 33 on the 0..255 scale.
    assert 20 < bundled.train_images.mean() < 45
    # The split is fixed: loading again gives the same pools.
    again = mnist._load_bundled()
    np.testing.assert_array_equal(again.test_labels, bundled.test_labels)


# --- Pair semantics ---------------------------------------------------------------------------


def _index_of_pooled(pool_images: np.ndarray) -> dict[bytes, list[int]]:
    index: dict[bytes, list[int]] = {}
    for i, img in enumerate(data.pool_2x2(pool_images)):
        index.setdefault(img.tobytes(), []).append(i)
    return index


def _check_pairs(inp, target, classes, pool_images, pool_labels, nb) -> None:
    assert inp.shape == (nb, 2, 14, 14) and inp.dtype == np.float32
    assert target.shape == (nb,) and target.dtype == np.int64
    assert classes.shape == (nb, 2) and classes.dtype == np.int64
    # Raw 0..255 scale, no normalisation; a 2x2 mean of integers is a multiple of 1/4.
    assert inp.min() == 0.0 and 200.0 < inp.max() <= 255.0
    assert np.all(inp * 4 == np.round(inp * 4))
    np.testing.assert_array_equal(target, (classes[:, 0] <= classes[:, 1]).astype(np.int64))
    index = _index_of_pooled(pool_images)
    used: list[int] = []
    for img, cls in zip(inp.reshape(2 * nb, 14, 14), classes.reshape(-1), strict=True):
        candidates = index.get(img.tobytes())
        assert candidates, "a pair image is not a pooled digit of its split"
        matching = [i for i in candidates if pool_labels[i] == cls]
        assert matching, "a pair image is not a digit of its class"
        used.append(matching[0])
    assert len(set(used)) == 2 * nb, "a digit was used twice in one set"


def test_pair_semantics_on_full_mnist(mnist_dir: Path) -> None:
    pools = mnist.load_digits("idx", mnist_dir)
    nb = 1000
    out = data.generate_pair_sets(nb, seed=3, source="idx", data_dir=mnist_dir)
    _check_pairs(*out[:3], pools.train_images, pools.train_labels, nb)
    _check_pairs(*out[3:], pools.test_images, pools.test_labels, nb)
    # Both classes of the target occur about as the digit statistics say (P(a<=b) = 0.55).
    assert 0.45 < out[1].mean() < 0.65 and 0.45 < out[4].mean() < 0.65


def test_pair_semantics_on_bundled(bundled: mnist.DigitPools) -> None:
    nb = 1000
    out = data.generate_pair_sets(nb, seed=0, source="bundled")
    _check_pairs(*out[:3], bundled.train_images, bundled.train_labels, nb)
    _check_pairs(*out[3:], bundled.test_images, bundled.test_labels, nb)


def test_pairs_are_deterministic_per_seed() -> None:
    a = data.generate_pair_sets(200, seed=11, source="bundled")
    b = data.generate_pair_sets(200, seed=11, source="bundled")
    c = data.generate_pair_sets(200, seed=12, source="bundled")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[3], c[3])


def test_pooling_matches_torch_avg_pool(bundled: mnist.DigitPools) -> None:
    imgs = bundled.train_images[:64]
    ours = data.pool_2x2(imgs)
    theirs = torch.nn.functional.avg_pool2d(torch.tensor(imgs).float()[:, None], 2)[:, 0]
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_torch_generate_pair_sets_semantics(bundled: mnist.DigitPools) -> None:
    out = tdata.generate_pair_sets(300, seed=5, source="bundled")
    assert [tuple(t.shape) for t in out] == [(300, 2, 14, 14), (300,), (300, 2)] * 2
    assert [t.dtype for t in out] == [torch.float32, torch.int64, torch.int64] * 2
    arrays = [t.numpy() for t in out]
    _check_pairs(*arrays[:3], bundled.train_images, bundled.train_labels, 300)
    again = tdata.generate_pair_sets(300, seed=5, source="bundled")
    assert all(torch.equal(x, y) for x, y in zip(out, again, strict=True))


# --- The disk set ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", [data, tdata], ids=["jaxdl", "torch_reference"])
def test_disk_set(module) -> None:
    points, labels = module.generate_disk_set(20000, seed=1)
    points, labels = np.asarray(points), np.asarray(labels)
    assert points.shape == (20000, 2) and points.dtype == np.float32
    assert labels.shape == (20000,) and labels.dtype == np.int64
    assert points.min() >= 0.0 and points.max() < 1.0
    inside = np.hypot(points[:, 0] - 0.5, points[:, 1] - 0.5) < 1 / np.sqrt(2 * np.pi)
    np.testing.assert_array_equal(labels, inside.astype(np.int64))
    assert abs(labels.mean() - 0.5) < 0.02  # the disk has area 1/2
    again, _ = module.generate_disk_set(20000, seed=1)
    other, _ = module.generate_disk_set(20000, seed=2)
    np.testing.assert_array_equal(np.asarray(again), points)
    assert not np.array_equal(np.asarray(other), points)


# --- Bad input: one clear line naming the file or the numbers --------------------------------


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_folder_names_every_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        mnist.load_digits("idx", missing)
    message = _one_line(e)
    assert str(missing) in message and str(missing / "MNIST" / "raw") in message


def test_auto_with_configured_missing_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        data.generate_pair_sets(10, source="auto", data_dir=tmp_path / "typo")


def test_truncated_gzip(small_folder: Path) -> None:
    path = small_folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError) as e:
        mnist.load_digits("idx", small_folder)
    assert str(path) in _one_line(e) and "gzip" in str(e.value)


def test_corrupt_gzip(small_folder: Path) -> None:
    path = small_folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[20:40] = bytes(20)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        mnist.load_digits("idx", small_folder)
    assert str(path) in _one_line(e)


def test_truncated_raw_file(small_folder: Path, tmp_path: Path) -> None:
    gz = small_folder / "train-labels-idx1-ubyte.gz"
    raw = small_folder / "train-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress(gz.read_bytes())[:-7])
    with pytest.raises(DataError) as e:
        mnist.read_idx(raw, 2049)
    assert str(raw) in _one_line(e) and "(408 bytes) but the file holds 401 bytes" in str(e.value)


def test_wrong_magic(small_folder: Path, bundled: mnist.DigitPools) -> None:
    # Labels written where the images belong: magic 2049 instead of 2051.
    path = write_idx(small_folder / "train-images-idx3-ubyte", bundled.train_labels[:400])
    with pytest.raises(DataError) as e:
        mnist.load_digits("idx", small_folder)
    message = _one_line(e)
    assert str(path) in message and "2049" in message and "2051" in message


def test_image_and_label_counts_disagree(small_folder: Path, bundled: mnist.DigitPools) -> None:
    write_idx(small_folder / "t10k-labels-idx1-ubyte", bundled.test_labels[:299])
    with pytest.raises(DataError) as e:
        mnist.load_digits("idx", small_folder)
    message = _one_line(e)
    assert "300 images" in message and "299 labels" in message


def test_nb_larger_than_pool(small_folder: Path) -> None:
    with pytest.raises(DataError) as e:
        data.generate_pair_sets(201, source="idx", data_dir=small_folder)
    message = _one_line(e)
    assert "402 digits" in message and "holds only 400" in message
    with pytest.raises(DataError, match="holds only 300"):
        tdata.generate_pair_sets(151, source="idx", data_dir=small_folder)


@pytest.mark.parametrize("nb", [0, -3, 2.5])
def test_nb_must_be_positive_integer(nb) -> None:
    with pytest.raises(DataError, match="positive integer"):
        data.generate_pair_sets(nb, source="bundled")
    with pytest.raises(DataError, match="positive integer"):
        data.generate_disk_set(nb, seed=0)


def test_unknown_source() -> None:
    with pytest.raises(DataError, match="unknown MNIST source 'mnist'"):
        data.generate_pair_sets(10, source="mnist")


def test_tfds_without_the_package_is_a_clear_error() -> None:
    try:
        import tensorflow_datasets  # noqa: F401

        pytest.skip("tensorflow-datasets is installed; this checks the message without it")
    except ImportError:
        pass
    with pytest.raises(DataError, match=r"tensorflow-datasets"):
        mnist.load_digits("tfds")
