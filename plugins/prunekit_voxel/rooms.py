"""Procedurally generated rooms for training the grounding network (issue 9, step 3).

A room is a rectangular floor (``extent`` metres per side) with two walls and 4-10 objects of
NYU40 classes, each an axis-aligned box with a class-typical size scaled by U(0.8, 1.25), a
colour drawn from :data:`~prunekit_voxel.expressions.PALETTE` (plus noise), placed without
footprint overlap. By default the ten classes of :data:`SIZES`; ``classes=ALL_CLASSES`` adds the
ScanNet scan's classes the default lacks (:data:`SCAN_SIZES`: counter, sink, other furniture as
floor boxes; door, window, curtain as thin boxes against a wall), so that the scan's
expressions name classes the network has seen (ours, for the ScanNet evaluation). Points are sampled uniformly on the visible box faces (all but the bottom),
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
#: classes of the ScanNet evaluation scan that :data:`SIZES` lacks (opt-in: ``make_room(classes=ALL_CLASSES)``);
#: typical sizes, box-ish like the rest. ``otherfurniture`` is what the expressions call "piece of furniture".
SCAN_SIZES = {"counter": (1.8, 0.6, 0.9), "sink": (0.5, 0.6, 0.85), "otherfurniture": (0.45, 0.45, 0.5),
              "door": (0.9, 0.1, 2.0), "window": (1.2, 0.15, 0.9), "curtain": (1.5, 0.2, 2.2)}
#: wall-mounted classes: placed against the wall x = 0 or y = 0 (thin axis across it); value = bottom height range
WALL_MOUNTED = {"door": (0.0, 0.0), "curtain": (0.0, 0.2), "window": (0.7, 1.2)}
ALL_CLASSES = (*SIZES, *SCAN_SIZES)


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


def _wall_place(name: str, dims: np.ndarray, w: float, d: float, rng) -> np.ndarray:
    """Centre of a wall-mounted object against the wall x = 0 or y = 0 (``dims`` swapped in place so
    the thin axis crosses the wall)."""
    lo, hi = WALL_MOUNTED[name]
    z = rng.uniform(lo, hi) + dims[2] / 2
    if rng.random() < 0.5:  # on the wall y = 0: thin along y
        dims[[0, 1]] = np.sort(dims[:2])[::-1]
        return np.array([rng.uniform(dims[0] / 2, w - dims[0] / 2), dims[1] / 2, z])
    dims[[0, 1]] = np.sort(dims[:2])  # on the wall x = 0: thin along x
    return np.array([dims[0] / 2, rng.uniform(dims[1] / 2, d - dims[1] / 2), z])


def make_room(seed: int, n_objects: tuple[int, int] = (4, 10), extent: tuple[float, float] = (4.0, 7.0),
              density: float = 400.0, colour_noise: float = 0.05, classes: tuple[str, ...] | None = None) -> LabelledScan:
    """One room from ``seed`` (deterministic). ``classes`` (default: :data:`SIZES`' ten) may add
    :data:`SCAN_SIZES`' classes; wall-mounted ones stand against a wall, the rest on the floor."""
    rng = np.random.default_rng(seed)
    w, d = rng.uniform(*extent, size=2)
    names, boxes, cols = [], [], []
    classes, palette = list(SIZES if classes is None else classes), list(PALETTE)
    sizes = {**SIZES, **SCAN_SIZES}
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        for _try in range(30):
            name = classes[int(rng.integers(len(classes)))]
            dims = np.array(sizes[name]) * rng.uniform(0.8, 1.25)
            if name in WALL_MOUNTED:
                c = _wall_place(name, dims, w, d, rng)
            else:
                if rng.random() < 0.5:
                    dims[[0, 1]] = dims[[1, 0]]  # rotated by 90 degrees
                c = np.array([rng.uniform(dims[0] / 2, w - dims[0] / 2), rng.uniform(dims[1] / 2, d - dims[1] / 2),
                              dims[2] / 2])
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
