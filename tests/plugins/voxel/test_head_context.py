"""``head_context`` (ours): the head fusion attends to the unpruned text-fused stride-8 level, the same
tensor whether the network prunes or not; the default keeps the old behaviour."""

import pytest
import torch

from prunekit_voxel.checkpoint import load_checkpoint, save_checkpoint
from prunekit_voxel.fusion import TextVoxelFusion
from prunekit_voxel.model import Tsp3dNet

from .conftest import small_net, small_scene

ARCH = dict(cin=4, d=16, text_dim=24, heads=2, layers=1, max_keys=256, cba_candidates=200)


def _fusion_inputs(n=40, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.rand(n, 3, generator=g) * 3, torch.randn(5, d, generator=g)


def test_context_formula_reduces_to_self_attention_and_makes_rows_independent():
    torch.manual_seed(0)
    fusion = TextVoxelFusion(16, 2, 1, max_keys=64).eval()
    f, xyz, t = _fusion_inputs()
    with torch.no_grad():
        own = fusion(f, xyz, t)[0]
        # one layer, context = the block's own voxels: the formula is the default self-attention
        torch.testing.assert_close(fusion(f, xyz, t, context=(f, xyz))[0], own)
        # a fixed context: a voxel's output does not depend on which other voxels are in the block
        ctx = (f[:25] * 2.0, xyz[:25])
        sub = torch.tensor([1, 7, 30, 39])
        with_ctx = fusion(f, xyz, t, context=ctx)[0]
        torch.testing.assert_close(fusion(f[sub], xyz[sub], t, context=ctx)[0], with_ctx[sub])
        assert (fusion(f[sub], xyz[sub], t)[0] - own[sub]).abs().max() > 1e-3  # the default does depend on it
        assert (with_ctx - own).abs().max() > 1e-3


def _capture(net):
    """Forward hooks recording the context passed to the head fusion and the stride-4 TGP fusion."""
    got = {}
    net.head_fusion.register_forward_hook(lambda m, a, kw, o: got.__setitem__("head", kw.get("context")),
                                          with_kwargs=True)
    net.tgp[1].fusion.register_forward_hook(lambda m, a, kw, o: got.__setitem__("s4", kw.get("context")),
                                            with_kwargs=True)
    return got


@pytest.mark.parametrize("mode", ["s8", "s8+s4"])
def test_the_head_context_is_the_same_tensor_pruned_and_unpruned(mode):
    vox, text = small_scene(), torch.randn(4, 24)
    net = small_net()
    net.head_context = mode
    got = _capture(net)
    with torch.no_grad():
        full = net(vox, text, voxel_size=0.1, prune=False)
        ctx_full = got["head"]
        pruned = net(vox, text, voxel_size=0.1, keep_ratios=(0.3, 0.2), cba=True)
    assert pruned["counts"]["head_s2"] < full["counts"]["head_s2"]
    assert len(ctx_full[0]) == full["counts"]["enc_s8"] > pruned["counts"]["neck_s8"]  # all stride-8 voxels
    assert torch.equal(got["head"][0], ctx_full[0]) and torch.equal(got["head"][1], ctx_full[1])
    assert (got["s4"] is not None) == (mode == "s8+s4")
    # the context is the stride-8 TGP fusion's output, before any voxel is removed
    torch.testing.assert_close(ctx_full[0], net.tgp[0](net.encode(vox)[2], ctx_full[1], net.text(text))[1])


def test_default_is_unchanged_and_the_option_round_trips_through_the_checkpoint(tmp_path):
    vox, text = small_scene(), torch.randn(4, 24)
    net = small_net()
    assert net.head_context == "own" and Tsp3dNet(**ARCH).head_context == "own"
    got = _capture(net)
    with torch.no_grad():
        own = net(vox, text, voxel_size=0.1, keep_ratios=(0.3, 0.2))
        assert got == {"head": None, "s4": None}
        # the default fusion calls are the unchanged ones: no context anywhere, same result as explicit None
        torch.testing.assert_close(net.predict_boxes(own["voxels"], net.text(text), None, 0.1)[0], own["objectness"])
    save_checkpoint(net, tmp_path / "old.safetensors", ARCH, 0.1)  # an arch without the field: the default
    assert load_checkpoint(tmp_path / "old.safetensors")[0].head_context == "own"
    save_checkpoint(net, tmp_path / "s8.safetensors", {**ARCH, "head_context": "s8"}, 0.1)
    net2 = load_checkpoint(tmp_path / "s8.safetensors")[0]  # same weights (no new parameters), option on
    net.head_context = "s8"
    with torch.no_grad():
        a = net(vox, text, voxel_size=0.1, keep_ratios=(0.3, 0.2))
        b = net2(vox, text, voxel_size=0.1, keep_ratios=(0.3, 0.2))
    assert net2.head_context == "s8" and torch.equal(a["objectness"], b["objectness"])
    assert (a["objectness"] - own["objectness"]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="head_context"):
        Tsp3dNet(**ARCH, head_context="s2")
