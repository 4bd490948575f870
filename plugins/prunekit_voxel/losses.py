"""Training losses for :class:`~prunekit_voxel.model.Tsp3dNet` (TSP3D, arXiv 2502.10392).

- TGP, coarser level (scene-level supervision): prunable = outside every object box grown by
  1.04 m; finer level (target-level supervision): outside the target's and the mentioned
  objects' boxes grown by 0.52 m (:func:`~prunekit_voxel.tgp.tgp_targets`); sigmoid focal loss.
- Target voxels (:func:`target_voxels`): the voxels of a level that hold points of the referred
  instance (``target_sites``, the stride-1 voxels of its points, reduced to the level by
  ``floor(c / stride)``); without sites, voxels whose centre lies in the target box grown by
  half a voxel. (A plain centre-in-box test misses most surface voxels: points lie *on* the
  box faces, so about half of the face voxels have their centre outside the box.)
- CBA: candidates that are target voxels are positives (the paper uses its head's assigner);
  focal loss.
- Head (ours, not the paper's): objectness focal loss with the target voxels as positives; a
  selection term ``logsumexp(obj) - logsumexp(obj[positives])`` (minus the log of the softmax
  mass on the target, which is what the argmax at inference needs); on the positives' predicted boxes, ``sum |c_pred - c| / size + sum |log size_pred - log size|``
  (centre error relative to the object's size, so large and small objects weigh alike).

Total = sum of the terms with unit weights; every term is returned for logging.
"""

from __future__ import annotations

import torch

from .sparse import SparseVoxels, parents, unique_coords
from .tgp import MARGINS, focal_loss, in_boxes, tgp_targets


def target_voxels(coords: torch.Tensor, stride: int, voxel_size: float, target_box: torch.Tensor,
                  target_sites: torch.Tensor | None = None) -> torch.Tensor:
    """Bool over ``coords`` (a level at ``stride``): the voxel holds points of the target."""
    if target_sites is not None and len(target_sites):
        s = target_sites
        for _ in range(stride.bit_length() - 1):
            s = parents(s)
        s = unique_coords(s)[0]
        return SparseVoxels(s, torch.zeros(len(s), 0)).contains(coords)
    size = voxel_size * stride
    xyz = (coords.to(torch.float32) + 0.5) * size
    return in_boxes(xyz, target_box.reshape(1, 6), size / 2)


def tsp3d_losses(out: dict, target_box: torch.Tensor, all_boxes: torch.Tensor, mentioned_boxes: torch.Tensor,
                 voxel_size: float, target_sites: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``out`` from ``Tsp3dNet.forward``; boxes ``[cx, cy, cz, dx, dy, dz]`` in metres; ``target_sites``
    the stride-1 voxel coordinates of the target's points (optional, see :func:`target_voxels`)."""
    target_box = target_box.reshape(6)
    losses: dict[str, torch.Tensor] = {}
    relevant = (all_boxes, torch.cat([target_box[None], mentioned_boxes.reshape(-1, 6)]))
    for i, t in enumerate(out["tgp"]):  # coarser level first: scene-level, then target-level
        labels = tgp_targets(t["xyz"], relevant[min(i, 1)], MARGINS[min(i, 1)])
        losses[f"tgp{i}"] = focal_loss(t["logits"], labels)
    vox = out["voxels"]
    if "cba" in out:
        res = out["cba"]
        cand = res["cand_coords"]
        losses["cba"] = focal_loss(res["logits"], target_voxels(cand, vox.stride, voxel_size, target_box, target_sites)
                                   .to(res["logits"].dtype))
    pos = target_voxels(vox.coords, vox.stride, voxel_size, target_box, target_sites)
    obj = out["objectness"]
    losses["objectness"] = focal_loss(obj, pos.to(obj.dtype))
    if bool(pos.any()):
        losses["select"] = torch.logsumexp(obj, 0) - torch.logsumexp(obj[pos], 0)
        pred = out["boxes"][pos]
        dims = target_box[3:].clamp(min=1e-3)
        ctr = ((pred[:, :3] - target_box[:3]).abs() / dims).sum(1)
        size = (torch.log(pred[:, 3:].clamp(min=1e-6)) - torch.log(dims)).abs().sum(1)
        losses["box"] = (ctr + size).mean()
    else:
        losses["select"] = losses["box"] = out["boxes"].sum() * 0.0
    losses["total"] = sum(losses.values())
    return losses
