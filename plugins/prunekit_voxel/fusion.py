"""Bi-directional voxel-text fusion block shared by TGP and CBA (TSP3D, arXiv 2502.10392).

One layer, for voxel tokens ``V`` (N x d, plus a learned xyz position embedding) and text
tokens ``T`` (L x d, padding masked):

    V <- LN(V + SelfAttn(V))            T <- LN(T + SelfAttn(T))
    V <- LN(V + CrossAttn(V -> T))      T <- LN(T + CrossAttn(T -> V))
    V <- LN(V + FFN(V))                 T <- LN(T + FFN(T))

Approximation (stated in the README): the voxel self-attention uses all voxels as queries
but at most ``max_keys`` voxels as keys/values (a random subset, seeded for repeatability),
which bounds its cost at O(N * max_keys); the paper instead subsamples the voxels fed to the
block in training (<= 320 / <= 3200).
"""

from __future__ import annotations

import torch
from torch import nn


class _Layer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.v_self = nn.MultiheadAttention(d, heads, batch_first=True)
        self.t_self = nn.MultiheadAttention(d, heads, batch_first=True)
        self.v_cross = nn.MultiheadAttention(d, heads, batch_first=True)
        self.t_cross = nn.MultiheadAttention(d, heads, batch_first=True)
        self.v_ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Linear(ffn, d))
        self.t_ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Linear(ffn, d))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(6))

    def forward(self, v, t, t_pad, keys):
        n = self.norms
        vk = v[:, keys] if keys is not None else v
        v = n[0](v + self.v_self(v, vk, vk, need_weights=False)[0])
        t = n[1](t + self.t_self(t, t, t, key_padding_mask=t_pad, need_weights=False)[0])
        v2 = n[2](v + self.v_cross(v, t, t, key_padding_mask=t_pad, need_weights=False)[0])
        t = n[3](t + self.t_cross(t, v, v, need_weights=False)[0])
        return n[4](v2 + self.v_ffn(v2)), n[5](t + self.t_ffn(t))


class TextVoxelFusion(nn.Module):
    """``layers`` bi-directional layers over one scene's voxels and one expression's tokens."""

    def __init__(self, d: int = 128, heads: int = 8, layers: int = 2, max_keys: int = 3200) -> None:
        super().__init__()
        self.pos = nn.Sequential(nn.Linear(3, d), nn.ReLU(), nn.Linear(d, d))
        self.layers = nn.ModuleList(_Layer(d, heads, 2 * d) for _ in range(layers))
        self.max_keys = max_keys

    def forward(self, feats: torch.Tensor, xyz: torch.Tensor, text: torch.Tensor,
                text_pad: torch.Tensor | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """feats N x d, xyz N x 3 (metres), text L x d, text_pad L bool (True = padding) -> (N x d, L x d)."""
        if feats.shape[0] == 0:
            return feats, text
        v = (feats + self.pos(xyz.to(feats.dtype)))[None]
        t = text[None]
        pad = None if text_pad is None else text_pad[None]
        keys = None
        if feats.shape[0] > self.max_keys:
            g = torch.Generator().manual_seed(seed)
            keys = torch.randperm(feats.shape[0], generator=g)[: self.max_keys]
        for layer in self.layers:
            v, t = layer(v, t, pad, keys)
        return v[0], t[0]
