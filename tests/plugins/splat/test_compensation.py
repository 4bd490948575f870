"""SUNDAE's image-space compensation net: identity at start, learns a gain, files, and the CLI path."""

import pytest
import torch

import prunekit
from prunekit import InputError, UsageError
from prunekit_splat.compensation import (CompensationNet, apply, load_compensation, save_compensation, sidecar_path,
                                         train_compensation)
from prunekit_splat.formats import write_scene
from prunekit_splat.metrics import psnr
from .tiny_scenes import random_scene


def test_untrained_net_is_the_identity_on_odd_sizes():
    net = CompensationNet(levels=4, base_channels=4)
    x = torch.rand(37, 29, 3)
    assert torch.equal(net(x), x)
    assert net(torch.rand(2, 37, 29, 3)).shape == (2, 37, 29, 3)
    with pytest.raises(ValueError):
        CompensationNet(levels=0)


def test_training_learns_a_spatial_gain():
    g = torch.Generator().manual_seed(0)
    targets = [torch.rand(32, 32, 3, generator=g) * 0.8 + 0.1 for _ in range(4)]
    ramp = torch.linspace(0.5, 0.9, 32)[None, :, None]  # darker on the left, like holes after pruning
    renders = [t * ramp for t in targets]
    before = sum(psnr(r, t) for r, t in zip(renders, targets)) / 4
    net = train_compensation(renders, targets, steps=80, base_channels=8, lr=3e-3, crop=None, batch=2)
    after = sum(psnr(apply(net, r), t) for r, t in zip(renders, targets)) / 4
    assert after > before + 3.0, (before, after)


def test_file_roundtrip_and_scene_fingerprint(tmp_path):
    scene, other = random_scene(150, opacity_logit=1.5), random_scene(150, seed=1, opacity_logit=1.5)
    net = train_compensation([torch.rand(16, 16, 3)], [torch.rand(16, 16, 3)], steps=3, base_channels=4, levels=2)
    path = sidecar_path(tmp_path / "out.ply")
    assert path.name == "out.compensation.safetensors"
    save_compensation(net, path, scene)
    back = load_compensation(path, scene)
    x = torch.rand(20, 24, 3)
    assert (back.levels, back.base_channels) == (2, 4)
    assert torch.allclose(back(x), net(x))
    with pytest.raises(InputError, match="another scene"):
        load_compensation(path, other)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match="safetensors"):
        load_compensation(path)


def test_prune_compensate_eval_and_stale_sidecar(tmp_path):
    src, out = tmp_path / "scene.ply", tmp_path / "pruned.ply"
    write_scene(random_scene(150, opacity_logit=1.5), src)
    common = dict(views=8, resolution=32, eval_views=6, progress=False)
    report, pruned = prunekit.prune_file(src, "opacity", prunekit.Budget(keep_ratio=0.3), out, compensate=60,
                                         compensation_channels=8, **common)
    side = sidecar_path(out)
    assert side.is_file() and len(pruned) == 45
    assert any("compensation" in n for n in report.notes)
    argv = ["--resolution", "32", "--eval-views", "6"]
    with_net = prunekit.eval_files(src, out, argv).metrics
    assert with_net["compensation_ms"] > 0 and with_net["render_ms"] > 0
    side.rename(tmp_path / "aside.safetensors")
    without = prunekit.eval_files(src, out, argv).metrics
    assert "compensation_ms" not in without
    # evaluated on views that differ from the training views, the gain still helps
    assert with_net["psnr"] > without["psnr"], (with_net["psnr"], without["psnr"])
    # a later output without --compensate leaves the old sidecar stale: eval refuses it
    (tmp_path / "aside.safetensors").rename(side)
    report2, _ = prunekit.prune_file(src, "opacity", prunekit.Budget(keep_ratio=0.5), out, **common)
    assert any("earlier output" in n for n in report2.notes)
    with pytest.raises(InputError, match="another scene"):
        prunekit.eval_files(src, out, argv)
    with pytest.raises(UsageError, match="compensate"):
        prunekit.prune_file(src, "opacity", prunekit.Budget(keep_ratio=0.5), None, compensate=-1, **common)
