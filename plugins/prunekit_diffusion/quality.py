"""Quality meter for small image generators: MNIST reader, digit classifier, Fréchet distance.

- :func:`read_idx` reads the original MNIST idx files (gzip or plain).
- :class:`DigitClassifier` is a small CNN; its penultimate activations are the
  feature space of :func:`frechet_distance`.
- Fréchet distance between Gaussians fitted to two feature sets (the FID formula of
  Heusel et al., 2017, here in a task classifier's feature space instead of Inception's):
  ``d² = ||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½)``, computed in float64 with
  symmetric eigen-decompositions (no scipy).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn


def read_idx(path: str | Path) -> np.ndarray:
    """An idx-format array (MNIST images ``(N, 28, 28)`` uint8 or labels ``(N,)``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {arr.size} values, header says {dims}")
    return arr.reshape(dims)


def load_mnist(folder: str | Path, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST test set as images in ``[-1, 1]`` of shape ``(N, 1, size, size)`` and labels.

    ``size >= 28``: the 28x28 digits padded with black; ``14 <= size < 28``: 2x2 average-pooled
    to 14x14 first, then padded (16 gives the 16x16 images the benchmark models use).
    """
    folder = Path(folder)
    x = torch.from_numpy(read_idx(folder / "t10k-images-idx3-ubyte.gz").copy()).float() / 127.5 - 1.0
    y = torch.from_numpy(read_idx(folder / "t10k-labels-idx1-ubyte.gz").copy()).long()
    x = x[:, None]
    if size < 28:
        if size < 14:
            raise ValueError(f"MNIST size must be >= 14, got {size}")
        x = torch.nn.functional.avg_pool2d(x, 2)
    side = x.shape[-1]
    p = (size - side) // 2
    x = torch.nn.functional.pad(x, (p, size - side - p, p, size - side - p), value=-1.0)
    return x, y


class DigitClassifier(nn.Module):
    """Two conv blocks and a 128-d feature layer; input ``(N, 1, H, W)`` in ``[-1, 1]``."""

    def __init__(self, n_classes: int = 10, width: int = 32, feat: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(2 * width * 16, feat), nn.ReLU(),
        )
        self.head = nn.Linear(feat, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def load_classifier(path: str | Path) -> DigitClassifier:
    """A :class:`DigitClassifier` in eval mode from a ``.safetensors`` state dict."""
    from safetensors.torch import load_file

    clf = DigitClassifier()
    clf.load_state_dict(load_file(str(path)))
    return clf.eval()


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a`` (N, D) and ``b`` (M, D)."""
    a, b = a.double(), b.double()
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least two feature rows on each side")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    r1 = _sqrt_psd(s1)
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    d2 = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * cross
    return float(d2.clamp_min(0))


@torch.no_grad()
def classifier_metrics(clf: DigitClassifier, images: torch.Tensor, labels: torch.Tensor,
                       real_features: torch.Tensor, per_sample: bool = False) -> dict:
    """Class accuracy of generated ``images`` (in ``[-1, 1]``) and their Fréchet distance to real features.

    ``per_sample``: also ``"correct"``, one character per image (``"1"`` right, ``"0"`` wrong), for
    paired comparisons of models sampled with the same seeds.
    """
    clf.eval()
    feats = clf.features(images)
    hit = clf.head(feats).argmax(1) == labels
    out = {"accuracy": float(hit.float().mean()), "frechet": frechet_distance(feats, real_features)}
    if per_sample:
        out["correct"] = "".join("1" if h else "0" for h in hit.tolist())
    return out


@torch.no_grad()
def sample_quality(model: nn.Module, scheduler, clf: DigitClassifier, real_features: torch.Tensor, n: int = 100,
                   steps: int = 20, seed: int = 10_000, per_sample: bool = False) -> dict:
    """:func:`classifier_metrics` of ``n`` digits generated by a class-conditional denoiser.

    Labels cycle 0..9; ``steps`` reverse steps of ``scheduler`` with per-sample seeds ``seed + i``
    (:func:`~prunekit_diffusion.sampling.sample_latents`); samples are clamped to ``[-1, 1]``.
    ``per_sample``: see :func:`classifier_metrics`.
    """
    import time

    from .sampling import Calibration, sample_latents

    labels = torch.arange(n) % 10
    calib = Calibration(n=n, steps=steps, seed=seed, batch_size=100, cond={"class_labels": labels})
    was_training, t0 = model.training, time.perf_counter()
    x = sample_latents(model.eval(), scheduler, calib).clamp(-1, 1)
    model.train(was_training)
    return {**classifier_metrics(clf, x, labels, real_features, per_sample), "sampling_seconds": time.perf_counter() - t0}
