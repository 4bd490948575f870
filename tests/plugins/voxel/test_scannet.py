"""The real ScanNet scan loader (skips when ../shared/data/scannet is absent)."""

from pathlib import Path

import numpy as np
import pytest
from prunekit import InputError

from prunekit_voxel.scannet import NYU40, load_scannet, points_in_boxes

SCANNET = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "scannet"


@pytest.fixture(scope="module")
def scan():
    if not (SCANNET / "scene0000_00_vert_all.npy").exists():
        pytest.skip(f"real ScanNet scan not found at {SCANNET}")
    return load_scannet(SCANNET)


def test_scan_shapes_and_labels(scan):
    n = scan.points.shape[0]
    assert n > 10_000 and scan.colors.shape == (n, 3) and 0 <= scan.colors.min() and scan.colors.max() <= 1
    assert scan.boxes.shape[0] == len(scan.box_class) == len(scan.box_instance) > 0
    assert "bed" in scan.box_names or "chair" in scan.box_names or "table" in scan.box_names


def test_boxes_enclose_their_instances_and_classes_agree(scan):
    for k in range(len(scan.boxes)):
        pts = scan.object_points(k)
        assert len(pts) > 0
        inside = points_in_boxes(pts, scan.boxes[k:k + 1], margin=1e-3)[:, 0]
        assert inside.mean() > 0.99, (k, scan.box_names[k], inside.mean())
        sem = scan.semantic[scan.instance == scan.box_instance[k]]
        assert np.bincount(sem).argmax() == scan.box_class[k], (k, NYU40[scan.box_class[k]])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="vert_all.npy: no such file"):
        load_scannet(tmp_path)
    for name, arr in [("vert_all", np.zeros((5, 6))), ("sem_label_all", np.zeros(5)), ("ins_label_all", np.zeros(4)),
                      ("bbox", np.zeros((1, 7))), ("bbox_idx", np.zeros(1))]:
        np.save(tmp_path / f"scene0000_00_{name}.npy", arr)
    with pytest.raises(InputError, match="ins_label_all.npy: expected 5 labels"):
        load_scannet(tmp_path)


def test_points_in_boxes_margin():
    box = np.array([[0, 0, 0, 2, 2, 2]], float)
    pts = np.array([[0.9, 0, 0], [1.2, 0, 0]])
    assert points_in_boxes(pts, box)[:, 0].tolist() == [True, False]
    assert points_in_boxes(pts, box, margin=0.3)[:, 0].tolist() == [True, True]
