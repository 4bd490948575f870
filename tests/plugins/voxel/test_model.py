"""The small TSP3D network: pruning shrinks the neck, the baseline path fuses text into everything."""

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
    assert c["neck_s8"] == c["enc_s8"] and c["head_s2"] == c["enc_s2"] and len(base["tgp"]) == 2  # fused, not pruned
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


def test_keep_ratios_keep_a_fraction_of_the_voxels_reaching_each_tgp_block():
    vox, net = small_scene(), small_net()
    text = torch.randn(4, 24)
    with torch.no_grad():
        out = net(vox, text, voxel_size=0.1, keep_ratios=(0.5, 0.25), cba=False)
    c = out["counts"]
    assert c["neck_s8"] == max(1, int(0.5 * c["enc_s8"]))
    reaching = len(out["tgp"][1]["logits"])  # stride-4 children of the kept stride-8 voxels
    assert reaching < c["enc_s4"] and c["neck_s4"] == max(1, int(0.25 * reaching))
    # the kept stride-4 voxels are the top quarter by keep score
    kept = tgp_keep(out["tgp"][1]["logits"], keep_ratio=0.25)
    assert int(kept.sum()) == c["neck_s4"]


def test_fusion_runs_on_every_voxel_unpruned_and_on_survivors_pruned():
    """The text fusion at stride 4 and the stride-2 head see all encoder sites without pruning and only the
    survivors with it (where the speed-up comes from); the fused stride-8 features go up the neck."""
    vox, net = small_scene(), small_net()
    rows = {}
    net.tgp[1].register_forward_hook(lambda m, a, o: rows.__setitem__("fusion_s4", a[0].feats.shape[0]))
    net.head_fusion.register_forward_hook(lambda m, a, o: rows.__setitem__("head_s2", a[0].shape[0]))
    text = torch.randn(4, 24)
    with torch.no_grad():
        full = net(vox, text, voxel_size=0.1, prune=False)
        assert rows == {"fusion_s4": full["counts"]["enc_s4"], "head_s2": full["counts"]["enc_s2"]}
        pruned = net(vox, text, voxel_size=0.1, keep_counts=(3, 5), cba=False)
        assert rows["head_s2"] == pruned["counts"]["head_s2"] < full["counts"]["enc_s2"]
        assert rows["fusion_s4"] < full["counts"]["enc_s4"]
        net.tgp[0].fusion.layers[0].v_ffn[2].weight.mul_(3.0)  # the stride-8 fusion output changes the result
        assert (net(vox, text, voxel_size=0.1, prune=False)["boxes"] - full["boxes"]).abs().max() > 1e-3
