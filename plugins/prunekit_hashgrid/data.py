"""Training views: a synthetic scene rendered analytically, and instant-ngp ``transforms.json`` captures.

All rays are expressed in *unit-cube* coordinates (the radiance field lives on [0,1]^3), cameras in the
NeRF/OpenGL convention (camera looks down -z, y up). Ray directions are unit vectors.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prunekit import InputError


@dataclass
class Views:
    """Images [N, H, W, 3] in [0, 1] with their rays (unit-cube coordinates)."""

    images: torch.Tensor
    rays_o: torch.Tensor
    rays_d: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, idx) -> "Views":
        idx = list(idx)
        return Views(self.images[idx], self.rays_o[idx], self.rays_d[idx], [self.names[i] for i in idx])


def camera_rays(c2w: torch.Tensor, W: int, H: int, fx: float, fy: float, cx: float, cy: float,
                dist: tuple[float, float, float, float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre rays (o [H, W, 3], unit d [H, W, 3]) of a pinhole camera ``c2w`` [3, 4] (OpenGL axes).

    ``dist`` = (k1, k2, p1, p2) Brown-Conrady distortion of the *image*: pixel coordinates are undistorted
    by 10 fixed-point iterations (as OpenCV's undistortPoints) before the rays are cast.
    """
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    x, y = (u - cx) / fx, (v - cy) / fy
    if dist is not None and any(dist):
        k1, k2, p1, p2 = dist
        xd, yd = x, y
        for _ in range(10):
            r2 = x * x + y * y
            radial = 1 + k1 * r2 + k2 * r2 * r2
            dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            x, y = (xd - dx) / radial, (yd - dy) / radial
    dirs = torch.stack([x, -y, -torch.ones_like(x)], -1) @ c2w[:3, :3].T.to(torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    o = c2w[:3, 3].to(torch.float64).expand(H, W, 3)
    return o.float().contiguous(), dirs.float()


def look_at(eye: torch.Tensor, target: torch.Tensor, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """c2w [3, 4] (OpenGL axes) of a camera at ``eye`` looking at ``target``."""
    f = target - eye
    f = f / f.norm()
    r = torch.linalg.cross(f, torch.tensor(up, dtype=f.dtype))
    r = r / r.norm()
    u = torch.linalg.cross(r, f)
    return torch.stack([r, u, -f, eye], 1)


# --- synthetic scene -------------------------------------------------------------------------------------

_SPHERES = ((0.50, 0.50, 0.42, 0.17, (0.85, 0.35, 0.20)),  # centre xyz, radius, colour
            (0.30, 0.66, 0.30, 0.08, (0.20, 0.60, 0.85)),
            (0.70, 0.34, 0.62, 0.07, (0.30, 0.80, 0.30)))
_BOX = ((0.22, 0.22, 0.18), (0.78, 0.78, 0.24), (0.75, 0.72, 0.55))  # min, max, colour


def _shade(p: torch.Tensor, n: torch.Tensor, base: torch.Tensor, period: float) -> torch.Tensor:
    checker = (torch.floor(p / period).sum(-1) % 2)[:, None]
    light = torch.tensor([0.4, 0.3, 0.87])
    lam = (n * (light / light.norm())).sum(-1, keepdim=True).clamp(min=0.0)
    return base * (0.55 + 0.45 * checker) * (0.35 + 0.65 * lam)


def synthetic_render(o: torch.Tensor, d: torch.Tensor, period: float = 0.04) -> torch.Tensor:
    """Ground-truth colours of rays through the analytic scene (three checkered spheres on a slab, white bg)."""
    o, d = o.reshape(-1, 3).double(), d.reshape(-1, 3).double()
    best = torch.full((o.shape[0],), math.inf, dtype=torch.float64)
    col = torch.ones(o.shape[0], 3, dtype=torch.float64)
    for cx, cy, cz, r, c in _SPHERES:
        oc = o - torch.tensor([cx, cy, cz], dtype=torch.float64)
        b = (oc * d).sum(-1)
        disc = b * b - ((oc * oc).sum(-1) - r * r)
        t = -b - disc.clamp(min=0).sqrt()
        hit = (disc > 0) & (t > 0) & (t < best)
        p = o + t[:, None] * d
        n = (p - torch.tensor([cx, cy, cz], dtype=torch.float64)) / r
        shaded = _shade(p, n, torch.tensor(c, dtype=torch.float64), period)
        col = torch.where(hit[:, None], shaded, col)
        best = torch.where(hit, t, best)
    lo, hi, c = (torch.tensor(v, dtype=torch.float64) for v in _BOX)
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (lo - o) * inv, (hi - o) * inv
    tn, tf = torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)
    hit = (tf > tn) & (tn > 0) & (tn < best)
    p = o + tn[:, None] * d
    axis = torch.minimum(t0, t1).argmax(-1)
    n = torch.nn.functional.one_hot(axis, 3).double() * -torch.sign(d)
    col = torch.where(hit[:, None], _shade(p, n, c, period * 2), col)
    return col.float()


def synthetic_views(n_views: int = 24, res: int = 32, seed: int = 0, radius: float = 1.6,
                    fov_deg: float = 40.0) -> Views:
    """``n_views`` cameras on a sphere around the scene (Fibonacci spiral, elevations 10-70 degrees)."""
    g = torch.Generator().manual_seed(seed)
    f = 0.5 * res / math.tan(math.radians(fov_deg) / 2)
    centre = torch.tensor([0.5, 0.5, 0.4], dtype=torch.float64)
    imgs, os_, ds, names = [], [], [], []
    for i in range(n_views):
        az = 2 * math.pi * i * 0.618034 + float(torch.rand((), generator=g)) * 0.2
        el = math.radians(10 + 60 * (i + 0.5) / n_views)
        eye = centre + radius * torch.tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)],
                                             dtype=torch.float64)
        o, d = camera_rays(look_at(eye, centre), res, res, f, f, res / 2, res / 2)
        imgs.append(synthetic_render(o, d).view(res, res, 3))
        os_.append(o)
        ds.append(d)
        names.append(f"synthetic_{i:03d}")
    return Views(torch.stack(imgs), torch.stack(os_), torch.stack(ds), names)


# --- instant-ngp transforms.json ---------------------------------------------------------------------------


def _num(d: dict, key: str, path: Path, default=None) -> float:
    v = d.get(key, default)
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InputError(f"{path}: field {key!r} must be a finite number, got {v!r}")
    return float(v)


def load_transforms(path: str | Path, downscale: int = 8, box_half: float = 2.0,
                    centre: tuple[float, float, float] | None = None) -> Views:
    """Views of an instant-ngp ``transforms.json`` (shared intrinsics), images downscaled by ``downscale``.

    Frames whose image file is missing are skipped with a warning (the fox capture lists 67 frames and ships
    50 images). World coordinates are mapped to the unit cube as (p - centre) / (2 box_half) + 0.5, where
    ``centre`` defaults to the least-squares point closest to all cameras' optical axes.
    """
    from PIL import Image

    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise InputError(f"{path}: field 'frames' must be a non-empty list")
    W0, H0 = int(_num(meta, "w", path)), int(_num(meta, "h", path))
    if "fl_x" in meta:
        fx = _num(meta, "fl_x", path)
    else:
        fx = 0.5 * W0 / math.tan(0.5 * _num(meta, "camera_angle_x", path))
    fy = _num(meta, "fl_y", path, fx)
    cx, cy = _num(meta, "cx", path, W0 / 2), _num(meta, "cy", path, H0 / 2)
    dist = tuple(_num(meta, k, path, 0.0) for k in ("k1", "k2", "p1", "p2"))
    W, H = W0 // downscale, H0 // downscale
    sx, sy = W / W0, H / H0
    poses, images, names = [], [], []
    missing = []
    for i, fr in enumerate(frames):
        try:
            m = torch.tensor(fr["transform_matrix"], dtype=torch.float64)
            assert m.shape == (4, 4) and torch.isfinite(m).all()
            file = path.parent / fr["file_path"]
        except (KeyError, TypeError, ValueError, AssertionError):
            raise InputError(f"{path}: frame {i}: needs 'file_path' and a finite 4x4 'transform_matrix'") from None
        if not file.exists():
            missing.append(fr["file_path"])
            continue
        with Image.open(file) as im:
            img = im.convert("RGB").resize((W, H), Image.BOX)
        images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0))
        poses.append(m[:3])
        names.append(str(fr["file_path"]))
    if missing:
        warnings.warn(f"{path}: {len(missing)} of {len(frames)} frames have no image file and are skipped", stacklevel=2)
    if not poses:
        raise InputError(f"{path}: none of the {len(frames)} frames has an image file")
    P = torch.stack(poses)
    if centre is None:
        A, b = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
        for p in P:
            v = -p[:, 2] / p[:, 2].norm()
            proj = torch.eye(3, dtype=torch.float64) - torch.outer(v, v)
            A, b = A + proj, b + proj @ p[:, 3]
        c = torch.linalg.lstsq(A, b).solution
    else:
        c = torch.tensor(centre, dtype=torch.float64)
    os_, ds = [], []
    for p in P:
        q = p.clone()
        q[:, 3] = (p[:, 3] - c) / (2 * box_half) + 0.5
        o, d = camera_rays(q, W, H, fx * sx, fy * sy, cx * sx, cy * sy, dist)
        os_.append(o)
        ds.append(d)
    return Views(torch.stack(images), torch.stack(os_), torch.stack(ds), names)


def split(views: Views, every: int = 8) -> tuple[Views, Views]:
    """(train, held-out): every ``every``-th view is held out."""
    held = [i for i in range(len(views)) if i % every == every // 2]
    train = [i for i in range(len(views)) if i not in held]
    return views.subset(train), views.subset(held)


def load_scene(scene: str, *, res: int = 48, n_views: int = 24, downscale: int = 8, box_half: float = 2.0) -> Views:
    """``"synthetic"`` (analytic scene, ``n_views`` views of ``res``^2 px) or a path to a ``transforms.json``."""
    if scene == "synthetic":
        return synthetic_views(n_views, res)
    p = Path(scene)
    if p.is_dir():
        p = p / "transforms.json"
    return load_transforms(p, downscale=downscale, box_half=box_half)
