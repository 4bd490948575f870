"""transforms.json loading (missing images skipped with a warning), rays, and the real fox capture."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from prunekit import InputError
from prunekit_hashgrid.data import camera_rays, load_transforms, look_at, split
from ...shared_data import DATA

FOX = DATA / "fox" / "transforms.json"


def _capture(tmp_path, n_frames=3, present=(0, 2)):
    frames = []
    for i in range(n_frames):
        eye = torch.tensor([3.0 * math.cos(i), 3.0 * math.sin(i), 1.0], dtype=torch.float64)
        m = torch.eye(4, dtype=torch.float64)
        m[:3] = look_at(eye, torch.zeros(3, dtype=torch.float64))
        frames.append({"file_path": f"images/{i}.png", "transform_matrix": m.tolist()})
        if i in present:
            (tmp_path / "images").mkdir(exist_ok=True)
            Image.fromarray(np.full((16, 24, 3), 40 * i, np.uint8)).save(tmp_path / "images" / f"{i}.png")
    meta = {"fl_x": 20.0, "fl_y": 20.0, "cx": 12.0, "cy": 8.0, "w": 24, "h": 16, "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    return tmp_path / "transforms.json"


def test_missing_images_are_skipped_with_a_warning(tmp_path):
    path = _capture(tmp_path)
    with pytest.warns(UserWarning, match="1 of 3 frames have no image"):
        v = load_transforms(path, downscale=2)
    assert len(v) == 2 and v.images.shape == (2, 8, 12, 3) and v.names == ["images/0.png", "images/2.png"]
    assert torch.allclose(v.rays_d.norm(dim=-1), torch.ones(1), atol=1e-5)
    # the cameras look at the origin, which the optical-axis centre puts at the cube's centre
    centre_ray = v.rays_o[0, 4, 6] + v.rays_d[0, 4, 6] * (v.rays_o[0, 4, 6] - 0.5).norm()
    assert torch.allclose(centre_ray, torch.full((3,), 0.5), atol=0.05)


@pytest.mark.parametrize("content,match", [("{not json", "not valid JSON"), ('{"frames": []}', "non-empty list"),
                                           ('{"w": 4, "h": "x", "fl_x": 1, "frames": [{}]}', "'h'")])
def test_bad_transforms(tmp_path, content, match):
    p = tmp_path / "transforms.json"
    p.write_text(content)
    with pytest.raises(InputError, match=match):
        load_transforms(p)


def test_pinhole_ray_through_principal_point_is_the_optical_axis():
    c2w = look_at(torch.tensor([0.0, -2.0, 0.0], dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    o, d = camera_rays(c2w, 3, 3, 2.0, 2.0, 1.5, 1.5, dist=(0.1, -0.05, 0.001, 0.002))
    assert torch.allclose(d[1, 1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


@pytest.mark.skipif(not FOX.exists(), reason="shared fox capture not present")
def test_real_fox_capture_loads():
    with pytest.warns(UserWarning, match="17 of 67 frames"):
        v = load_transforms(FOX, downscale=40)
    tr, te = split(v)
    assert len(v) == 50 and len(te) == 6 and v.images.shape[1:] == (48, 27, 3)
    assert 0.05 < float(v.images.mean()) < 0.95
