"""Procedural rooms: labelled like the real scan, boxes enclose their points, no overlaps, deterministic."""

import numpy as np

from prunekit_voxel.expressions import generate
from prunekit_voxel.rooms import make_room
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
