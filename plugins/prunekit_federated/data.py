"""Real data for the federation (no downloads) and Dirichlet non-IID client splits.

- ``mnist``: the real MNIST test set (10,000 digits, idx gzip) from the shared data
  folder; 28x28, scaled to [0, 1] and standardised with MNIST's mean/std.
- ``digits``: scikit-learn's bundled ``load_digits`` (1,797 real 8x8 digits, 0..16).

The data is split once (seeded) into a server hold-out set (global evaluation) and a
client pool; the pool is divided across clients by the usual Dirichlet label split
(Hsu et al., 2019, arXiv 1909.06335): for every class c, proportions
p_c ~ Dir(alpha * 1_N) decide how many of class c each client gets.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prunekit.errors import InputError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def default_mnist_dir() -> Path:
    env = os.environ.get("PRUNEKIT_DATA")
    if env:
        return Path(env) / "mnist"
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (MNIST idx gzip expected)") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: not a gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise InputError(f"{path}: not an unsigned-byte idx file (bad magic)")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise InputError(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


@dataclass(frozen=True)
class Dataset:
    """Images (N, 1, H, W) float32 and labels (N,) int64."""

    name: str
    x: torch.Tensor
    y: torch.Tensor

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def image_size(self) -> int:
        return int(self.x.shape[-1])

    def subset(self, idx) -> "Dataset":
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return Dataset(self.name, self.x[idx], self.y[idx])

    def __len__(self) -> int:
        return int(self.y.numel())


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str = "") -> Dataset:
    """Load ``mnist`` (shared MNIST test set) or ``digits`` (sklearn)."""
    if name == "mnist":
        root = Path(data_dir) if data_dir else default_mnist_dir()
        x = _read_idx(root / "t10k-images-idx3-ubyte.gz")
        y = _read_idx(root / "t10k-labels-idx1-ubyte.gz")
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise InputError(f"{root}: images {x.shape} and labels {y.shape} do not match")
        xt = (torch.from_numpy(x.astype(np.float32) / 255.0) - MNIST_MEAN) / MNIST_STD
        return Dataset("mnist", xt.unsqueeze(1).contiguous(), torch.from_numpy(y.astype(np.int64)))
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.from_numpy(d.images.astype(np.float32) / 16.0)
        x = (x - x.mean()) / x.std()
        return Dataset("digits", x.unsqueeze(1).contiguous(), torch.from_numpy(d.target.astype(np.int64)))
    raise InputError(f"unknown dataset {name!r} (expected mnist or digits)")


def holdout_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (pool, test) index split."""
    rng = np.random.default_rng(seed)
    pool, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * idx.size))
        test.append(idx[:n_test])
        pool.append(idx[n_test:])
    return np.sort(np.concatenate(pool)), np.sort(np.concatenate(test))


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float, seed: int,
                        min_size: int = 10, max_tries: int = 100) -> list[np.ndarray]:
    """Split indices across ``num_clients`` with per-class Dir(alpha) proportions.

    Redraws (up to ``max_tries``) until every client holds at least ``min_size``
    samples; raises ValueError when that is impossible.
    """
    labels = np.asarray(labels)
    if num_clients * min_size > labels.size:
        raise ValueError(f"{labels.size} samples cannot give {num_clients} clients {min_size} each")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * idx.size).astype(int)
            for i, chunk in enumerate(np.split(idx, cuts)):
                parts[i].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gave every one of {num_clients} clients >= {min_size} samples")


@functools.lru_cache(maxsize=8)
def _splits(name: str, data_dir: str, num_clients: int, alpha: float, test_fraction: float, seed: int):
    ds = load_dataset(name, data_dir)
    labels = ds.y.numpy()
    pool, test = holdout_split(labels, test_fraction, seed)
    parts = dirichlet_partition(labels[pool], num_clients, alpha, seed + 1)
    return pool, test, [pool[p] for p in parts]


def client_data(name: str, data_dir: str, partition: int, num_clients: int, alpha: float,
                test_fraction: float, seed: int) -> Dataset:
    """The local training data of client ``partition`` (0-based)."""
    if not (0 <= partition < num_clients):
        raise ValueError(f"partition-id {partition} outside 0..{num_clients - 1}")
    _, _, parts = _splits(name, data_dir, num_clients, alpha, test_fraction, seed)
    return load_dataset(name, data_dir).subset(parts[partition])


def server_test_data(name: str, data_dir: str, test_fraction: float, seed: int) -> Dataset:
    """The hold-out set the server evaluates the global model on (same for any client count)."""
    ds = load_dataset(name, data_dir)
    _, test = holdout_split(ds.y.numpy(), test_fraction, seed)
    return ds.subset(test)
