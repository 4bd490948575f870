"""Bypass through diffusers hooks, exact restoration, and physical removal."""

import copy

import pytest
import torch

from .conftest import class_calib, text_calib


def _ops(model, calib):
    from prunekit_diffusion.operators import discover_operators

    return {op.name: op for op in discover_operators(model, calib=calib)}


def _call(model, calib):
    from prunekit_diffusion.sampling import denoise

    g = torch.Generator().manual_seed(7)
    c, h, w = calib.shape or (model.config.in_channels, model.config.sample_size, model.config.sample_size)
    x = torch.randn(calib.n, c, h, w, generator=g)
    with torch.no_grad():
        return denoise(model, x, torch.tensor(500), dict(calib.cond))


def test_hook_returns_block_input(unet, cond_unet, dit):
    from diffusers.models.modeling_outputs import Transformer2DModelOutput
    from prunekit_diffusion.bypass import bypassed

    x8, x16 = torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)
    temb = torch.randn(2, 32)
    ops = _ops(unet, class_calib())
    with bypassed(unet, [ops["down_blocks.0.resnets.0"], ops["mid_block.attentions.0"]]):
        assert torch.equal(unet.down_blocks[0].resnets[0](x8, temb), x8)
        assert torch.equal(unet.mid_block.attentions[0](x16, temb=temb), x16)
    # a channel-changing resnet falls back to its own shortcut convolution
    res = unet.up_blocks[0].resnets[0]
    xin = torch.randn(2, 32, 8, 8)
    with bypassed(unet, [ops["up_blocks.0.resnets.0"]]):
        assert torch.equal(res(xin, temb), res.conv_shortcut(xin))

    ops = _ops(cond_unet, text_calib())
    tr = cond_unet.down_blocks[1].attentions[0]
    xt, ctx = torch.randn(2, 8, 8, 8), torch.randn(2, 5, 8)
    with bypassed(cond_unet, [ops["down_blocks.1.attentions.0"]]):
        out = tr(xt, encoder_hidden_states=ctx)
        assert isinstance(out, Transformer2DModelOutput) and torch.equal(out.sample, xt)
        tup = tr(xt, encoder_hidden_states=ctx, return_dict=False)
        assert isinstance(tup, tuple) and torch.equal(tup[0], xt)

    ops = _ops(dit, class_calib())
    hs = torch.randn(2, 16, 16)
    with bypassed(dit, [ops["transformer_blocks.1"]]):
        assert torch.equal(dit.transformer_blocks[1](hs, timestep=torch.tensor([1, 2]), class_labels=torch.tensor([0, 1])), hs)


@pytest.mark.parametrize("which", ["unet", "cond_unet", "dit"])
def test_hook_removal_restores_exact_outputs(which, request):
    from prunekit_diffusion.bypass import bypassed

    model = request.getfixturevalue(which)
    calib = text_calib() if which == "cond_unet" else class_calib()
    ops = [op for op in _ops(model, calib).values() if op.removable]
    before = _call(model, calib)
    with bypassed(model, ops[:2]):
        during = _call(model, calib)
    after = _call(model, calib)
    assert not torch.allclose(before, during)
    assert torch.equal(before, after)
    # an exception inside the block also removes the hooks
    with pytest.raises(RuntimeError, match="boom"):
        with bypassed(model, ops[:1]):
            raise RuntimeError("boom")
    assert torch.equal(before, _call(model, calib))


def test_dit_bypass_matches_diffusers_layer_skip(dit):
    from diffusers.hooks import LayerSkipConfig, apply_layer_skip
    from prunekit_diffusion.bypass import bypassed

    calib = class_calib()
    ops = _ops(dit, calib)
    with bypassed(dit, [ops["transformer_blocks.1"]]):
        ours = _call(dit, calib)
    ref_model = copy.deepcopy(dit)
    apply_layer_skip(ref_model, LayerSkipConfig(indices=[1], fqn="transformer_blocks"))
    assert torch.equal(ours, _call(ref_model, calib))


@pytest.mark.parametrize("which", ["unet", "cond_unet", "dit"])
def test_physical_removal_matches_bypass(which, request):
    from prunekit_diffusion.bypass import bypassed, remove_operators

    model = request.getfixturevalue(which)
    calib = text_calib() if which == "cond_unet" else class_calib()
    ops = [op for op in _ops(model, calib).values() if op.removable]
    chosen = ops[::2]
    with bypassed(model, chosen):
        hooked = _call(model, calib)
    pruned = copy.deepcopy(model)
    records = remove_operators(pruned, chosen)
    assert [r["name"] for r in records] == [op.name for op in chosen]
    assert sum(p.numel() for p in pruned.parameters()) == (
        sum(p.numel() for p in model.parameters()) - sum(op.saved_params for op in chosen))
    torch.testing.assert_close(_call(pruned, calib), hooked, rtol=0, atol=1e-6)
    if which == "dit":
        # block 2 is deleted (config follows); block 0 keeps a stand-in holding the
        # embedding that DiT's output layer reads from transformer_blocks[0].norm1.emb
        assert pruned.config.num_layers == len(pruned.transformer_blocks) == 2
        assert type(pruned.transformer_blocks[0]).__name__ == "SkippedBlock"
        assert [r["mode"] for r in records] == ["replace", "delete"]


def test_not_removable_operator_is_refused(unet):
    from prunekit_diffusion.bypass import bypassed, remove_operators
    from prunekit_diffusion.operators import Operator

    op = Operator("mid_block.resnets.0", "resnet", "ResnetBlock2D", 1, 1, False, "test")
    with pytest.raises(ValueError, match="cannot be bypassed"):
        with bypassed(unet, [op]):
            pass
    with pytest.raises(ValueError, match="cannot be removed"):
        remove_operators(unet, [op])
