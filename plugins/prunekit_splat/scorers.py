"""Per-Gaussian importance scores. Each is ``(scene, context, config) -> prunekit.Scores``.

Higher = keep. Selection is always :func:`prunekit.select`; these functions only score.

- ``opacity``      sigma_i = sigmoid(opacity logit) — the 3DGS/gsplat cull criterion as a ranking.
- ``random``       a seeded random permutation (baseline).
- ``lightgaussian`` global significance (Fan et al., NeurIPS 2024, arXiv 2311.17245):
                   GS_i = sum over training-view pixels hit of sigma_i * T_i(p), times
                   gamma(V_i) = (V_i / V_ref)^beta with V_i the product of the activated scales,
                   V_ref the volume at rank 0.9 N of the descending sort, beta = 0.1.
- ``radsplat``     max over all view pixels of alpha_i(p) * T_i(p) (Niemeyer et al., CVPR 2024,
                   arXiv 2403.13806). By default alpha is the *antialiased* one of gsplat's
                   ``rasterize_mode="antialiased"`` (Mip-Splatting's 2D filter, Yu et al. 2024):
                   sigma_i * sqrt(det Sigma'_i / det(Sigma'_i + 0.3 I)) instead of sigma_i. Our
                   deviation: RadSplat prunes during training and fine-tunes after, where the
                   plain alpha works; scored post hoc, a sub-pixel splat with sigma ~ 1 reaches
                   alpha*T ~ 1 at its centre pixel, so the plain max picks tiny splats and leaves
                   holes (donut, keep 5 %: 13.8 dB vs 16.8 dB for random; antialiased 19.1 dB).
- ``sundae``       graph-Laplacian high-pass response of the centres (Yang et al., arXiv
                   2405.00676); kept with the two-band rule (see ``SundaeConfig.budget``).
- ``hits``         number of pixels a Gaussian passes the alpha >= 1/255 test in (baseline).
"""

from __future__ import annotations

import torch

import prunekit

from .configs import LightGaussianConfig, RadSplatConfig, RandomConfig, SundaeConfig
from .graph import high_pass_scores

EPS2D = 0.3  # the renderer's 2D low-pass (gsplat's eps2d), in pixels^2


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


def radsplat(scene, context, config: RadSplatConfig | None = None) -> prunekit.Scores:
    if config is not None and not config.antialiased:
        return prunekit.Scores.single(context.stats()["max_weight"])
    if "radsplat_antialiased" not in context.info:
        context.info["radsplat_antialiased"] = antialiased_max_weight(scene, context.cameras, context.progress)
    return prunekit.Scores.single(context.info["radsplat_antialiased"])


def antialiased_max_weight(scene, cameras, progress: bool = False) -> torch.Tensor:
    """max over views and pixels of alpha_i(p) T_i(p), with sigma_i scaled per view by the
    area-preserving factor sqrt(det Sigma_i / det(Sigma_i + 0.3 I)) of the projected covariance."""
    from .render import project, render

    best = torch.zeros(len(scene), dtype=scene.means.dtype, device=scene.means.device)
    sigma = scene.opacity
    it = cameras
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(cameras, desc="radsplat weights", unit="view")
    with torch.no_grad():
        for cam in it:
            a, b, c = project(scene, cam, eps2d=0.0).cov2d.unbind(-1)
            det_raw = (a * c - b * b).clamp_min(0)
            det_dil = ((a + EPS2D) * (c + EPS2D) - b * b).clamp_min(1e-30)
            comp = torch.sqrt(det_raw / det_dil).clamp(0, 1)
            logits = torch.logit((sigma * comp).clamp(1e-7, 1 - 1e-7))
            res = render(scene.replace(opacities=logits), cam, stats=("max_weight",))
            best = torch.maximum(best, res.stats["max_weight"].to(best.dtype))
    return best


def sundae(scene, context, config: SundaeConfig) -> prunekit.Scores:
    return prunekit.Scores.single(high_pass_scores(scene.means, max_neighbors=config.max_neighbors,
                                                   nn_quantile=config.nn_quantile))
