"""Plugin specs of prunekit_splat (entry points in the ``prunekit.plugins`` group).

Imports only prunekit and the config dataclasses: no torch, no scipy at import time.
"""

from __future__ import annotations

from prunekit import Plugin

from .configs import LightGaussianConfig, NoConfig, RadSplatConfig, RandomConfig, SundaeConfig

_TARGET = "prunekit_splat.target:SPLAT_FILES"
_REQ = ("torch", "numpy", "scipy")
# every splat scorer also prunes inside gsplat training (PruneStrategy(scorer=NAME), needs gsplat)
_common = dict(domain="splat", target=_TARGET, requires=_REQ, extra="splat",
               hooks={"gsplat": "prunekit_splat.strategy:PruneStrategy"})

OPACITY = Plugin(name="opacity", description="Baseline: keep the most opaque Gaussians (sigmoid of the opacity logit)",
                 config=NoConfig, scorer="prunekit_splat.scorers:opacity", **_common)
RANDOM = Plugin(name="random", description="Baseline: keep a seeded random subset of Gaussians",
                config=RandomConfig, scorer="prunekit_splat.scorers:random", **_common)
HITS = Plugin(name="hits", description="Baseline: keep the Gaussians that touch the most pixels over the views",
              config=NoConfig, scorer="prunekit_splat.scorers:hits", **_common)
LIGHTGAUSSIAN = Plugin(
    name="lightgaussian", config=LightGaussianConfig, scorer="prunekit_splat.scorers:lightgaussian",
    description="LightGaussian global significance: sum of opacity x transmittance over view pixels, times volume^0.1",
    paper="Fan et al., LightGaussian, NeurIPS 2024, arXiv:2311.17245", **_common)
RADSPLAT = Plugin(
    name="radsplat", config=RadSplatConfig, scorer="prunekit_splat.scorers:radsplat",
    description="RadSplat: max blending weight alpha*T of each Gaussian over all view pixels (antialiased alpha)",
    paper="Niemeyer et al., RadSplat, CVPR 2024, arXiv:2403.13806", **_common)
SUNDAE = Plugin(
    name="sundae", config=SundaeConfig, scorer="prunekit_splat.scorers:sundae",
    description="SUNDAE spectral pruning: graph-Laplacian high-pass score of the centres, two-band keep rule",
    paper="Yang et al., SUNDAE: Spectrally Pruned Gaussian Fields with Neural Compensation, arXiv:2405.00676",
    **_common)
