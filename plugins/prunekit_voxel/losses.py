"""Training losses for :class:`~prunekit_voxel.model.Tsp3dNet` (TSP3D, arXiv 2502.10392).

- TGP, coarser level (scene-level supervision): prunable = outside every object box grown by
  1.04 m; finer level (target-level supervision): outside the target's and the mentioned
  objects' boxes grown by 0.52 m (:func:`~prunekit_voxel.tgp.tgp_targets`); sigmoid focal loss.
- CBA: candidates inside the target box grown by one voxel are positives
  (:func:`~prunekit_voxel.cba.cba_targets`; the paper uses its head's assigner); focal loss.
- Head (ours, not the paper's): objectness focal loss with voxels inside the target box as
  positives, plus L1 on (centre / level voxel, log size) of the positives' predicted boxes.

Total = sum of the terms with unit weights; every term is returned for logging.
"""

from __future__ import annotations

import torch

from .cba import cba_targets
from .tgp import MARGINS, focal_loss, in_boxes, tgp_targets


def tsp3d_losses(out: dict, target_box: torch.Tensor, all_boxes: torch.Tensor, mentioned_boxes: torch.Tensor,
                 voxel_size: float) -> dict[str, torch.Tensor]:
    """``out`` from ``Tsp3dNet.forward``; boxes ``[cx, cy, cz, dx, dy, dz]`` in metres."""
    target_box = target_box.reshape(6)
    losses: dict[str, torch.Tensor] = {}
    relevant = (all_boxes, torch.cat([target_box[None], mentioned_boxes.reshape(-1, 6)]))
    for i, t in enumerate(out["tgp"]):  # coarser level first: scene-level, then target-level
        labels = tgp_targets(t["xyz"], relevant[min(i, 1)], MARGINS[min(i, 1)])
        losses[f"tgp{i}"] = focal_loss(t["logits"], labels)
    if "cba" in out:
        res = out["cba"]
        losses["cba"] = focal_loss(res["logits"], cba_targets(res["xyz"], target_box, voxel_size * out["voxels"].stride))
    vox = out["voxels"]
    size = voxel_size * vox.stride
    xyz = (vox.coords.to(target_box.dtype) + 0.5) * size
    pos = in_boxes(xyz, target_box[None])
    losses["objectness"] = focal_loss(out["objectness"], pos.to(out["objectness"].dtype))
    if bool(pos.any()):
        pred = out["boxes"][pos]
        ctr = (pred[:, :3] - target_box[:3]).abs().sum(1) / size
        dims = (torch.log(pred[:, 3:].clamp(min=1e-6)) - torch.log(target_box[3:].clamp(min=1e-6))).abs().sum(1)
        losses["box"] = (ctr + dims).mean()
    else:
        losses["box"] = out["boxes"].sum() * 0.0
    losses["total"] = sum(losses.values())
    return losses
