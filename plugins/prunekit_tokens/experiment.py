"""The cluttered-MNIST experiment shared by ``scripts/train_cropr_vit.py`` and
``scripts/bench/bench_cropr.py``: model sizes, cached test canvases, cache folders.

Everything trained is cached under ``$PRUNEKIT_CACHE`` (default ``<repo>/.cache``) in
``prunekit_tokens/``; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from prunekit.fileio import atomic_path, atomic_write_text

from .cluttered_mnist import CanvasSpec, load_mnist, make_canvases, split

REPO = Path(__file__).resolve().parents[2]
TEST_SEED = 12345


def cache_dir() -> Path:
    return Path(os.environ.get("PRUNEKIT_CACHE", REPO / ".cache")) / "prunekit_tokens"


@dataclass(frozen=True)
class ModelSpec:
    """A small ViT (transformers ``ViTConfig``) for 1-channel canvases."""

    image_size: int = 96
    patch_size: int = 8
    hidden_size: int = 96
    num_hidden_layers: int = 6
    num_attention_heads: int = 3
    mlp_ratio: int = 4

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // self.patch_size
        return g, g

    @classmethod
    def from_config(cls, config) -> "ModelSpec":
        """The spec of a trained model from its transformers ``ViTConfig`` (sizes saved with the model)."""
        return cls(image_size=config.image_size, patch_size=config.patch_size, hidden_size=config.hidden_size,
                   num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
                   mlp_ratio=config.intermediate_size // config.hidden_size)

    def vit_config(self, **kw):
        from transformers import ViTConfig

        return ViTConfig(image_size=self.image_size, patch_size=self.patch_size, num_channels=1,
                         hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                         num_attention_heads=self.num_attention_heads,
                         intermediate_size=self.mlp_ratio * self.hidden_size,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


def test_canvases(spec: CanvasSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed test split's canvases (2,000 digits; cached as .npz)."""
    path = cache_dir() / f"test_canvases_s{spec.size}_c{spec.clutter}_f{spec.frag}_n{spec.noise:g}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["x"], z["y"], z["m"]
    images, labels = load_mnist()
    _, te = split(len(images))
    x, y, m = make_canvases(images[te], labels[te], spec, TEST_SEED)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, x=x, y=y, m=m)
    return x, y, m


def train_canvases(spec: CanvasSpec, epoch: int, stream: int, n_train: int = 8000):
    """A fresh draw of (the first ``n_train`` of) the training split's canvases for ``epoch``
    (``stream`` separates runs)."""
    images, labels = load_mnist()
    tr, _ = split(len(images))
    tr = tr[:n_train]
    return make_canvases(images[tr], labels[tr], spec, 1000 * stream + epoch)


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)) + "\n")


def schedule_name(prune_count: int = 0, prune_counts=(), prune_after=()) -> str:
    """``r16`` (the same R after every block) or ``s96-16-8-4[-a1-2-3-4]`` (per-module counts
    ``prune_counts``, after the blocks ``prune_after``); :func:`parse_schedule` inverts it."""
    if not prune_counts:
        return f"r{prune_count}"
    name = "s" + "-".join(map(str, prune_counts))
    return name + ("-a" + "-".join(map(str, prune_after)) if prune_after else "")


def parse_schedule(name: str) -> dict:
    """``"r16"`` / ``"s96-16-8-4-a1-2-3-4"`` -> CroprConfig schedule options; UsageError when malformed."""
    from prunekit.errors import UsageError

    try:
        if name.startswith("r"):
            return {"prune_count": int(name[1:]), "prune_counts": (), "prune_after": ()}
        if name.startswith("s"):
            counts, sep, after = name[1:].partition("-a")
            if sep and not after:
                raise ValueError(name)
            return {"prune_count": 0, "prune_counts": tuple(int(v) for v in counts.split("-")),
                    "prune_after": tuple(int(v) for v in after.split("-")) if after else ()}
    except ValueError:
        pass
    raise UsageError(f"schedule {name!r}: expected rN or sN-N-...[-aB-B-...] (e.g. r16, s96-16-8-4-a1-2-3-4)")
