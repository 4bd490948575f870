"""Fold pruned Gaussians into kept neighbours by moment matching (no gradients).

Each pruned Gaussian i is assigned to the kept Gaussian j among its ``candidates`` nearest
kept centres that minimises ||mu_i - mu_j||^2 / s_j^2 (s_j the largest scale of j). Every
kept Gaussian j then becomes the moment-matched sum of itself and its assigned set G_j,
with masses m = sigma * s1 * s2 * s3 (opacity times volume, the integral of the opacity
field up to a constant):

    M = sum m_i,   mu = sum m_i mu_i / M,
    Sigma = sum m_i (Sigma_i + (mu_i - mu)(mu_i - mu)^T) / M,
    colour (all SH coefficients) = sum m_i c_i / M,
    sigma' = min(0.99, 1 - prod_i (1 - sigma_i * V_i / V'))  (coverage of the parts, each
             diluted by its share V_i / V' of the merged volume; equals sigma_j when nothing merges).

Pruned Gaussians farther than ``max_distance`` times s_j from their kept neighbour are
dropped instead of merged (they would smear the kept one). This is an approximation in
the spirit of splat-transform's pairwise moment-matching decimation, not a published method.
"""

from __future__ import annotations

import numpy as np
import torch

from .geometry import covariance, decompose_covariance
from .scene import GaussianScene


def merge_pruned(scene: GaussianScene, keep: torch.Tensor, candidates: int = 4, max_distance: float = 3.0) -> GaussianScene:
    from scipy.spatial import cKDTree

    keep = keep.to(torch.bool)
    kept_idx = keep.nonzero().flatten()
    pruned_idx = (~keep).nonzero().flatten()
    out = scene.subset(kept_idx)
    if len(kept_idx) == 0 or len(pruned_idx) == 0:
        return out
    means = scene.means.to(torch.float64)
    k = min(candidates, len(kept_idx))
    tree = cKDTree(means[kept_idx].numpy())
    _, cand = tree.query(means[pruned_idx].numpy(), k=k, workers=-1)
    cand = torch.from_numpy(np.asarray(cand).reshape(len(pruned_idx), k))
    smax = scene.scale[kept_idx].max(dim=1).values.to(torch.float64).clamp_min(1e-12)
    d2 = ((means[pruned_idx][:, None, :] - means[kept_idx][cand]) ** 2).sum(-1) / smax[cand] ** 2
    best = d2.argmin(dim=1)
    target = cand[torch.arange(len(pruned_idx)), best]
    ok = d2[torch.arange(len(pruned_idx)), best] <= max_distance**2
    src = torch.cat([kept_idx, pruned_idx[ok]])  # scene indices of the parts
    dst = torch.cat([torch.arange(len(kept_idx)), target[ok]])  # kept slot each part goes to
    nk = len(kept_idx)

    sigma = scene.opacity[src].to(torch.float64)
    vol = scene.scale[src].to(torch.float64).prod(dim=1)
    mass = (sigma * vol).clamp_min(1e-30)

    def wsum(x):  # sum over parts of each kept slot of mass * x
        flat = (mass.reshape(-1, *[1] * (x.dim() - 1)) * x).reshape(len(src), -1)
        return torch.zeros(nk, flat.shape[1], dtype=torch.float64).index_add_(0, dst, flat).reshape(nk, *x.shape[1:])

    M = torch.zeros(nk, dtype=torch.float64).index_add_(0, dst, mass)
    mu = wsum(means[src]) / M[:, None]
    cov_parts = covariance(scene.quats[src].to(torch.float64), scene.scales[src].to(torch.float64))
    d = means[src] - mu[dst]
    cov = wsum(cov_parts + d[:, :, None] * d[:, None, :]) / M[:, None, None]
    sh0 = wsum(scene.sh0[src].to(torch.float64)) / M[:, None]
    shN = wsum(scene.shN[src].to(torch.float64)) / M[:, None, None] if scene.shN.shape[1] else out.shN.to(torch.float64)
    quats, log_scales = decompose_covariance(cov)
    new_vol = log_scales.exp().prod(dim=1).clamp_min(1e-30)
    share = (sigma * vol / new_vol[dst]).clamp(0.0, 0.999)
    log_transmit = torch.zeros(nk, dtype=torch.float64).index_add_(0, dst, torch.log1p(-share))
    new_sigma = (1.0 - torch.exp(log_transmit)).clamp(1e-4, 0.99)
    merged = torch.zeros(nk, dtype=torch.bool).index_fill_(0, target[ok], True)
    # untouched kept Gaussians keep their exact parameters
    f32 = torch.float32
    sel = merged
    out.means[sel] = mu[sel].to(f32)
    out.quats[sel] = quats[sel].to(f32)
    out.scales[sel] = log_scales[sel].to(f32)
    out.opacities[sel] = torch.logit(new_sigma[sel]).to(f32)
    out.sh0[sel] = sh0[sel].to(f32)
    if scene.shN.shape[1]:
        out.shN[sel] = shN[sel].to(f32)
    out.meta = dict(out.meta, merged_parts=int(ok.sum()), dropped_far=int((~ok).sum()))
    return out
