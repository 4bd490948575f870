import math

import pytest
import torch

from prunekit_splat.geometry import covariance, decompose_covariance, quat_to_rotmat, rotmat_to_quat
import prunekit
from prunekit_splat.merge import merge_progressive, merge_pruned
from prunekit_splat.scene import GaussianScene


def scene(means, log_scales, opac, colours):
    n = len(means)
    return GaussianScene(torch.tensor(means, dtype=torch.float32), torch.tensor([[1.0, 0, 0, 0]] * n),
                         torch.tensor(log_scales, dtype=torch.float32), torch.logit(torch.tensor(opac)),
                         torch.tensor(colours, dtype=torch.float32), torch.zeros(n, 0, 3))


def test_quaternion_round_trip_and_covariance_decomposition():
    torch.manual_seed(0)
    q = torch.randn(50, 4, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    assert torch.allclose(rotmat_to_quat(quat_to_rotmat(q)), q, atol=1e-9)
    s = torch.randn(50, 3, dtype=torch.float64) * 0.5
    cov = covariance(q, s)
    q2, s2 = decompose_covariance(cov)
    assert torch.allclose(covariance(q2, s2), cov, atol=1e-9)


def test_two_equal_gaussians_merge_to_moment_matched_one():
    # kept at x=0, pruned at x=0.2, same isotropic scale 0.1, same mass: merged mean 0.1,
    # variance along x = 0.01 + 0.1^2 (half the squared separation, both sides), colour average
    sc = scene([[0, 0, 0], [0.2, 0, 0]], [[math.log(0.1)] * 3] * 2, [0.5, 0.5], [[1, 0, 0], [0, 1, 0]])
    out = merge_pruned(sc, torch.tensor([True, False]))
    assert len(out) == 1
    assert torch.allclose(out.means[0], torch.tensor([0.1, 0, 0]), atol=1e-6)
    cov = covariance(out.quats.double(), out.scales.double())[0]
    assert torch.allclose(torch.diagonal(cov), torch.tensor([0.02, 0.01, 0.01], dtype=torch.float64), atol=1e-6)
    assert torch.allclose(out.sh0[0], torch.tensor([0.5, 0.5, 0.0]), atol=1e-6)
    # alpha mass: 2 * 0.5 * 3 * 0.01 spread over the merged cross-section 0.1414*0.1*2 + 0.01
    assert float(out.opacity[0]) == pytest.approx(0.03 / (2 * 0.1 * math.sqrt(0.02) + 0.01), rel=1e-4)


def test_mass_weighting_and_mahalanobis_assignment():
    # a faint pruned Gaussian barely moves the kept one it joins
    sc = scene([[0, 0, 0], [0.1, 0, 0]], [[math.log(0.1)] * 3] * 2, [0.9, 0.01], [[1, 1, 1], [-1, -1, -1]])
    out = merge_pruned(sc, torch.tensor([True, False]))
    assert float(out.means[0, 0]) < 0.002 and float(out.sh0[0, 0]) > 0.97
    # the pruned point is nearer kept A in metres but nearer kept B in B's own (large) spread: it joins B
    sc = scene([[0, 0, 0], [1.0, 0, 0], [0.4, 0, 0]], [[math.log(0.05)] * 3, [math.log(1.0)] * 3, [math.log(0.05)] * 3],
               [0.9, 0.9, 0.9], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = merge_pruned(sc, torch.tensor([True, True, False]))
    assert torch.equal(out.means[0], sc.means[0]) and not torch.equal(out.means[1], sc.means[1])


def test_progressive_merge_hits_the_budget_and_sums_scores():
    g = torch.Generator().manual_seed(0)
    n = 500
    means = torch.rand(n, 3, generator=g)
    sc = scene(means.tolist(), [[math.log(0.02)] * 3] * n, [0.5] * n, torch.rand(n, 3, generator=g).tolist())
    scores = torch.rand(n, generator=g)
    for rounds in (1, 3):
        out = merge_progressive(sc, scores, prunekit.Budget(keep_ratio=0.1), rounds=rounds)
        assert len(out) == 50 and out.meta["merge_rounds"] == rounds
    # a threshold budget merges once
    out = merge_progressive(sc, scores, prunekit.Budget(threshold=0.5), rounds=4)
    assert len(out) == int((scores >= 0.5).sum()) and out.meta["merge_rounds"] == 1
    # merged Gaussians cover more: total alpha mass is roughly conserved (within the 0.99 opacity cap)
    area = lambda x: (x.scale[:, 0] * x.scale[:, 1] + x.scale[:, 1] * x.scale[:, 2] + x.scale[:, 0] * x.scale[:, 2])  # noqa: E731
    before = float((sc.opacity * area(sc)).sum())
    after = float((out.opacity * area(out)).sum())
    assert 0.7 * before < after <= before * 1.0001


def test_untouched_kept_gaussians_are_bit_identical():
    sc = scene([[0, 0, 0], [10, 0, 0], [10.05, 0, 0]], [[math.log(0.1)] * 3] * 3, [0.8, 0.8, 0.8],
               [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = merge_pruned(sc, torch.tensor([True, True, False]))
    assert torch.equal(out.means[0], sc.means[0]) and torch.equal(out.scales[0], sc.scales[0])
    assert torch.equal(out.opacities[0], sc.opacities[0])
    assert not torch.equal(out.means[1], sc.means[1])
