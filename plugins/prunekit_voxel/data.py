"""Grounding samples (voxelised scene + expression + boxes) from generated rooms or a labelled scan."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from .expressions import Expression, generate
from .rooms import make_room
from .scannet import LabelledScan
from .sparse import SparseVoxels, unique_coords
from .voxelize import voxelize


@dataclass
class Sample:
    scene: str
    voxels: SparseVoxels        # features: rgb + occupancy
    text: str
    target_box: torch.Tensor    # 6
    all_boxes: torch.Tensor     # K x 6 (scene-level TGP targets)
    mentioned: torch.Tensor     # M x 6 (anchors named by the expression)
    kind: str
    target_sites: torch.Tensor | None = None  # K x 3 stride-1 voxels holding target points (head positives)


def scan_voxels(scan: LabelledScan, voxel_size: float) -> SparseVoxels:
    return voxelize(scan.points, voxel_size, np.hstack([scan.colors, np.ones((len(scan.points), 1))]))[0]


def instance_colours(scan: LabelledScan) -> np.ndarray:
    return np.stack([scan.colors[scan.instance == i].mean(0) for i in scan.box_instance])


def expressions_of(scan: LabelledScan, seed: int = 0) -> list[Expression]:
    return generate(scan.box_names, scan.boxes, instance_colours(scan), seed=seed)


def samples_of(scan: LabelledScan, voxel_size: float, exprs: list[Expression]) -> list[Sample]:
    vox = scan_voxels(scan, voxel_size)
    boxes = torch.as_tensor(scan.boxes, dtype=torch.float32)
    return [Sample(scan.name, vox, e.text, boxes[e.target], boxes,
                   boxes[[e.anchor]] if e.anchor is not None else torch.zeros(0, 6), e.kind,
                   instance_sites(scan, int(scan.box_instance[e.target]), voxel_size)) for e in exprs]


def to_room_frame(scan: LabelledScan) -> LabelledScan:
    """The scan translated so its floor plan starts at the origin (min x = min y = 0; z kept), the
    frame of the generated rooms (``rooms.make_room``: x, y in [0, extent]). The network's learned
    xyz embedding and box offsets have only seen that frame; ScanNet scans are centred on 0."""
    shift = np.array([scan.points[:, 0].min(), scan.points[:, 1].min(), 0.0])
    boxes = scan.boxes.copy()
    boxes[:, :3] -= shift
    return replace(scan, points=scan.points - shift, boxes=boxes)


def instance_sites(scan: LabelledScan, instance: int, voxel_size: float) -> torch.Tensor:
    """Unique stride-1 voxel coordinates (``floor(p / voxel_size)``) of one instance's points."""
    pts = torch.as_tensor(scan.points[scan.instance == instance], dtype=torch.float64)
    return unique_coords(torch.floor(pts / voxel_size).to(torch.int64))[0]


def room_expression(seed: int, kinds: tuple[str, ...] | None = None, **room) -> tuple[LabelledScan, Expression] | None:
    """Room ``seed`` and the expression :func:`room_sample` draws from it (None if it has none)."""
    room = make_room(seed, **room)
    exprs = [e for e in expressions_of(room, seed) if kinds is None or e.kind in kinds]
    if not exprs:
        return None
    return room, exprs[int(np.random.default_rng(seed).integers(len(exprs)))]


def room_sample(seed: int, voxel_size: float, kinds: tuple[str, ...] | None = None, **room) -> Sample | None:
    """One random expression of room ``seed`` (None if the room has no unambiguous expression);
    ``kinds`` restricts the expression kinds (a training curriculum), ``room`` goes to ``make_room``."""
    got = room_expression(seed, kinds, **room)
    return None if got is None else samples_of(got[0], voxel_size, [got[1]])[0]
