"""Loader for one labelled ScanNet scan in the mmdetection3d ``*_vert_all.npy`` layout.

Files (``<scene>_`` prefix): ``vert_all.npy`` N x 6 (xyz, rgb 0-255), ``sem_label_all.npy``
(NYU40 class per point), ``ins_label_all.npy`` (instance id per point, 0 = none),
``bbox.npy`` K x 7 axis-aligned boxes ``[cx, cy, cz, dx, dy, dz, nyu40 class]`` and
``bbox_idx.npy`` (instance id of each box). The real scan lives in ``../shared/data/scannet``
(ScanNet terms: non-commercial research); it is never copied into the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prunekit import InputError

#: NYU40 class names by id (ScanNet's ``nyu40class`` column); 0 = unlabelled
NYU40 = ("unlabelled", "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
         "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
         "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel", "shower curtain", "box",
         "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
         "otherfurniture", "otherprop")
_FILES = ("vert_all", "sem_label_all", "ins_label_all", "bbox", "bbox_idx")


@dataclass
class LabelledScan:
    """A scan with per-point labels and per-object boxes (``boxes[i] = [cx, cy, cz, dx, dy, dz]``)."""

    name: str
    points: np.ndarray          # N x 3 float64, metres
    colors: np.ndarray          # N x 3 in [0, 1]
    semantic: np.ndarray        # N NYU40 ids
    instance: np.ndarray        # N instance ids, 0 = none
    boxes: np.ndarray           # K x 6
    box_class: np.ndarray       # K NYU40 ids
    box_instance: np.ndarray    # K instance ids

    @property
    def box_names(self) -> list[str]:
        return [NYU40[c] if 0 <= c < len(NYU40) else f"class{c}" for c in self.box_class]

    def object_points(self, k: int) -> np.ndarray:
        """Points of the instance behind box ``k``."""
        return self.points[self.instance == self.box_instance[k]]


def load_scannet(folder: str | os.PathLike, scene: str = "scene0000_00") -> LabelledScan:
    """Read ``<folder>/<scene>_{vert_all,sem_label_all,ins_label_all,bbox,bbox_idx}.npy``."""
    folder = Path(folder)
    arrays = {}
    for name in _FILES:
        path = folder / f"{scene}_{name}.npy"
        if not path.exists():
            raise InputError(f"{path}: no such file (a ScanNet scan needs {', '.join(_FILES)})")
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad input
            raise InputError(f"{path}: not a readable numpy file ({type(e).__name__}: {e})") from None
    vert, box = arrays["vert_all"], arrays["bbox"]
    n = vert.shape[0]
    if vert.ndim != 2 or vert.shape[1] < 6:
        raise InputError(f"{folder / (scene + '_vert_all.npy')}: expected N x 6 (xyz rgb), got {vert.shape}")
    if box.ndim != 2 or box.shape[1] != 7:
        raise InputError(f"{folder / (scene + '_bbox.npy')}: expected K x 7 boxes, got {box.shape}")
    for name in ("sem_label_all", "ins_label_all"):
        if arrays[name].shape != (n,):
            raise InputError(f"{folder / f'{scene}_{name}.npy'}: expected {n} labels, got shape {arrays[name].shape}")
    if arrays["bbox_idx"].shape != (box.shape[0],):
        raise InputError(f"{folder / (scene + '_bbox_idx.npy')}: expected {box.shape[0]} ids, got {arrays['bbox_idx'].shape}")
    return LabelledScan(
        name=scene, points=vert[:, :3].astype(np.float64), colors=vert[:, 3:6].astype(np.float64) / 255.0,
        semantic=arrays["sem_label_all"].astype(np.int64), instance=arrays["ins_label_all"].astype(np.int64),
        boxes=box[:, :6].astype(np.float64), box_class=box[:, 6].astype(np.int64),
        box_instance=arrays["bbox_idx"].astype(np.int64))


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """N x K bool: point inside axis-aligned box (``[cx, cy, cz, dx, dy, dz]``) grown by ``margin`` per side."""
    p = np.asarray(points)[:, None, :]
    c, half = boxes[None, :, :3], boxes[None, :, 3:6] / 2 + margin
    return (np.abs(p - c) <= half).all(-1)
