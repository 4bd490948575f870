"""Small random scenes for the training-time splat tests (one thread: see conftest.py)."""

import math

import torch

from prunekit_splat.scene import SH_C0, GaussianScene


def random_scene(n: int = 160, seed: int = 0, opacity_logit: float = 2.0, scale: float = 0.12) -> GaussianScene:
    """``n`` isotropic Gaussians uniformly in [-1, 1]^3 with random colours (SH degree 0)."""
    g = torch.Generator().manual_seed(seed)
    return GaussianScene(means=torch.rand(n, 3, generator=g) * 2 - 1, quats=torch.randn(n, 4, generator=g),
                         scales=torch.full((n, 3), math.log(scale)), opacities=torch.full((n,), opacity_logit),
                         sh0=(torch.rand(n, 3, generator=g) - 0.5) / SH_C0, shN=torch.zeros(n, 0, 3))
