"""Magnitude channel-pruning baseline (Torch-Pruning) with the diffusers fix-ups."""

import pytest
import torch

from .conftest import class_calib

pytest.importorskip("torch_pruning")


def test_magnitude_prune_reaches_mac_target_and_keeps_head_dim(unet):
    from prunekit_diffusion.magnitude import magnitude_prune
    from prunekit_diffusion.operators import total_macs
    from prunekit_diffusion.sampling import denoise

    calib = class_calib(n=2)
    ex = calib.example(unet)
    head_dims = {n: m.to_q.out_features // m.heads for n, m in unet.named_modules() if type(m).__name__ == "Attention"}
    pruned, info = magnitude_prune(unet, ex, 0.7, iters=6)
    assert info["macs"] == total_macs(pruned, ex) <= 0.7 * total_macs(unet, ex)
    for n, m in pruned.named_modules():
        if type(m).__name__ == "Attention":
            assert m.to_q.out_features // m.heads == head_dims[n]  # whole heads only: same temperature
        if type(m).__name__ == "Downsample2D":
            assert m.channels == m.conv.in_channels
    out = denoise(pruned, torch.randn(2, 1, 16, 16), torch.tensor(3), {"class_labels": torch.tensor([1, 2])})
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()
    assert sum(p.numel() for p in unet.parameters()) > sum(p.numel() for p in pruned.parameters())


def test_magnitude_prune_dit_keeps_whole_heads(dit):
    from prunekit_diffusion.magnitude import magnitude_prune
    from prunekit_diffusion.operators import total_macs
    from prunekit_diffusion.sampling import denoise

    ex = class_calib(n=2).example(dit)
    pruned, info = magnitude_prune(dit, ex, 0.7, iters=5)
    assert info["macs"] == total_macs(pruned, ex) <= 0.7 * total_macs(dit, ex)
    for m in pruned.modules():
        if type(m).__name__ == "Attention":
            assert m.to_q.out_features == m.heads * 8  # head dim 8 as built; only the head count shrinks
    out = denoise(pruned, torch.randn(2, 4, 16, 16), torch.tensor(3), {"class_labels": torch.tensor([1, 2])})
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()
