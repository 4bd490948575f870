import math

import torch

from prunekit_splat.geometry import covariance, decompose_covariance, quat_to_rotmat, rotmat_to_quat
from prunekit_splat.merge import merge_pruned
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
    # coverage: each part dilutes into a sqrt(2)-larger volume; merged opacity exceeds one part's, stays < 1
    assert 0.5 < float(out.opacity[0]) < 0.99


def test_mass_weighting_and_far_parts_dropped():
    # a faint pruned Gaussian barely moves the kept one; one 10 scales away is not merged
    sc = scene([[0, 0, 0], [0.1, 0, 0], [5.0, 0, 0]], [[math.log(0.1)] * 3] * 3, [0.9, 0.01, 0.9],
               [[1, 1, 1], [-1, -1, -1], [0, 0, 0]])
    out = merge_pruned(sc, torch.tensor([True, False, False]))
    assert len(out) == 1 and out.meta["dropped_far"] == 1 and out.meta["merged_parts"] == 1
    assert float(out.means[0, 0]) < 0.002
    assert float(out.sh0[0, 0]) > 0.97


def test_untouched_kept_gaussians_are_bit_identical():
    sc = scene([[0, 0, 0], [10, 0, 0], [10.05, 0, 0]], [[math.log(0.1)] * 3] * 3, [0.8, 0.8, 0.8],
               [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    out = merge_pruned(sc, torch.tensor([True, True, False]))
    assert torch.equal(out.means[0], sc.means[0]) and torch.equal(out.scales[0], sc.scales[0])
    assert torch.equal(out.opacities[0], sc.opacities[0])
    assert not torch.equal(out.means[1], sc.means[1])
