"""Camera loaders (INRIA cameras.json, instant-ngp/nerfstudio transforms.json), writer, synthesis."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from prunekit.errors import InputError
from prunekit_splat.cameras import Camera, load_cameras, synthesize_cameras, write_cameras_json
from prunekit_splat.scene import GaussianScene
from ...shared_data import DATA

FOX = DATA / "fox" / "transforms.json"


def to_cam(cam: Camera, p_world) -> torch.Tensor:
    p = torch.as_tensor(p_world, dtype=torch.float32)
    return cam.viewmat[:3, :3] @ p + cam.viewmat[:3, 3]


def rot(axis: str, deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    m = {"x": [[1, 0, 0], [0, c, -s], [0, s, c]], "y": [[c, 0, s], [0, 1, 0], [-s, 0, c]],
         "z": [[c, -s, 0], [s, c, 0], [0, 0, 1]]}[axis]
    return torch.tensor(m, dtype=torch.float64)


def write_transforms(folder: Path, frames: list[dict], **top) -> Path:
    (folder / "images").mkdir(exist_ok=True)
    for fr in frames:
        if fr.pop("_exists", True):
            (folder / fr["file_path"]).write_bytes(b"")
    path = folder / "transforms.json"
    path.write_text(json.dumps({**top, "frames": frames}))
    return path


def test_transforms_opengl_to_opencv(tmp_path):
    # GL camera at (0, 0, 5) with identity rotation looks along -z, +y up in the image.
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[2, 3] = 5
    R = rot("y", 30)
    c2w2 = torch.eye(4, dtype=torch.float64)
    c2w2[:3, :3] = R
    c2w2[:3, 3] = R @ torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)
    frames = [{"file_path": "images/a.png", "transform_matrix": c2w.tolist()},
              {"file_path": "images/b.png", "transform_matrix": c2w2.tolist(), "w": 64, "h": 32}]
    path = write_transforms(tmp_path, frames, camera_angle_x=math.radians(90), w=100, h=50)
    a, b = load_cameras(path)
    assert torch.allclose(to_cam(a, [0, 0, 0]), torch.tensor([0.0, 0.0, 5.0]), atol=1e-6)  # in front: z > 0
    assert float(to_cam(a, [0, 1, 0])[1]) < 0  # world up is image up = OpenCV -y
    assert float(to_cam(a, [1, 0, 0])[0]) > 0  # right stays right
    assert torch.allclose(a.position, torch.tensor([0.0, 0.0, 5.0]))
    assert a.width == 100 and a.height == 50 and abs(float(a.K[0, 0]) - 50.0) < 1e-4  # 0.5 w / tan(45 deg)
    assert (a.K[0, 2], a.K[1, 2]) == (50.0, 25.0) and a.name == "a"
    assert (b.width, b.height) == (64, 32) and abs(float(b.K[0, 0]) - 32.0) < 1e-4  # per-frame w/h override
    assert torch.allclose(to_cam(b, [0, 0, 0]), torch.tensor([0.0, 0.0, 4.0]), atol=1e-5)
    assert abs(float(torch.det(b.viewmat[:3, :3])) - 1) < 1e-5


def test_transforms_focal_and_principal_point_keys(tmp_path):
    frames = [{"file_path": "images/a.jpg", "transform_matrix": torch.eye(4).tolist()}]
    path = write_transforms(tmp_path, frames, fl_x=300.0, fl_y=310.0, cx=10.0, cy=20.0, w=40, h=30)
    (cam,) = load_cameras(tmp_path)  # the folder works too
    assert cam.K.tolist() == [[300.0, 0.0, 10.0], [0.0, 310.0, 20.0], [0.0, 0.0, 1.0]]
    assert cam.image_path == str(tmp_path / "images" / "a.jpg")
    path.write_text(json.dumps({"w": 4, "h": 4, "frames": [{"file_path": "images/a.jpg",
                                                            "transform_matrix": torch.eye(4).tolist()}]}))
    with pytest.raises(InputError, match="focal"):
        load_cameras(path)


def test_missing_images_are_skipped_with_warning(tmp_path):
    frames = [{"file_path": f"images/{i}.png", "transform_matrix": torch.eye(4).tolist(), "_exists": i % 3 != 0}
              for i in range(9)]
    path = write_transforms(tmp_path, frames, fl_x=10.0, w=8, h=8)
    with pytest.warns(UserWarning, match="skipped 3 of 9 frames"):
        cams = load_cameras(path)
    assert [c.name for c in cams] == ["1", "2", "4", "5", "7", "8"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_cameras(path, require_images=False)) == 9
    for c in cams:
        Path(c.image_path).unlink()
    with pytest.raises(InputError, match="none of the 9 frames"), pytest.warns(UserWarning):
        load_cameras(path)


@pytest.mark.skipif(not FOX.exists(), reason="shared data absent")
def test_fox_real_capture():
    with pytest.warns(UserWarning, match="skipped 17 of 67 frames"):
        cams = load_cameras(FOX)
    assert len(cams) == 50 and all(Path(c.image_path).is_file() for c in cams)
    assert (cams[0].width, cams[0].height) == (1080, 1920) and abs(float(cams[0].K[0, 0]) - 1375.52) < 1e-3
    # The object the capture circles: the point nearest to all optical axes must be in front of every camera.
    A, b = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for c in cams:
        d = c.viewmat[2, :3].double()  # optical axis (camera +z) in world coordinates
        P = torch.eye(3, dtype=torch.float64) - torch.outer(d, d)
        A += P
        b += P @ c.position.double()
    target = torch.linalg.solve(A, b)
    depths = torch.stack([to_cam(c, target.float())[2] for c in cams])
    assert bool((depths > 0).all())
    assert bool((torch.stack([to_cam(c, target.float())[:2].norm() / to_cam(c, target.float())[2] for c in cams])
                 < 0.5).all())  # and roughly centred in view


def test_inria_cameras_json_and_round_trip(tmp_path):
    R = rot("x", 20) @ rot("z", 40)  # camera-to-world, OpenCV axes
    pos = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    entry = {"id": 0, "img_name": "view0", "width": 200, "height": 100, "position": pos.tolist(),
             "rotation": R.tolist(), "fx": 150.0, "fy": 140.0}
    (tmp_path / "cameras.json").write_text(json.dumps([entry]))
    (cam,) = load_cameras(tmp_path / "cameras.json")
    ahead = pos + 2.5 * R[:, 2]  # 2.5 units along the camera's +z
    assert torch.allclose(to_cam(cam, ahead.float()), torch.tensor([0.0, 0.0, 2.5]), atol=1e-5)
    assert torch.allclose(cam.position.double(), pos, atol=1e-5)
    assert cam.K.tolist() == [[150.0, 0.0, 100.0], [0.0, 140.0, 50.0], [0.0, 0.0, 1.0]] and cam.name == "view0"
    off = Camera(cam.viewmat, torch.tensor([[150.0, 0, 90], [0, 140.0, 55], [0, 0, 1]]), 200, 100, "off")
    write_cameras_json([cam, off], tmp_path / "out.json")
    saved = json.loads((tmp_path / "out.json").read_text())
    assert "cx" not in saved[0] and saved[1]["cx"] == 90.0
    back = load_cameras(tmp_path / "out.json")
    for a, b in zip([cam, off], back):
        assert torch.allclose(a.viewmat, b.viewmat, atol=1e-5) and torch.equal(a.K, b.K)


@pytest.mark.parametrize("content, match", [
    ("{not json", "JSON"),
    ('{"x": 1}', "frames"),
    ('[{"width": 10, "height": 10, "position": [0, 0], "rotation": [[1,0,0],[0,1,0],[0,0,1]], "fx": 1, "fy": 1}]',
     "position"),
    ('[{"width": 10, "height": 10, "position": [0, 0, 0], "rotation": [[1,0,0],[0,1,0],[0,0,1]], "fx": "a", "fy": 1}]',
     "fx"),
    ('{"fl_x": 1, "w": 2, "h": 2, "frames": [{"file_path": "a.png", "transform_matrix": [[1, 0], [0, 1]]}]}',
     "transform_matrix"),
    ('{"frames": 3}', "frames"),
])
def test_bad_camera_files(tmp_path, content, match):
    path = tmp_path / "cams.json"
    path.write_text(content)
    with pytest.raises(InputError, match=match) as e:
        load_cameras(path)
    assert str(path) in str(e.value)
    with pytest.raises(InputError, match="not found"):
        load_cameras(tmp_path / "missing.json")


def blob(n: int = 2000) -> GaussianScene:
    g = torch.Generator().manual_seed(0)
    means = torch.randn(n, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([5.0, -1.0, 2.0])
    means[:5] = 1e4  # far outliers must not move the robust centre
    z = torch.zeros(n, 3)
    return GaussianScene(means, torch.tensor([1.0, 0, 0, 0]).repeat(n, 1), z, torch.zeros(n), z, None)


def test_synthesized_cameras_cover_sphere_and_look_at_centre():
    scene = blob()
    dists = (0.8, 1.2, 1.8, 2.5)
    cams = synthesize_cameras(scene, n=64, width=80, height=60, fov_deg=60, distances=dists, seed=3)
    lo, hi = scene.bounds(0.01)
    centre, r = (lo + hi) / 2, float((hi - lo).norm() / 2)
    assert len(cams) == 64 and len({c.name for c in cams}) == 64
    offsets = torch.stack([c.position - centre for c in cams])
    ratio = offsets.norm(dim=1) / r
    assert {round(float(x), 3) for x in ratio} == {round(d, 3) for d in dists}
    octants = {tuple((o > 0).tolist()) for o in offsets}
    assert len(octants) == 8
    for c in cams:
        p = c.K @ to_cam(c, centre)
        assert float(p[2]) > 0 and torch.allclose(p[:2] / p[2], torch.tensor([40.0, 30.0]), atol=1e-3)
        assert abs(float(torch.det(c.viewmat[:3, :3])) - 1) < 1e-5
    assert abs(float(cams[0].K[0, 0]) - 40 / math.tan(math.radians(30))) < 1e-3


def test_synthesized_cameras_deterministic_per_seed():
    scene = blob(500)
    a = synthesize_cameras(scene, n=10, seed=1)
    b = synthesize_cameras(scene, n=10, seed=1)
    c = synthesize_cameras(scene, n=10, seed=2)
    assert all(torch.equal(x.viewmat, y.viewmat) for x, y in zip(a, b))
    assert not all(torch.allclose(x.viewmat, y.viewmat) for x, y in zip(a, c))
    assert len(synthesize_cameras(GaussianScene.empty(), n=4)) == 4


def test_blender_style_size_from_image_and_bad_values(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "train").mkdir()
    Image.new("RGB", (24, 16)).save(tmp_path / "train" / "r_0.png")
    frame = {"file_path": "./train/r_0", "transform_matrix": torch.eye(4).tolist()}
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": math.radians(90), "frames": [frame]}))
    (cam,) = load_cameras(tmp_path / "transforms.json")  # no w/h, no suffix: size read from the PNG
    assert (cam.width, cam.height) == (24, 16) and abs(float(cam.K[0, 0]) - 12.0) < 1e-4
    bad = {"frames": [dict(frame, transform_matrix=torch.zeros(4, 4).tolist())], "fl_x": 5, "w": 24, "h": 16}
    (tmp_path / "transforms.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="singular"):
        load_cameras(tmp_path / "transforms.json")
    for top, match in [({"fl_x": -5, "w": 24, "h": 16}, "focal"), ({"fl_x": 5, "w": 0, "h": 16}, "size")]:
        (tmp_path / "transforms.json").write_text(json.dumps({"frames": [frame], **top}))
        with pytest.raises(InputError, match=match):
            load_cameras(tmp_path / "transforms.json")
