"""Text-guided pruning (TGP) of TSP3D (Guo et al., CVPR 2025, arXiv 2502.10392).

At a coarse level of a sparse backbone the voxel features are fused with the text
(:class:`~prunekit_voxel.fusion.TextVoxelFusion`) and a linear layer gives one logit per
voxel. Label convention of the paper: the logit means *prunable*; the keep score is
``s = 1 - sigmoid(logit)`` and the kept set comes from the core :func:`prunekit.select`:

- inference: ``Budget(threshold=t)`` with ``t = 0.7`` at the coarser (scene-level) and
  ``t = 0.3`` at the finer (target-level) TGP (the core keeps ``s >= t``; the paper writes
  ``s > t``, which differs only on exact ties);
- training: ``Budget(keep_count=k)``, k = 4000 (coarser) or uniform in [1200, 4000) (finer).

A floor of ``min_keep`` voxels guards scenes where nothing would survive.

Training targets (:func:`tgp_targets`): a voxel is *not* prunable when its centre lies in a
relevant ground-truth box grown by a margin per side: the paper's
``13 * (4 * voxel) * 2**(l-1) / 2`` gives 1.04 m at its coarser TGP level and 0.52 m at the
finer one (0.16 m / 0.08 m voxels). We keep those margins in metres
(:data:`MARGINS`), whatever our level's voxel size, so the pruned region does not grow with
a coarser voxel grid. Scene-level TGP counts every object box as relevant, target-level TGP
only the target and the objects the expression mentions. Loss: sigmoid focal loss
(alpha 0.25, gamma 2) on the prunable label, summed and divided by the number of prunable
(label 1) voxels.
"""

from __future__ import annotations

import numpy as np
import torch
from prunekit import Budget, Scores, select
from torch import nn

from .fusion import TextVoxelFusion
from .sparse import SparseVoxels

#: the paper's inference thresholds on the keep score, coarser level first
EVAL_THRESHOLDS = (0.7, 0.3)
#: box growth per side in metres, scene-level (coarser) TGP first: 13 * (4 * 0.01) * 2**(l-1) / 2 for l = 3, 2
MARGINS = (1.04, 0.52)


class TGP(nn.Module):
    """Voxel-text fusion -> one *prunable* logit per voxel."""

    def __init__(self, d: int = 128, heads: int = 8, layers: int = 2, max_keys: int = 3200) -> None:
        super().__init__()
        self.fusion = TextVoxelFusion(d, heads, layers, max_keys)
        self.head = nn.Linear(d, 1)

    def forward(self, vox: SparseVoxels, xyz: torch.Tensor, text: torch.Tensor,
                text_pad: torch.Tensor | None = None, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (prunable logits N, text-fused voxel features N x d); ``context``: fixed context tokens
        of the fusion (:class:`~prunekit_voxel.fusion.TextVoxelFusion`; ours, default None)."""
        fused, _ = self.fusion(vox.feats, xyz, text, text_pad, context=context)
        return self.head(fused).squeeze(-1), fused


def keep_scores(logits: torch.Tensor) -> torch.Tensor:
    """``1 - sigmoid(logit)``: higher = keep (the core's score convention)."""
    return torch.sigmoid(-logits)


def tgp_keep(logits: torch.Tensor, *, threshold: float | None = None, keep_count: int | None = None,
             keep_ratio: float | None = None, min_keep: int = 1, level: str = "voxels") -> torch.Tensor:
    """Bool keep mask from prunable logits through the core ``select`` (exactly one budget kind)."""
    budget = Budget(threshold=threshold, keep_count=keep_count, keep_ratio=keep_ratio,
                    floor=min(min_keep, logits.numel()))
    return select(Scores.single(keep_scores(logits.detach()), name=level), budget).only


def train_keep_count(level_index: int, rng: np.random.Generator) -> int:
    """Training top-k: 4000 at the coarser TGP level (index 0), uniform in [1200, 4000) at the finer one."""
    return 4000 if level_index == 0 else int(rng.integers(1200, 4000))


def in_boxes(xyz: torch.Tensor, boxes: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """N bool: centre inside any axis-aligned box ``[cx, cy, cz, dx, dy, dz]`` grown by ``margin``."""
    if boxes.numel() == 0:
        return torch.zeros(xyz.shape[0], dtype=torch.bool)
    b = boxes.to(xyz.dtype)
    return ((xyz[:, None, :] - b[None, :, :3]).abs() <= b[None, :, 3:6] / 2 + margin).all(-1).any(1)


def tgp_targets(xyz: torch.Tensor, boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """Prunable labels (1.0 = prunable) of voxel centres ``xyz`` given the relevant boxes.

    Scene-level TGP: every object box and ``MARGINS[0]``; target-level TGP: the target and
    mentioned objects and ``MARGINS[1]``.
    """
    return (~in_boxes(xyz, boxes, margin)).to(torch.float32)


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) summed and normalised by the number of label-1 units (>= 1).

    ``FL = -alpha_t (1 - p_t)**gamma log(p_t)``, ``p_t = p`` for label 1 else ``1 - p``.
    """
    labels = labels.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = p * labels + (1 - p) * (1 - labels)
    a_t = alpha * labels + (1 - alpha) * (1 - labels)
    return (a_t * (1 - p_t) ** gamma * ce).sum() / labels.sum().clamp(min=1.0)
