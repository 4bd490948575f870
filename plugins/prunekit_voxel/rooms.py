"""Procedurally generated rooms for training the grounding network (issue 9, step 3).

A room is a rectangular floor (``extent`` metres per side) with two walls and 4-10 objects of
NYU40 classes, each an axis-aligned box with a class-typical size scaled by U(0.8, 1.25), a
colour drawn from :data:`~prunekit_voxel.expressions.PALETTE` (plus noise), placed without
footprint overlap. Points are sampled uniformly on the visible box faces (all but the bottom),
the floor and the walls at ``density`` points per square metre. The result is a
:class:`~prunekit_voxel.scannet.LabelledScan`, the same type as the real ScanNet scan, so
expressions (:func:`~prunekit_voxel.expressions.generate`), voxelisation and evaluation treat
both alike.
"""

from __future__ import annotations

import numpy as np

from .expressions import PALETTE
from .scannet import NYU40, LabelledScan

#: class -> typical (dx, dy, dz) in metres
SIZES = {"chair": (0.5, 0.5, 0.9), "table": (1.2, 0.8, 0.75), "bed": (2.0, 1.6, 0.6), "cabinet": (0.8, 0.5, 1.2),
         "sofa": (2.0, 0.9, 0.8), "desk": (1.2, 0.6, 0.75), "lamp": (0.3, 0.3, 1.5), "box": (0.4, 0.4, 0.4),
         "refrigerator": (0.8, 0.7, 1.8), "toilet": (0.4, 0.7, 0.8)}


def _box_surface(center, dims, n, rng) -> np.ndarray:
    """``n`` points on the five visible faces (no bottom) of an axis-aligned box, area-weighted."""
    dx, dy, dz = dims
    faces = [(2, 1.0, dx * dy), (0, -1.0, dy * dz), (0, 1.0, dy * dz), (1, -1.0, dx * dz), (1, 1.0, dx * dz)]
    area = np.array([f[2] for f in faces])
    which = rng.choice(len(faces), size=n, p=area / area.sum())
    p = (rng.random((n, 3)) - 0.5) * np.asarray(dims)
    for i, (axis, sign, _) in enumerate(faces):
        p[which == i, axis] = sign * dims[axis] / 2
    return p + np.asarray(center)


def make_room(seed: int, n_objects: tuple[int, int] = (4, 10), extent: tuple[float, float] = (4.0, 7.0),
              density: float = 400.0, colour_noise: float = 0.05) -> LabelledScan:
    """One room from ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    w, d = rng.uniform(*extent, size=2)
    names, boxes, cols = [], [], []
    classes, palette = list(SIZES), list(PALETTE)
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        for _try in range(30):
            name = classes[int(rng.integers(len(classes)))]
            dims = np.array(SIZES[name]) * rng.uniform(0.8, 1.25)
            if rng.random() < 0.5:
                dims[[0, 1]] = dims[[1, 0]]  # rotated by 90 degrees
            c = np.array([rng.uniform(dims[0] / 2, w - dims[0] / 2), rng.uniform(dims[1] / 2, d - dims[1] / 2), dims[2] / 2])
            free = all(np.any(np.abs(c[:2] - b[:2]) >= (dims[:2] + b[3:5]) / 2 + 0.1) for b in boxes)
            if free:
                names.append(name)
                boxes.append(np.concatenate([c, dims]))
                cols.append(np.array(PALETTE[palette[int(rng.integers(len(palette)))]]))
                break
    boxes_a = np.array(boxes).reshape(-1, 6)
    cls = np.array([NYU40.index(n) for n in names], dtype=np.int64)
    pts, col, ins, sem = [], [], [], []
    for k, (b, base) in enumerate(zip(boxes_a, cols)):
        area = b[3] * b[4] + 2 * b[5] * (b[3] + b[4])
        p = _box_surface(b[:3], b[3:], max(50, int(density * area)), rng)
        pts.append(p)
        col.append(np.clip(base + rng.normal(0, colour_noise, p.shape), 0, 1))
        ins.append(np.full(len(p), k + 1))
        sem.append(np.full(len(p), cls[k]))
    n_floor = int(density * w * d / 4)
    walls = [np.column_stack([rng.random(n_floor) * w, rng.random(n_floor) * d, np.zeros(n_floor)]),
             np.column_stack([rng.random(n_floor // 2) * w, np.zeros(n_floor // 2), rng.random(n_floor // 2) * 2.5]),
             np.column_stack([np.zeros(n_floor // 2), rng.random(n_floor // 2) * d, rng.random(n_floor // 2) * 2.5])]
    for s, grey, label in zip(walls, (0.55, 0.85, 0.85), ("floor", "wall", "wall")):
        pts.append(s)
        col.append(np.clip(grey + rng.normal(0, colour_noise, s.shape), 0, 1))
        ins.append(np.zeros(len(s), dtype=np.int64))
        sem.append(np.full(len(s), NYU40.index(label)))
    return LabelledScan(name=f"room{seed}", points=np.concatenate(pts), colors=np.concatenate(col),
                        semantic=np.concatenate(sem).astype(np.int64), instance=np.concatenate(ins).astype(np.int64),
                        boxes=boxes_a, box_class=cls,
                        box_instance=np.arange(1, len(names) + 1))
