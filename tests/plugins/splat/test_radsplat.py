"""RadSplat max-weight score: plain vs antialiased alpha (sub-pixel splats must not win)."""

import math

import torch

from prunekit_splat.cameras import Camera
from prunekit_splat.configs import RadSplatConfig
from prunekit_splat.context import SplatContext
from prunekit_splat.scene import GaussianScene
from prunekit_splat.scorers import radsplat


def two_splats():
    """Left: a sub-pixel splat (std 0.05 px) with sigma 0.98; right: a 3 px splat with sigma 0.9.
    Camera at the origin looking down +z, f = 20 px, the splats at depth 1, 0.5 apart."""
    means = torch.tensor([[-0.225, 0.025, 1.0], [0.275, 0.025, 1.0]])  # on pixel centres (11.5, 16.5), (21.5, 16.5)
    scales = torch.log(torch.tensor([[0.0025] * 3, [0.15] * 3]))
    ops = torch.logit(torch.tensor([0.98, 0.9]))
    scene = GaussianScene(means, torch.tensor([[1.0, 0, 0, 0]] * 2), scales, ops, torch.zeros(2, 3),
                          torch.zeros(2, 0, 3))
    K = torch.tensor([[20.0, 0, 16], [0, 20.0, 16], [0, 0, 1]])
    return scene, [Camera(torch.eye(4), K, 32, 32, "c")]


def test_plain_max_weight_prefers_the_sub_pixel_splat_antialiased_does_not():
    scene, cams = two_splats()
    plain = radsplat(scene, SplatContext(scene, cams), RadSplatConfig(antialiased=False)).groups["units"]
    aa = radsplat(scene, SplatContext(scene, cams), RadSplatConfig(antialiased=True)).groups["units"]
    assert plain[0] > plain[1]  # the artefact: alpha*T ~ sigma at the tiny splat's centre pixel
    assert aa[1] > 10 * aa[0]
    # the large splat's factor sqrt(det S / det(S + 0.3 I)) = 9 / 9.3 (S = 9 I px^2), peak alpha near sigma
    assert math.isclose(float(aa[1]), 0.9 * 9 / 9.3, rel_tol=0.05)
    # the tiny one: S = 0.0025 I px^2, factor 0.0025 / 0.3025
    assert math.isclose(float(aa[0]), 0.98 * 0.0025 / 0.3025, rel_tol=0.05)


def test_antialiased_scores_are_cached_per_context():
    scene, cams = two_splats()
    ctx = SplatContext(scene, cams)
    a = radsplat(scene, ctx, RadSplatConfig()).groups["units"]
    ctx.cameras = []  # a second call must not render again
    assert torch.equal(radsplat(scene, ctx, RadSplatConfig()).groups["units"], a)
