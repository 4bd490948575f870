"""The small TSP3D network: pruning shrinks the neck, the baseline path keeps everything."""

import torch

from prunekit_voxel.tgp import tgp_keep

from .conftest import small_net, small_scene


def test_baseline_and_pruned_paths():
    vox, net = small_scene(), small_net()
    text = torch.randn(4, 24)
    with torch.no_grad():
        base = net(vox, text, voxel_size=0.1, prune=False)
        # stride-8 TGP: every voxel looks prunable (only the floor survives); stride-4 TGP keeps all
        net.tgp[0].head.bias.fill_(20.0)
        net.tgp[1].head.bias.fill_(-20.0)
        pruned = net(vox, text, voxel_size=0.1, prune=True, cba=False, min_keep=2)
    c, p = base["counts"], pruned["counts"]
    assert c["neck_s8"] == c["enc_s8"] and c["head_s2"] == c["enc_s2"] and base["tgp"] == []
    assert p["neck_s8"] == 2  # floor only: everything else scored prunable at 0.7
    assert p["neck_s4"] <= 2 * 8 and p["head_s2"] < c["head_s2"]
    # survivors upsample only where their parent was kept, and stay on encoder sites
    t8 = pruned["tgp"][0]
    kept8 = torch.floor(t8["xyz"][tgp_keep(t8["logits"], threshold=0.7, min_keep=2)] / 0.8).long()
    s2 = pruned["voxels"]
    assert set(map(tuple, (s2.coords // 4).tolist())) == set(map(tuple, kept8.tolist()))
    assert pruned["box"].shape == (6,) and bool((pruned["box"][3:] > 0).all())


def test_training_budget_counts_and_cba_adds_back():
    vox, net = small_scene(), small_net()
    text = torch.randn(4, 24)
    out = net(vox, text, voxel_size=0.1, keep_counts=(3, 5), cba=True, cba_threshold=0.0)
    assert out["counts"]["neck_s8"] == 3 and out["counts"]["neck_s4"] == 5
    res = out["cba"]
    assert int(res["added"].sum()) > 0  # threshold 0: every missing candidate is added
    assert out["counts"]["head_s2"] == len(res["voxels"]) > len(res["voxels"]) - int(res["added"].sum())
    loss = out["objectness"].sum() + sum(t["logits"].sum() for t in out["tgp"]) + res["logits"].sum()
    loss.backward()
    assert net.tgp[0].head.weight.grad is not None and net.cba.head.weight.grad is not None
    assert net.stem.weight.grad is not None
