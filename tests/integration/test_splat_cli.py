"""`prunekit prune / info / eval` on scene files, end to end through the CLI."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from prunekit_splat.formats import read_scene, write_scene
from prunekit_splat.scene import GaussianScene

FAST = ["--views", "4", "--resolution", "32", "--no-progress"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "prunekit", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    n = 2000
    theta = torch.rand(n, generator=g) * 2 * math.pi
    z = torch.rand(n, generator=g) * 2 - 1
    means = torch.stack([torch.cos(theta) * (1 - z * z).sqrt(), torch.sin(theta) * (1 - z * z).sqrt(), z], 1)
    sc = GaussianScene(means, torch.randn(n, 4, generator=g), torch.full((n, 3), math.log(0.05)),
                       torch.randn(n, generator=g), torch.randn(n, 3, generator=g) * 0.5, torch.zeros(n, 3, 3))
    path = tmp_path_factory.mktemp("scene") / "sphere.ply"
    write_scene(sc, path)
    return path


@pytest.mark.parametrize("method", ["sundae", "opacity", "random", "radsplat", "lightgaussian"])
def test_prune_each_method(scene_file, tmp_path, method):
    out = tmp_path / "out.ply"
    r = run("prune", scene_file, "-m", method, "--keep", "0.1", "-o", out, "--json", *FAST)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["before"]["gaussians"] == 2000 and rep["after"]["gaussians"] == 200
    assert len(read_scene(out)) == 200


def test_merge_count_and_report_dir(scene_file, tmp_path):
    out, rep_dir = tmp_path / "m.splat", tmp_path / "rep"
    r = run("prune", scene_file, "-m", "radsplat", "--count", "150", "--merge", "-o", out, "--report", rep_dir, *FAST)
    assert r.returncode == 0, r.stderr
    assert len(read_scene(out)) == 150
    assert json.loads((rep_dir / "report.json").read_text())["after"]["gaussians"] == 150
    assert (rep_dir / "before_after.png").stat().st_size > 0


def test_info_and_eval(scene_file, tmp_path):
    r = run("info", scene_file, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["gaussians"] == 2000 and d["sh_degree"] == 1
    out = tmp_path / "o.ply"
    assert run("prune", scene_file, "-m", "opacity", "--keep", "0.5", "-o", out, *FAST).returncode == 0
    e = run("eval", scene_file, out, "--json", "--eval-views", "2", "--resolution", "32")
    assert e.returncode == 0, e.stderr
    m = json.loads(e.stdout)["metrics"]
    same = json.loads(run("eval", scene_file, scene_file, "--json", "--eval-views", "2", "--resolution", "32").stdout)
    assert same["metrics"]["psnr"] is None or same["metrics"]["psnr"] > 100  # inf is written as null (strict JSON)
    assert 5 < m["psnr"] < 60 and m["ssim"] < 1


@pytest.mark.parametrize("args,code,msg", [
    (["--keep", "0"], 2, "keep ratio"),
    (["--keep", "1.5"], 2, "keep ratio"),
    (["--keep", "abc"], 2, ""),
    (["--count", "x"], 2, ""),
    (["--keep", "0.1", "--band-weight", "2"], 2, "band-weight"),
    (["--keep", "0.1", "--views", "zero"], 2, "--views"),
    (["--keep", "0.1", "--bogus-option", "1"], 2, ("unknown option --bogus-option", "--band-weight", "--views")),
])
def test_bad_options(scene_file, tmp_path, args, code, msg):
    out = tmp_path / "out.ply"
    r = run("prune", scene_file, "-m", "sundae", *args, "-o", out)
    assert r.returncode == code, r.stderr
    # a tuple: every part must appear (an unknown option lists the plugin's and the domain's options)
    assert all(m in r.stderr for m in (msg if isinstance(msg, tuple) else (msg,))) and "Traceback" not in r.stderr
    assert not out.exists()


def test_bad_files_leave_nothing_behind(scene_file, tmp_path):
    data = scene_file.read_bytes()
    bad = tmp_path / "trunc.ply"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.ply"
    out.write_bytes(b"precious")
    r = run("prune", bad, "-m", "sundae", "--keep", "0.1", "-o", out)
    assert r.returncode == 1 and "trunc.ply" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ply", "trunc.ply"]
    cams = tmp_path / "cameras.json"
    cams.write_text("{not json")
    r = run("prune", scene_file, "-m", "radsplat", "--keep", "0.1", "--cameras", cams, "-o", tmp_path / "x.ply")
    assert r.returncode == 1 and "cameras.json" in r.stderr and not (tmp_path / "x.ply").exists()


def test_refuses_to_overwrite_input(scene_file, tmp_path):
    before = scene_file.read_bytes()
    r = run("prune", scene_file, "-m", "opacity", "--keep", "0.5", "-o", scene_file)
    assert r.returncode == 2 and "overwrite" in r.stderr
    assert scene_file.read_bytes() == before


def _one_line(r) -> bool:
    return "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_output_paths_are_checked_before_any_work(scene_file, tmp_path):
    folder = tmp_path / "d.ply"
    folder.mkdir()
    r = run("prune", scene_file, "-m", "opacity", "--keep", "0.5", "-o", folder)
    assert r.returncode == 2 and "is a directory" in r.stderr and _one_line(r), r.stderr
    report_file = tmp_path / "report.txt"
    report_file.write_text("precious")
    r = run("prune", scene_file, "-m", "opacity", "--keep", "0.5", "-o", tmp_path / "o.ply", "--report", report_file)
    assert r.returncode == 2 and "--report needs a folder" in r.stderr and _one_line(r), r.stderr
    assert report_file.read_text() == "precious" and not (tmp_path / "o.ply").exists()
    r = run("prune", scene_file, "-m", "opacity", "--keep", "0.5", "-o", tmp_path / "o.ckpt")  # readable, not writable
    assert r.returncode == 2 and _one_line(r), r.stderr
    assert f"{tmp_path / 'o.ckpt'}: cannot write .ckpt files (writable: .ply, .pt, .splat files)" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.ply", "report.txt"]


def test_repaired_input_warns_in_one_line(scene_file, tmp_path):
    sc = read_scene(scene_file)
    sc.means[:5] = float("nan")
    messy = tmp_path / "messy.ply"
    write_scene(sc, messy)
    r = subprocess.run([sys.executable, "-m", "prunekit", "info", str(messy)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("prunekit: warning: ") and "UserWarning" not in r.stderr and _one_line(r), r.stderr
