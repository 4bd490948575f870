"""Generated referring expressions: unambiguous by construction, checked on hand-made and real scenes."""

from pathlib import Path

import numpy as np
import pytest
from prunekit import InputError

from prunekit_voxel.expressions import colour_name, generate, real_phrasings
from prunekit_voxel.scannet import load_scannet

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _room():
    names = ["chair", "chair", "chair", "table", "bed", "otherfurniture"]
    boxes = np.array([[1.0, 0, 0.4, 0.5, 0.5, 0.8],    # chair next to the table
                      [3.0, 0, 0.4, 0.5, 0.5, 0.8],
                      [6.0, 0, 0.4, 0.8, 0.8, 1.0],    # far away and the largest
                      [0.0, 0, 0.4, 1.2, 0.8, 0.8],
                      [0.0, 5, 0.3, 2.0, 1.6, 0.6],
                      [2.0, 2, 0.5, 1.0, 1.0, 1.0]])
    colours = np.array([[0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [0.1, 0.1, 0.12], [0.45, 0.3, 0.2], [0.9, 0.9, 0.9],
                        [0.5, 0.5, 0.5]])
    return names, boxes, colours


def test_expected_expressions_in_a_hand_made_room():
    exprs = generate(*_room())
    got = {(e.kind, e.target, e.anchor) for e in exprs}
    assert ("unique", 3, None) in got and ("unique", 4, None) in got and ("unique", 5, None) in got
    assert ("colour", 0, None) in got  # the only white chair
    assert not any(k == "colour" and t in (1, 2) for k, t, _ in got)  # two black chairs: ambiguous
    assert ("size", 2, None) in got  # largest chair by 0.64 / 0.2 volume
    assert not any(k == "size" and t in (0, 1) for k, t, _ in got)  # smallest is a tie (0.2 vs 0.2)
    assert ("closest", 0, 3) in got and ("farthest", 2, 3) in got  # relative to the (unique) table
    assert all(a != 5 for _, _, a in got)  # catch-all classes are never anchors
    text = {e.text.lower() for e in exprs}
    assert any(t.endswith("chair closest to the table.") for t in text)
    assert any("piece of furniture" in t for t in text)


def test_margins_suppress_near_ties():
    names, boxes, colours = _room()
    boxes = boxes.copy()
    boxes[1, 0] = 1.05 - 2.1  # chair 1 now as close to the table (1.05 m) as chair 0 (1.0 m)
    exprs = generate(names, boxes, colours, margin=0.3)
    assert not any(e.kind == "closest" for e in exprs)


def test_colour_names():
    assert colour_name((1, 1, 1)) == "white" and colour_name((0.05, 0.0, 0.0)) == "black"
    assert colour_name((0.8, 0.1, 0.1)) == "red"


def test_scannet_expressions_are_unambiguous():
    if not (DATA / "scannet" / "scene0000_00_vert_all.npy").exists():
        pytest.skip("real ScanNet scan not found")
    scan = load_scannet(DATA / "scannet")
    colours = np.stack([scan.colors[scan.instance == i].mean(0) for i in scan.box_instance])
    names = scan.box_names
    exprs = generate(names, scan.boxes, colours)
    kinds = {e.kind for e in exprs}
    assert {"unique", "closest"} <= kinds and len(exprs) >= 10
    for e in exprs:
        if e.kind in ("closest", "farthest"):
            same = [k for k, n in enumerate(names) if n == names[e.target]]
            d = np.linalg.norm(scan.boxes[same, :3] - scan.boxes[e.anchor, :3], axis=1)
            assert same[int(d.argmin() if e.kind == "closest" else d.argmax())] == e.target
            assert names.count(names[e.anchor]) == 1
        if e.kind == "unique":
            assert names.count(names[e.target]) == 1


def test_real_phrasings():
    path = DATA / "grounding" / "vigil3d_scannet.csv"
    if not path.exists():
        pytest.skip("real grounding phrasings not found")
    rows = real_phrasings(path)
    assert len(rows) > 100 and all(r["description"] for r in rows)
    assert not any(r["scene_id"] == "scene0000_00" for r in rows)


def test_real_phrasings_bad_file(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="ScanRefer-style"):
        real_phrasings(tmp_path / "x.csv")
