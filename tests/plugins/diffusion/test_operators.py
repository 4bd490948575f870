"""Operator discovery and MAC counting on tiny offline denoisers."""

import pytest
import torch

from .conftest import class_calib, text_calib


def _by_name(ops):
    return {op.name: op for op in ops}


def test_unet2d_operators(unet):
    from prunekit_diffusion.operators import discover_operators

    ops = _by_name(discover_operators(unet, calib=class_calib()))
    expected = {
        "down_blocks.0.resnets.0": ("resnet", "identity"),
        "down_blocks.1.resnets.0": ("resnet", "shortcut"),  # 8 -> 16 channels
        "down_blocks.1.attentions.0": ("attention", "identity"),
        "mid_block.resnets.0": ("resnet", "identity"),
        "mid_block.attentions.0": ("attention", "identity"),
        "mid_block.resnets.1": ("resnet", "identity"),
        "up_blocks.0.resnets.0": ("resnet", "shortcut"),  # concatenated skip connection
        "up_blocks.0.resnets.1": ("resnet", "shortcut"),
        "up_blocks.0.attentions.0": ("attention", "identity"),
        "up_blocks.0.attentions.1": ("attention", "identity"),
        "up_blocks.1.resnets.0": ("resnet", "shortcut"),
        "up_blocks.1.resnets.1": ("resnet", "shortcut"),
    }
    assert set(ops) == set(expected)
    for name, (kind, adaptor) in expected.items():
        op = ops[name]
        assert (op.kind, op.adaptor, op.removable) == (kind, adaptor, True), op
        assert op.params == sum(p.numel() for p in unet.get_submodule(name).parameters())
        assert op.macs > 0 and 0 <= op.adaptor_macs < op.macs
        assert (op.adaptor_params > 0) == (adaptor == "shortcut")
    assert not any(n.startswith(("down_blocks.0.downsamplers", "up_blocks.0.upsamplers")) for n in ops)


def test_cond_unet_and_dit_operators(cond_unet, dit):
    from prunekit_diffusion.operators import discover_operators

    ops = _by_name(discover_operators(cond_unet, calib=text_calib()))
    kinds = {op.kind for op in ops.values()}
    assert kinds == {"resnet", "transformer"}
    assert [n for n, op in ops.items() if op.kind == "transformer"] == [
        "down_blocks.1.attentions.0", "mid_block.attentions.0", "up_blocks.0.attentions.0", "up_blocks.0.attentions.1"]
    assert all(op.removable for op in ops.values())

    ops = discover_operators(dit, calib=class_calib())
    assert [op.name for op in ops] == ["transformer_blocks.0", "transformer_blocks.1", "transformer_blocks.2"]
    assert all(op.kind == "block" and op.removable and op.macs > 0 for op in ops)
    assert len({op.macs for op in ops}) == 1  # identical blocks cost the same


def test_unsupported_operator_is_reported_not_removed(unet):
    from prunekit_diffusion.operators import discover_operators

    class CustomBlock(torch.nn.Module):
        def forward(self, x, temb=None):
            return x

    unet.mid_block.resnets[0] = CustomBlock()
    op = _by_name(discover_operators(unet, calib=class_calib()))["mid_block.resnets.0"]
    assert not op.removable and "CustomBlock" in op.reason


def test_attention_macs_include_cpu_sdpa(unet):
    """q, k, v, out projections plus QK^T and AV of the CPU attention kernel, counted exactly."""
    from prunekit_diffusion.operators import discover_operators

    op = _by_name(discover_operators(unet, calib=class_calib()))["mid_block.attentions.0"]
    tokens, dim = 8 * 8, 16  # 16x16 input, one downsample (the last down block has none)
    assert op.macs == 4 * tokens * dim * dim + 2 * tokens * tokens * dim


def test_conv_macs_match_formula():
    from prunekit_diffusion.macs import count_macs

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.Linear(7, 2))
    macs = count_macs(m, torch.zeros(1, 3, 4, 7))
    assert macs["0"] == 3 * 5 * 9 * 4 * 7
    assert macs["1"] == 5 * 4 * 7 * 2
    assert macs[""] == macs["0"] + macs["1"]


def test_operator_costs_add_up(unet):
    from prunekit_diffusion.operators import discover_operators, total_macs

    calib = class_calib()
    ops = discover_operators(unet, calib=calib)
    total = total_macs(unet, calib.example(unet))
    assert sum(op.macs for op in ops) < total  # stems, embeddings, resamplers are not operators
