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

Fixed context (ours, not the paper's; ``context=(feats_C, xyz_C)``): every attention that mixes
voxels takes a fixed set of context tokens ``C = feats_C + pos(xyz_C)`` instead of the block's own
voxels, in every layer:

    V <- LN(V + SelfAttn(Q=V, K=V=C))   T <- LN(T + CrossAttn(Q=T, K=V=C))

(at most ``max_keys`` context rows, the same seeded subset whatever ``V`` is). The output for a
voxel then depends only on its own features and position, the text and ``C``, not on which other
voxels are in the block, so a pruned block gives its survivors the same features as the unpruned one.
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

    def forward(self, v, t, t_pad, keys, ctx=None):
        """``ctx`` (1 x M x d): fixed keys/values of the voxel self-attention and of the text->voxel
        cross-attention instead of ``v`` (then ``keys`` index ``ctx``)."""
        n = self.norms
        src = v if ctx is None else ctx
        vk = src[:, keys] if keys is not None else src
        v = n[0](v + self.v_self(v, vk, vk, need_weights=False)[0])
        t = n[1](t + self.t_self(t, t, t, key_padding_mask=t_pad, need_weights=False)[0])
        v2 = n[2](v + self.v_cross(v, t, t, key_padding_mask=t_pad, need_weights=False)[0])
        tk = v if ctx is None else ctx
        t = n[3](t + self.t_cross(t, tk, tk, need_weights=False)[0])
        return n[4](v2 + self.v_ffn(v2)), n[5](t + self.t_ffn(t))


class TextVoxelFusion(nn.Module):
    """``layers`` bi-directional layers over one scene's voxels and one expression's tokens."""

    def __init__(self, d: int = 128, heads: int = 8, layers: int = 2, max_keys: int = 3200) -> None:
        super().__init__()
        self.pos = nn.Sequential(nn.Linear(3, d), nn.ReLU(), nn.Linear(d, d))
        self.layers = nn.ModuleList(_Layer(d, heads, 2 * d) for _ in range(layers))
        self.max_keys = max_keys

    def forward(self, feats: torch.Tensor, xyz: torch.Tensor, text: torch.Tensor,
                text_pad: torch.Tensor | None = None, seed: int = 0,
                context: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """feats N x d, xyz N x 3 (metres), text L x d, text_pad L bool (True = padding) -> (N x d, L x d).
        ``context``: (M x d features, M x 3 centres) of fixed context tokens (module docstring); None: the
        voxels attend to each other (the default)."""
        if feats.shape[0] == 0:
            return feats, text
        v = (feats + self.pos(xyz.to(feats.dtype)))[None]
        t = text[None]
        pad = None if text_pad is None else text_pad[None]
        ctx = None if context is None else (context[0] + self.pos(context[1].to(feats.dtype)))[None]
        n_keys = v.shape[1] if ctx is None else ctx.shape[1]
        keys = None
        if n_keys > self.max_keys:
            g = torch.Generator().manual_seed(seed)
            keys = torch.randperm(n_keys, generator=g)[: self.max_keys]
        for layer in self.layers:
            v, t = layer(v, t, pad, keys, ctx)
        return v[0], t[0]
