"""Voxelisation of point clouds and meshes into :class:`~prunekit_voxel.sparse.SparseVoxels`.

Convention (fixed here, METHODS.md 8.3): voxel ``c = floor(p / voxel_size)`` from the world
origin (open3d's *tensor* API convention; its legacy ``VoxelGrid`` anchors at
``min_bound - voxel_size / 2`` instead). A voxel's features are the mean of its points'
features (:func:`~prunekit_voxel.sparse.unique_coords` + ``scatter_reduce``).

Meshes are turned into points by area-weighted uniform sampling of their triangles
(``p = a + u (b - a) + v (c - a)`` with ``u + v <= 1`` folded), so thin surfaces are not
missed when a vertex-only voxelisation would leave holes.
"""

from __future__ import annotations

import numpy as np
import torch

from .sparse import SparseVoxels, unique_coords


def voxelize(points, voxel_size: float, feats=None) -> tuple[SparseVoxels, torch.Tensor]:
    """Points (N x 3) and optional per-point features (N x C) -> (voxels, voxel row of each point).

    Features default to a single column of ones (occupancy). Voxel features are means.
    """
    if voxel_size <= 0:
        raise ValueError(f"voxel size must be > 0, got {voxel_size}")
    p = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be N x 3, got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()):
        raise ValueError("points contain NaN or infinite coordinates")
    f = torch.ones(p.shape[0], 1) if feats is None else torch.as_tensor(np.asarray(feats), dtype=torch.float32)
    if f.dim() == 1:
        f = f[:, None]
    if f.shape[0] != p.shape[0]:
        raise ValueError(f"{p.shape[0]} points but {f.shape[0]} feature rows")
    grid = torch.floor(p / voxel_size).to(torch.int64)
    coords, inv = unique_coords(grid)
    out = torch.zeros(coords.shape[0], f.shape[1], dtype=f.dtype)
    out.scatter_reduce_(0, inv[:, None].expand_as(f), f, reduce="mean", include_self=False)
    return SparseVoxels(coords, out), inv


def voxel_centers(coords: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """World-space centre of each voxel."""
    return (coords.to(torch.float32) + 0.5) * voxel_size


def sample_mesh(vertices, triangles, n: int, seed: int = 0, colors=None) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` points uniformly on a triangle mesh's surface (area-weighted), with interpolated vertex colours."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64)
    if t.ndim != 2 or t.shape[1] != 3 or t.size == 0:
        raise ValueError(f"triangles must be M x 3 (M > 0), got shape {t.shape}")
    if int(t.min()) < 0 or int(t.max()) >= len(v):
        raise ValueError(f"triangle indices must lie in [0, {len(v)})")
    a, b, c = v[t[:, 0]], v[t[:, 1]], v[t[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(t), size=n, p=area / area.sum())
    u, w = rng.random(n), rng.random(n)
    fold = u + w > 1
    u[fold], w[fold] = 1 - u[fold], 1 - w[fold]
    pts = a[tri] + u[:, None] * (b - a)[tri] + w[:, None] * (c - a)[tri]
    col = None
    if colors is not None:
        cv = np.asarray(colors, dtype=np.float64)
        ca, cb, cc = cv[t[tri, 0]], cv[t[tri, 1]], cv[t[tri, 2]]
        col = ca + u[:, None] * (cb - ca) + w[:, None] * (cc - ca)
    return pts, col
