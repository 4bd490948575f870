"""Voxelisation from numpy arrays, meshes and (with open3d) .ply/.pcd/.obj files."""

import numpy as np
import pytest
import torch
from prunekit import InputError

from prunekit_voxel.io import read_points, write_points
from prunekit_voxel.voxelize import sample_mesh, voxel_centers, voxelize


def test_voxelize_means_and_floor_convention():
    pts = np.array([[0.01, 0.01, 0.01], [0.09, 0.02, 0.03], [-0.01, 0.0, 0.0], [0.15, 0.0, 0.0]])
    feats = np.array([[1.0], [3.0], [5.0], [7.0]])
    vox, inv = voxelize(pts, 0.1, feats)
    # floor from the origin: -0.01 falls in voxel -1, 0.15 in voxel 1
    got = {tuple(c): float(f) for c, f in zip(vox.coords.tolist(), vox.feats[:, 0])}
    assert got == {(0, 0, 0): 2.0, (-1, 0, 0): 5.0, (1, 0, 0): 7.0}
    assert torch.equal(vox.coords[inv], torch.floor(torch.tensor(pts) / 0.1).long())
    torch.testing.assert_close(voxel_centers(vox.coords, 0.1)[vox.lookup(torch.tensor([[1, 0, 0]]))],
                               torch.tensor([[0.15, 0.05, 0.05]]))


def test_voxelize_rejects_bad_input():
    with pytest.raises(ValueError, match="N x 3"):
        voxelize(np.zeros((4, 2)), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        voxelize(np.array([[0.0, np.nan, 0.0]]), 0.1)
    with pytest.raises(ValueError, match="> 0"):
        voxelize(np.zeros((1, 3)), 0.0)


def test_sample_mesh_lies_on_the_surface_and_follows_area():
    # unit square in z=0 (area 1, two triangles) plus a tiny triangle at z=1 (area 0.005)
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0.1, 0, 1], [0, 0.1, 1]], float)
    t = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    pts, col = sample_mesh(v, t, 20_000, colors=np.repeat(v[:, 2:3], 3, 1))
    top = pts[:, 2] > 0.5
    assert 0.002 < top.mean() < 0.009  # area share 0.005 / 1.005
    assert pts[~top, :2].min() >= 0 and pts[~top, :2].max() <= 1 and np.allclose(pts[~top, 2], 0)
    assert np.all(pts[top, 0] + pts[top, 1] <= 0.1 + 1e-9)  # inside the small triangle
    np.testing.assert_allclose(col[:, 0], pts[:, 2])  # colour interpolated like position
    with pytest.raises(ValueError):
        sample_mesh(v, np.array([[0, 1, 99]]), 10)


def test_numpy_io_roundtrip(tmp_path):
    pts = np.random.default_rng(0).random((50, 3))
    col = np.random.default_rng(1).random((50, 3))
    write_points(tmp_path / "a.npy", pts, col)
    p, c = read_points(tmp_path / "a.npy")
    np.testing.assert_allclose(p, pts)
    np.testing.assert_allclose(c, col)
    np.save(tmp_path / "rgb255.npy", np.hstack([pts, 255 * col]))
    np.testing.assert_allclose(read_points(tmp_path / "rgb255.npy")[1], col)
    np.save(tmp_path / "bad.npy", np.zeros((5, 4)))
    with pytest.raises(InputError, match="bad.npy.*N x 3"):
        read_points(tmp_path / "bad.npy")
    with pytest.raises(InputError, match="no such file"):
        read_points(tmp_path / "missing.npy")
    (tmp_path / "x.xyz").write_text("1 2 3\n")
    with pytest.raises(InputError, match="unsupported suffix"):
        read_points(tmp_path / "x.xyz")


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_open3d_point_cloud_roundtrip(tmp_path, suffix):
    pytest.importorskip("open3d")
    pts = np.random.default_rng(0).random((40, 3))
    col = np.random.default_rng(1).random((40, 3))
    write_points(tmp_path / f"a{suffix}", pts, col)
    p, c = read_points(tmp_path / f"a{suffix}")
    np.testing.assert_allclose(p, pts, atol=1e-6)
    np.testing.assert_allclose(c, col, atol=1 / 255)


def test_open3d_mesh_is_sampled(tmp_path):
    o3d = pytest.importorskip("open3d")
    mesh = o3d.geometry.TriangleMesh.create_box(2.0, 1.0, 0.5)
    o3d.io.write_triangle_mesh(str(tmp_path / "box.obj"), mesh)
    pts, _ = read_points(tmp_path / "box.obj", mesh_samples=3000)
    assert pts.shape == (3000, 3)
    assert np.allclose(pts.min(0), 0, atol=1e-3) and np.allclose(pts.max(0), [2.0, 1.0, 0.5], atol=1e-3)
    # every sample lies on a face of the box: one coordinate sits at its min or max
    on_face = np.isclose(pts, 0, atol=1e-6) | np.isclose(pts, [2.0, 1.0, 0.5], atol=1e-6)
    assert on_face.any(1).all()
    vox, _ = voxelize(pts, 0.25)
    inner = torch.tensor([[x, y, 1] for x in range(1, 7) for y in range(1, 3)])
    assert not vox.contains(inner).any()  # a hollow surface: no voxel strictly inside the box
    assert vox.contains(torch.tensor([[3, 2, 0], [3, 2, 2], [0, 2, 1]])).all()  # bottom, top, side faces
