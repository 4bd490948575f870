"""Self-distillation of the pruned path to the unpruned path of the same network (OUR addition, issue 9).

Not in TSP3D (Guo et al., CVPR 2025, arXiv 2502.10392), which trains the pruned network with its
ground-truth losses only. Motivation (``scripts/bench/diag_tsp3d.py``, ``bench-out/tsp3d_diag_val.json``):
at kept fractions (0.3, 0.1) the unpruned head *restricted to the voxels the pruned head sees* is about
as accurate as the unpruned network, while the pruned head, whose text fusion and convs see only the
survivors, is 20 points worse. So the unpruned path, run on the same room and text in the same step,
is a teacher whose answer on exactly the student's voxels is usually right.

Terms, for student (pruned forward, TGP [+ CBA]) voxels ``i in S`` and the teacher (``prune=False``)
rows ``r(i)`` at the same stride-2 sites (``S`` is a subset of the teacher's sites; CBA adds sites of
the same unpruned level); every teacher quantity is detached, so gradients reach the pruned path only:

- selection: ``KL(p_T || p_S) * tau**2`` with ``p_T = softmax(o_T[r(S)] / tau)`` (the teacher's
  objectness *restricted to and renormalised over* the student's voxels) and ``p_S = softmax(o_S / tau)``;
- box agreement: ``sum_i p_T(i) (sum |c_S,i - c_T,r(i)| / d_T,r(i) + sum |log d_S,i - log d_T,r(i)|)``
  (the head's box loss form with the teacher's box as the target, weighted by the teacher's selection);
- features: ``mean_i,k (h_S,i,k - h_T,r(i),k)**2`` over the head's text-fused features (the linear
  head's input), so equal features give equal objectness and boxes.

All three are zero when the pruned path keeps every voxel (then it computes the unpruned forward).
``scripts/train_tsp3d.py --distill W --distill-terms ...`` picks the terms. Trained so far (issue 9, fifth
session): the selection term alone; with all three at W = 2 a fine-tune of ``tsp3d_curve_s3`` collapsed
(unpruned and pruned accuracy both fell within 300 steps; the same steps without distillation, or with
the selection term alone, did not), so the box and feature terms are not recommended as they stand.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def self_distillation(student: dict, teacher: dict, tau: float = 1.0) -> dict[str, torch.Tensor]:
    """``student`` / ``teacher``: outputs of ``Tsp3dNet.forward`` with and without pruning, same room
    and text. Returns ``distill_sel``, ``distill_box``, ``distill_feat`` (see the module docstring)."""
    rows = teacher["voxels"].lookup(student["voxels"].coords)
    ok = rows >= 0
    r = rows[ok]
    if r.numel() == 0:
        zero = student["objectness"].sum() * 0.0
        return {"distill_sel": zero, "distill_box": zero, "distill_feat": zero}
    t_log = F.log_softmax(teacher["objectness"][r].detach() / tau, 0)
    s_log = F.log_softmax(student["objectness"][ok] / tau, 0)
    p_t = t_log.exp()
    sel = (p_t * (t_log - s_log)).sum() * tau**2
    tb, sb = teacher["boxes"][r].detach(), student["boxes"][ok]
    size = tb[:, 3:].clamp(min=1e-3)
    err = ((sb[:, :3] - tb[:, :3]).abs() / size).sum(1) + \
        (torch.log(sb[:, 3:].clamp(min=1e-6)) - torch.log(size)).abs().sum(1)
    feat = (student["head_feats"][ok] - teacher["head_feats"][r].detach()).pow(2).mean()
    return {"distill_sel": sel, "distill_box": (p_t * err).sum(), "distill_feat": feat}
