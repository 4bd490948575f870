"""antimatter15 ``.splat``: 32 bytes per Gaussian, little-endian, no header, no higher SH.

Layout per splat: position 3 x f32, **activated** scale 3 x f32, RGBA 4 x u8 (colour from the DC
term ``0.5 + C0 * sh0``, alpha = sigmoid(opacity logit)), quaternion 4 x u8, w first,
``round(q / |q| * 128 + 128)`` clipped to 0..255.

Reading inverts this (log of the scale, logit of alpha with alpha clamped to [1e-4, 1 - 1e-4]
so that 0 and 255 stay finite and re-quantise to themselves); values come back within one
quantisation step (colour 1/255, quaternion 1/128). Writing keeps the scene's Gaussian order
unless ``sort=True`` (the antimatter15 viewer order: descending exp(sum log-scale) * opacity).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from prunekit.errors import InputError
from prunekit.fileio import atomic_path

from ..scene import SH_C0, GaussianScene
from .repair import repair_scene

SPLAT_DTYPE = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
_ALPHA_EPS = 1e-4


def read_splat(path: str | os.PathLike) -> GaussianScene:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if len(raw) % SPLAT_DTYPE.itemsize:
        raise InputError(f"{path}: size {len(raw)} B is not a multiple of 32 B; expected an antimatter15 .splat "
                         "file (truncated?)")
    rec = np.frombuffer(raw, SPLAT_DTYPE)
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.log(rec["scale"])  # zero/negative scales -> non-finite -> dropped by the repair step
    rgba = rec["rgba"].astype(np.float32) / 255.0
    alpha = np.clip(rgba[:, 3], _ALPHA_EPS, 1 - _ALPHA_EPS)
    n = len(rec)
    scene = GaussianScene(
        means=torch.from_numpy(rec["pos"].copy()),
        quats=torch.from_numpy((rec["rot"].astype(np.float32) - 128.0) / 128.0),
        scales=torch.from_numpy(scales.astype(np.float32)),
        opacities=torch.from_numpy(np.log(alpha / (1 - alpha)).astype(np.float32)),
        sh0=torch.from_numpy(((rgba[:, :3] - 0.5) / SH_C0).astype(np.float32)),
        shN=torch.zeros(n, 0, 3), meta={"format": "splat", "source": str(path)})
    return repair_scene(scene, str(path))


def write_splat(scene: GaussianScene, path: str | os.PathLike, sort: bool = False) -> None:
    """Write ``scene`` as a ``.splat`` file (atomically); higher SH and extras are dropped."""
    if sort:
        key = torch.exp(scene.scales.sum(dim=1)) * scene.opacity
        scene = scene.subset(torch.argsort(key, descending=True, stable=True))
    rec = np.empty(len(scene), SPLAT_DTYPE)
    rec["pos"] = scene.means.detach().cpu().numpy()
    rec["scale"] = torch.exp(scene.scales).detach().cpu().numpy()
    rgb = (scene.rgb.clamp(0, 1) * 255).round()
    alpha = (scene.opacity * 255).round()
    rec["rgba"] = torch.cat([rgb, alpha[:, None]], dim=1).to(torch.uint8).cpu().numpy()
    rec["rot"] = (scene.rotation * 128 + 128).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(rec.tobytes())
