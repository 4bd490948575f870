"""Repairs of messy but readable splat content (not errors: trained scenes contain these).

- ``±inf`` opacity logits are clamped to ``±OPACITY_LOGIT_LIMIT`` (sigmoid(20) = 1 - 2e-9), the
  Gaussian is kept;
- rows with any non-finite mean, log-scale, quaternion, SH coefficient or NaN opacity are dropped;
- all-zero quaternions become the identity ``(1, 0, 0, 0)``.

Counts go to ``scene.meta["repairs"]`` (only non-zero counts; ``{}`` for a clean scene) and
one warning line is issued when anything was changed.
"""

from __future__ import annotations

import warnings

import torch

from ..scene import GaussianScene

OPACITY_LOGIT_LIMIT = 20.0


def repair_scene(scene: GaussianScene, source: str = "", all_finite: bool = False) -> GaussianScene:
    """``scene`` with the repairs above applied (the same object, meta["repairs"] = {}, if clean).

    ``all_finite=True`` is a reader's promise that every value is finite (e.g. the sum of the
    whole vertex block was finite): the NaN/inf passes are then skipped."""
    repairs: dict[str, int] = {}
    if not all_finite:
        scene = _repair_non_finite(scene, repairs)
    zero = (scene.quats == 0).all(dim=1)
    if bool(zero.any()):
        repairs["fixed_zero_quats"] = int(zero.sum())
        ident = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=scene.quats.dtype)
        scene = scene.replace(quats=torch.where(zero[:, None], ident, scene.quats))
    scene.meta = dict(scene.meta)
    scene.meta["repairs"] = repairs
    if repairs:
        what = ", ".join(f"{k}={v}" for k, v in repairs.items())
        warnings.warn(f"{source or 'scene'}: repaired messy content ({what})", stacklevel=3)
    return scene


def _repair_non_finite(scene: GaussianScene, repairs: dict[str, int]) -> GaussianScene:
    op = scene.opacities
    inf = torch.isinf(op)
    if bool(inf.any()):
        repairs["clamped_inf_opacity"] = int(inf.sum())
        scene = scene.replace(opacities=torch.where(inf, op.sign() * OPACITY_LOGIT_LIMIT, op))
    finite = torch.isfinite(scene.opacities)  # only NaN is left to catch here
    for t in (scene.means, scene.scales, scene.quats, scene.sh0, scene.shN):
        if not bool(torch.isfinite(t.sum())):  # cheap test first: a NaN/inf anywhere makes the sum non-finite
            finite &= torch.isfinite(t).reshape(len(t), -1).all(dim=1)
    if not bool(finite.all()):
        repairs["dropped_nan_rows"] = int((~finite).sum())
        scene = scene.subset(finite)
    return scene
