"""Cluttered MNIST: real MNIST test digits on larger canvases full of distractors.

Each sample places one 28x28 digit of the real MNIST test set (``t10k`` idx files) at a
random position of an ``S x S`` canvas that also holds ``clutter`` distractor strokes
(random ``frag x frag`` crops of *other* digits of the same split, randomly rotated by
multiples of 90 degrees) and Gaussian noise, so most patches are background. Targets:
the class (0-9) and the digit's pixel mask (pixels of the placed digit >= 0.5).

Split: a fixed permutation (seed 0) of the 10,000 test digits; the first ``n_train``
train, the rest test. Distractors come from the same split only. Training canvases are
re-drawn every epoch (``seed = epoch``); the test canvases are fixed (seed 12345).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunekit.errors import InputError

DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


def mnist_root() -> Path:
    """``$PRUNEKIT_MNIST`` or ``../shared/data/mnist`` next to the repository."""
    return Path(os.environ.get("PRUNEKIT_MNIST", DEFAULT_ROOT))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: not a gzip file ({e})") from None
    if len(data) < 8 or int.from_bytes(data[:4], "big") != magic:
        raise InputError(f"{path}: idx magic number must be {magic}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise InputError(f"{path}: expected {int(np.prod(dims))} data bytes for shape {dims}, got {len(body)}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_mnist(root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (10000, 28, 28) float32 in [0, 1], labels (10000,) int64) from the t10k idx files."""
    root = Path(root) if root is not None else mnist_root()
    images = _read_idx(root / "t10k-images-idx3-ubyte.gz", 2051).astype(np.float32) / 255.0
    labels = _read_idx(root / "t10k-labels-idx1-ubyte.gz", 2049).astype(np.int64)
    if len(images) != len(labels):
        raise InputError(f"{root}: {len(images)} images but {len(labels)} labels")
    return images, labels


@dataclass(frozen=True)
class CanvasSpec:
    size: int = 96
    clutter: int = 4
    frag: int = 10  # distractor crop side, in digit pixels (before scaling)
    noise: float = 0.05
    digit_scale: int = 1  # digits (and distractors) upsampled bilinearly by this factor


def upscale(digits: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of (N, h, w) images by an integer factor."""
    if factor == 1:
        return digits
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(digits))[:, None]
    return F.interpolate(t, scale_factor=factor, mode="bilinear", align_corners=False)[:, 0].numpy()


def split(n: int = 10000, n_train: int = 8000) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(0).permutation(n)
    return perm[:n_train], perm[n_train:]


def make_canvases(digits: np.ndarray, labels: np.ndarray, spec: CanvasSpec, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canvases (N, 1, S, S) float32, labels (N,), masks (N, S, S) bool; one per digit."""
    rng = np.random.default_rng(seed)
    digits = upscale(digits, spec.digit_scale)
    d = digits.shape[1]
    n, s, f = len(digits), spec.size, spec.frag * spec.digit_scale
    if s < d:
        raise ValueError(f"canvas size {s} is smaller than a {d}x{d} digit")
    canvas = np.zeros((n, s, s), np.float32)
    for i in range(n):
        for _ in range(spec.clutter):
            src = digits[rng.integers(n)]
            margin = 4 * spec.digit_scale
            y0, x0 = rng.integers(margin, d - f - margin + 1, size=2) if d - f - 2 * margin >= 0 else (0, 0)
            crop = np.rot90(src[y0:y0 + f, x0:x0 + f], k=int(rng.integers(4)))
            ty, tx = rng.integers(0, s - f + 1, size=2)
            np.maximum(canvas[i, ty:ty + f, tx:tx + f], crop, out=canvas[i, ty:ty + f, tx:tx + f])
    mask = np.zeros((n, s, s), bool)
    pos = rng.integers(0, s - d + 1, size=(n, 2))
    for i in range(n):
        y, x = pos[i]
        np.maximum(canvas[i, y:y + d, x:x + d], digits[i], out=canvas[i, y:y + d, x:x + d])
        mask[i, y:y + d, x:x + d] = digits[i] >= 0.5
    if spec.noise:
        canvas += rng.normal(0.0, spec.noise, size=canvas.shape).astype(np.float32)
    np.clip(canvas, 0.0, 1.0, out=canvas)
    return canvas[:, None], labels.copy(), mask


def normalise(x):
    """Map [0, 1] pixels to roughly zero mean, unit spread (MNIST statistics)."""
    return (x - 0.1) / 0.3
