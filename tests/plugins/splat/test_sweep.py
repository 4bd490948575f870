"""`prunekit prune --sweep R1,R2,... --report DIR`: one output per ratio, sweep.json, PSNR-vs-keep PNG."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from prunekit_splat.formats import read_scene, write_scene
from prunekit_splat.scene import GaussianScene
from prunekit_splat.sweep import parse_ratios

FAST = ["--views", "4", "--resolution", "32", "--eval-views", "3", "--no-progress"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "prunekit", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    g = torch.Generator().manual_seed(1)
    n = 600
    means = torch.randn(n, 3, generator=g)
    means = means / means.norm(dim=1, keepdim=True)
    sc = GaussianScene(means, torch.randn(n, 4, generator=g), torch.full((n, 3), math.log(0.08)),
                       torch.randn(n, generator=g) + 1, torch.randn(n, 3, generator=g), torch.zeros(n, 0, 3))
    path = tmp_path_factory.mktemp("scene") / "ball.ply"
    write_scene(sc, path)
    return path


def test_sweep_writes_each_ratio_and_plot(scene_file, tmp_path):
    rep = tmp_path / "rep"
    r = run("prune", scene_file, "-m", "opacity", "--keep", "0.5", "-o", tmp_path / "half.ply", "--report", rep,
            "--sweep", "0.3,0.1,1.0", *FAST)
    assert r.returncode == 0, r.stderr
    rows = json.loads((rep / "sweep.json").read_text())["rows"]
    assert [row["keep"] for row in rows] == [0.1, 0.3, 1.0]  # sorted
    for row, n in zip(rows, (60, 180, 600)):
        assert row["gaussians"] == n and len(read_scene(row["file"])) == n
    # keeping everything reproduces the original exactly; fewer Gaussians cost quality
    assert rows[2]["psnr"] == 99.0
    assert rows[0]["psnr"] < rows[1]["psnr"] < rows[2]["psnr"]
    with Image.open(rep / "quality_vs_keep.png") as im:
        assert im.size[0] > 100 and im.size[1] > 100
    assert json.loads((rep / "report.json").read_text())["extra"]["sweep"][0]["gaussians"] == 60
    assert len(read_scene(tmp_path / "half.ply")) == 300  # the main output is unaffected


def test_sweep_uses_the_same_scores_as_the_main_prune(scene_file, tmp_path):
    rep = tmp_path / "rep"
    r = run("prune", scene_file, "-m", "random", "--keep", "0.2", "-o", tmp_path / "a.ply", "--report", rep,
            "--sweep", "0.2", *FAST)
    assert r.returncode == 0, r.stderr
    a, b = read_scene(tmp_path / "a.ply"), read_scene(rep / "ball_keep0.2.ply")
    assert torch.equal(a.means, b.means)


@pytest.mark.parametrize("bad", ["abc", "0,0.5"])
def test_bad_sweep_is_a_one_line_error(scene_file, tmp_path, bad):
    r = run("prune", scene_file, "-m", "opacity", "--keep", "0.5", "-o", tmp_path / "x.ply", "--report",
            tmp_path / "rep", "--sweep", bad, *FAST)
    assert r.returncode != 0
    assert "--sweep" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.ply").exists()


def test_parse_ratios():
    assert parse_ratios("0.5, 0.1,0.5") == [0.1, 0.5]
    assert parse_ratios(None) == []
    for bad in ("0.1,-2", "1.5", ",", "x"):
        with pytest.raises(ValueError, match="--sweep"):
            parse_ratios(bad)


def test_sweep_without_report_dir_says_so(scene_file, tmp_path):
    r = run("prune", scene_file, "-m", "opacity", "--keep", "0.5", "-o", tmp_path / "x.ply", "--json",
            "--sweep", "0.1", *FAST)
    assert r.returncode == 0, r.stderr
    assert any("--sweep was not run" in n for n in json.loads(r.stdout)["notes"])
