"""Procedural rooms: labelled like the real scan, boxes enclose their points, no overlaps, deterministic."""

import numpy as np

from prunekit_voxel.expressions import generate
from prunekit_voxel.rooms import ALL_CLASSES, SCAN_SIZES, WALL_MOUNTED, make_room
from prunekit_voxel.scannet import points_in_boxes


def test_rooms_are_consistent_and_deterministic():
    kinds = set()
    for seed in range(5):
        r = make_room(seed)
        k = len(r.boxes)
        assert 4 <= k <= 10 and r.points.shape == r.colors.shape and len(r.semantic) == len(r.points)
        for i in range(k):
            pts = r.object_points(i)
            assert len(pts) >= 50 and points_in_boxes(pts, r.boxes[i:i + 1], margin=1e-9).all()
            assert (r.semantic[r.instance == i + 1] == r.box_class[i]).all()
            # no two footprints overlap
            for j in range(i):
                gap = np.abs(r.boxes[i, :2] - r.boxes[j, :2]) - (r.boxes[i, 3:5] + r.boxes[j, 3:5]) / 2
                assert gap.max() >= 0.1 - 1e-9
        assert np.allclose(r.boxes[:, 2], r.boxes[:, 5] / 2)  # standing on the floor
        colours = np.stack([r.colors[r.instance == i + 1].mean(0) for i in range(k)])
        kinds |= {e.kind for e in generate(r.box_names, r.boxes, colours)}
    assert {"unique", "colour", "closest"} <= kinds
    a, b = make_room(3), make_room(3)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(make_room(4).boxes.shape, a.boxes.shape) or not np.allclose(make_room(4).boxes, a.boxes)


def test_scan_classes_are_opt_in_and_wall_mounted_ones_touch_a_wall():
    seen = set()
    for seed in range(6):
        assert set(make_room(seed).box_names) <= {"chair", "table", "bed", "cabinet", "sofa", "desk", "lamp", "box",
                                                  "refrigerator", "toilet"}
        r = make_room(seed, classes=ALL_CLASSES, n_objects=(8, 12))
        seen |= set(r.box_names)
        for i, (name, b) in enumerate(zip(r.box_names, r.boxes)):
            assert points_in_boxes(r.object_points(i), r.boxes[i:i + 1], margin=1e-9).all()
            if name in WALL_MOUNTED:  # flush with x = 0 or y = 0, thin across it, bottom in its height range
                lo, hi = WALL_MOUNTED[name]
                near = [ax for ax in (0, 1) if abs(b[ax] - b[3 + ax] / 2) < 1e-9]
                assert near and b[3 + near[0]] <= b[4 - near[0]]
                assert lo - 1e-9 <= b[2] - b[5] / 2 <= hi + 1e-9
            else:
                assert np.isclose(b[2], b[5] / 2)
    assert set(SCAN_SIZES) <= seen


def test_to_room_frame_moves_the_floor_plan_to_the_origin_with_the_boxes():
    from dataclasses import replace

    from prunekit_voxel.data import to_room_frame

    r = make_room(1)
    off = np.array([-3.5, -2.25, 0.0])  # a ScanNet-like frame centred near 0
    b = r.boxes.copy()
    b[:, :3] += off
    moved = to_room_frame(replace(r, points=r.points + off, boxes=b))
    assert np.allclose(moved.points[:, :2].min(0), 0.0) and np.allclose(moved.points, r.points)
    assert np.allclose(moved.boxes, r.boxes)  # the room's own floor plan already started at 0
    assert all(points_in_boxes(moved.object_points(i), moved.boxes[i:i + 1], margin=1e-9).all()
               for i in range(len(moved.boxes)))
