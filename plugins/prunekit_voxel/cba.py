"""Completion-based addition (CBA) of TSP3D (Guo et al., CVPR 2025, arXiv 2502.10392).

TGP can remove voxels of the referred object too eagerly. At the finest level CBA looks at
the *unpruned* backbone level: it samples at most ``max_candidates`` (2400) of its voxels,
fuses them with the text (:class:`~prunekit_voxel.fusion.TextVoxelFusion`), scores each with
a 1-channel classifier and adds those with ``sigmoid > threshold`` (0.15) that the pruned
level does not already hold (membership by hashed coordinates, never an N x M comparison).
An added voxel's features are ``interp(pruned features) + fused features``, where ``interp``
is inverse-distance weighting over its ``k`` (3) nearest pruned voxels.

Training target (approximation, stated in the README): a candidate is positive when it holds
points of the referred object (:func:`~prunekit_voxel.losses.target_voxels`); the paper uses
its detection head's assigner to pick positives. Loss: :func:`~prunekit_voxel.tgp.focal_loss`.
"""

from __future__ import annotations

import torch
from torch import nn

from .fusion import TextVoxelFusion
from .sparse import SparseVoxels

ADD_THRESHOLD = 0.15


def sample_candidates(n: int, max_candidates: int, seed: int = 0) -> torch.Tensor:
    """Rows of at most ``max_candidates`` voxels out of ``n`` (all of them when n is small), sorted."""
    if n <= max_candidates:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:max_candidates].sort().values


def idw_interpolate(src_xyz: torch.Tensor, src_feats: torch.Tensor, dst_xyz: torch.Tensor, k: int = 3,
                    chunk: int = 4096) -> torch.Tensor:
    """Features at ``dst_xyz`` by inverse-distance weighting of the ``k`` nearest source voxels."""
    if src_xyz.shape[0] == 0:
        return src_feats.new_zeros(dst_xyz.shape[0], src_feats.shape[1])
    k = min(k, src_xyz.shape[0])
    out = []
    for i in range(0, dst_xyz.shape[0], chunk):
        d, idx = torch.cdist(dst_xyz[i:i + chunk], src_xyz).topk(k, largest=False)
        w = 1.0 / (d + 1e-8)
        w = w / w.sum(1, keepdim=True)
        out.append((w[..., None] * src_feats[idx]).sum(1))
    return torch.cat(out) if out else src_feats.new_zeros(0, src_feats.shape[1])


class CBA(nn.Module):
    """Candidate voxels of the unpruned level -> text fusion -> addition logit."""

    def __init__(self, d: int = 128, heads: int = 8, layers: int = 2, max_candidates: int = 2400,
                 threshold: float = ADD_THRESHOLD) -> None:
        super().__init__()
        self.fusion = TextVoxelFusion(d, heads, layers, max_keys=max_candidates)
        self.head = nn.Linear(d, 1)
        self.max_candidates = max_candidates
        self.threshold = threshold

    def forward(self, full: SparseVoxels, pruned: SparseVoxels, voxel_size: float, text: torch.Tensor,
                text_pad: torch.Tensor | None = None, seed: int = 0, threshold: float | None = None) -> dict:
        """Complete ``pruned`` (a subset of ``full``'s level) with text-relevant voxels of ``full``.

        Returns ``voxels`` (pruned + added, added last), ``logits``, ``rows`` (candidate rows
        into ``full``), ``cand_coords`` and ``xyz`` (candidate coordinates and centres), ``added``
        (bool over candidates) and ``fused`` (candidate features).
        """
        if full.stride != pruned.stride:
            raise ValueError(f"CBA needs one level: full stride {full.stride} vs pruned stride {pruned.stride}")
        rows = sample_candidates(len(full), self.max_candidates, seed)
        xyz = (full.coords[rows].to(full.feats.dtype) + 0.5) * voxel_size
        fused, _ = self.fusion(full.feats[rows], xyz, text, text_pad, seed)
        logits = self.head(fused).squeeze(-1)
        thr = self.threshold if threshold is None else threshold
        added = (torch.sigmoid(logits) > thr) & ~pruned.contains(full.coords[rows])
        res = {"voxels": pruned, "logits": logits, "rows": rows, "cand_coords": full.coords[rows], "xyz": xyz,
               "added": added, "fused": fused}
        if not bool(added.any()):
            return res
        p_xyz = (pruned.coords.to(full.feats.dtype) + 0.5) * voxel_size
        new = idw_interpolate(p_xyz, pruned.feats, xyz[added]) + fused[added]
        res["voxels"] = SparseVoxels(torch.cat([pruned.coords, full.coords[rows][added]]),
                                     torch.cat([pruned.feats, new]), pruned.stride)
        return res

