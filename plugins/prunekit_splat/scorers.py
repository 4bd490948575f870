"""Per-Gaussian importance scores. Each is ``(scene, context, config) -> prunekit.Scores``.

Higher = keep. Selection is always :func:`prunekit.select`; these functions only score.

- ``opacity``      sigma_i = sigmoid(opacity logit) — the 3DGS/gsplat cull criterion as a ranking.
- ``random``       a seeded random permutation (baseline).
- ``lightgaussian`` global significance (Fan et al., NeurIPS 2024, arXiv 2311.17245):
                   GS_i = sum over training-view pixels hit of sigma_i * T_i(p), times
                   gamma(V_i) = (V_i / V_ref)^beta with V_i the product of the activated scales,
                   V_ref the volume at rank 0.9 N of the descending sort, beta = 0.1.
- ``radsplat``     max over all view pixels of alpha_i(p) * T_i(p) (Niemeyer et al., CVPR 2024,
                   arXiv 2403.13806).
- ``sundae``       graph-Laplacian high-pass response of the centres (Yang et al., arXiv
                   2405.00676); kept with the two-band rule (see ``SundaeConfig.budget``).
- ``hits``         number of pixels a Gaussian passes the alpha >= 1/255 test in (baseline).
"""

from __future__ import annotations

import torch

import prunekit

from .configs import LightGaussianConfig, RandomConfig, SundaeConfig
from .graph import high_pass_scores


def opacity(scene, context, config=None) -> prunekit.Scores:
    return prunekit.Scores.single(scene.opacity)


def random(scene, context, config: RandomConfig) -> prunekit.Scores:
    g = torch.Generator().manual_seed(int(config.seed))
    return prunekit.Scores.single(torch.rand(len(scene), generator=g))


def hits(scene, context, config=None) -> prunekit.Scores:
    return prunekit.Scores.single(context.stats()["hits"])


def lightgaussian(scene, context, config: LightGaussianConfig) -> prunekit.Scores:
    volume = scene.scale.prod(dim=1).to(torch.float64)
    n = len(scene)
    if n == 0:
        return prunekit.Scores.single(torch.zeros(0))
    desc = torch.sort(volume, descending=True).values
    v_ref = desc[min(n - 1, int(config.ref_rank * n))].clamp_min(1e-30)
    gamma = (volume / v_ref) ** config.v_pow
    return prunekit.Scores.single(context.stats()["sum_opacity_t"].to(torch.float64) * gamma)


def radsplat(scene, context, config=None) -> prunekit.Scores:
    return prunekit.Scores.single(context.stats()["max_weight"])


def sundae(scene, context, config: SundaeConfig) -> prunekit.Scores:
    return prunekit.Scores.single(high_pass_scores(scene.means, max_neighbors=config.max_neighbors))
