"""CBA: hashed membership, addition rule, interpolated features, targets."""

import pytest
import torch

from prunekit_voxel.cba import CBA, idw_interpolate, sample_candidates
from prunekit_voxel.sparse import SparseVoxels

from .conftest import random_sites

VS = 0.04


def _levels(n_full=80, n_keep=30, d=8):
    coords = random_sites(n_full, 6, seed=3)
    g = torch.Generator().manual_seed(0)
    full = SparseVoxels(coords, torch.randn(n_full, d, generator=g))
    keep = torch.zeros(n_full, dtype=torch.bool)
    keep[torch.randperm(n_full, generator=g)[:n_keep]] = True
    pruned = SparseVoxels(coords[keep], torch.randn(n_keep, d, generator=g))
    return full, pruned, keep


def _cba(bias: float, max_candidates=50):
    torch.manual_seed(0)
    cba = CBA(d=8, heads=2, layers=1, max_candidates=max_candidates).eval()
    with torch.no_grad():
        cba.head.weight.zero_()
        cba.head.bias.fill_(bias)
    return cba


def test_adds_exactly_the_missing_candidates_when_all_score_high():
    full, pruned, keep = _levels()
    out = _cba(5.0)(full, pruned, VS, torch.randn(3, 8))
    rows = out["rows"]
    assert len(rows) == 50 and len(torch.unique(rows)) == 50
    # brute-force membership (the module uses hashed lookup)
    missing = ~(full.coords[rows][:, None, :] == pruned.coords[None]).all(-1).any(1)
    assert torch.equal(out["added"], missing) and torch.equal(missing, ~keep[rows])
    v = out["voxels"]
    assert len(v) == len(pruned) + int(missing.sum())
    assert len(torch.unique(v.coords, dim=0)) == len(v)  # no duplicates
    assert torch.equal(v.coords[: len(pruned)], pruned.coords) and torch.equal(v.feats[: len(pruned)], pruned.feats)


def test_adds_nothing_below_the_threshold():
    full, pruned, _ = _levels()
    out = _cba(-5.0)(full, pruned, VS, torch.randn(3, 8))
    assert out["voxels"] is pruned and not out["added"].any()
    assert torch.all(torch.sigmoid(out["logits"]) < 0.15)


def test_added_features_are_interpolated_plus_fused():
    full, pruned, _ = _levels()
    out = _cba(5.0)(full, pruned, VS, torch.randn(3, 8))
    add = out["added"]
    xyz = (full.coords[out["rows"]][add].float() + 0.5) * VS
    expect = idw_interpolate((pruned.coords.float() + 0.5) * VS, pruned.feats, xyz) + out["fused"][add]
    torch.testing.assert_close(out["voxels"].feats[len(pruned):], expect)


def test_idw_interpolation():
    src = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [5.0, 5, 5]])
    f = torch.tensor([[0.0], [10.0], [99.0]])
    got = idw_interpolate(src, f, torch.tensor([[0.5, 0, 0], [1.0, 0, 0]]), k=2)
    torch.testing.assert_close(got[0], torch.tensor([5.0]))  # midpoint: equal weights
    torch.testing.assert_close(got[1], torch.tensor([10.0]), atol=1e-5, rtol=0)  # on a source: its value
    assert idw_interpolate(src[:0], f[:0], src).shape == (3, 1)


def test_candidate_sampling():
    assert torch.equal(sample_candidates(10, 2400), torch.arange(10))
    rows = sample_candidates(5000, 2400, seed=1)
    assert len(rows) == 2400 and len(torch.unique(rows)) == 2400 and rows.max() < 5000
    assert torch.equal(rows, sample_candidates(5000, 2400, seed=1))


def test_stride_mismatch_is_refused():
    full, pruned, _ = _levels()
    pruned.stride = 2
    with pytest.raises(ValueError, match="one level"):
        _cba(0.0)(full, pruned, VS, torch.randn(3, 8))
