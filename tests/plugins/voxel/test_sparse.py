"""Sparse ops against their dense torch.nn counterparts on small grids."""

import pytest
import torch
from torch import nn

from prunekit_voxel import sparse
from prunekit_voxel.sparse import (OFFSETS2, OFFSETS3, DownConv3d, SparseVoxels, SubmConv3d, UpConv3d, hash_coords,
                                   restrict_to_kept, unhash, unique_coords)

from .conftest import random_sites


def _dense(x: SparseVoxels, lo: int, n: int) -> torch.Tensor:
    return x.dense(torch.full((3,), lo), (n, n, n))[None]


def test_hash_roundtrip_and_lookup():
    c = torch.tensor([[0, 0, 0], [-5, 7, 3], [524287, -524288, 1], [1, 2, 3]])
    assert torch.equal(unhash(hash_coords(c)), c)
    x = SparseVoxels(c, torch.zeros(4, 1))
    q = torch.tensor([[1, 2, 3], [9, 9, 9], [-5, 7, 3]])
    assert x.lookup(q).tolist() == [3, -1, 1]
    with pytest.raises(ValueError):
        hash_coords(torch.tensor([[1 << 19, 0, 0]]))
    with pytest.raises(ValueError, match="unique"):
        SparseVoxels(torch.tensor([[1, 1, 1], [1, 1, 1]]), torch.zeros(2, 1)).lookup(c)


def test_subm_conv_matches_dense_conv3d():
    torch.manual_seed(0)
    n, lo = 7, -3  # negative coordinates on purpose
    coords = random_sites(90, n, seed=1, lo=lo)
    x = SparseVoxels(coords, torch.randn(90, 4, dtype=torch.float64))
    conv = SubmConv3d(4, 5).double()
    dense = nn.Conv3d(4, 5, 3, padding=1).double()
    with torch.no_grad():  # dense weight (out, in, kx, ky, kz) -> sparse (27, in, out)
        dense.weight.copy_(conv.weight.reshape(3, 3, 3, 4, 5).permute(4, 3, 0, 1, 2))
        dense.bias.copy_(conv.bias)
    y = conv(x)
    ref = dense(_dense(x, lo, n))[0]
    c = coords - lo
    assert torch.equal(y.coords, coords)
    torch.testing.assert_close(y.feats, ref[:, c[:, 0], c[:, 1], c[:, 2]].T)
    assert len(x.kernel_map()) == 27 and x.kernel_map()[13][0].tolist() == list(range(90))  # centre offset


def test_down_conv_matches_strided_dense_conv3d():
    torch.manual_seed(0)
    n, lo = 8, -4
    coords = random_sites(150, n, seed=2, lo=lo)
    x = SparseVoxels(coords, torch.randn(150, 3, dtype=torch.float64))
    conv = DownConv3d(3, 2).double()
    dense = nn.Conv3d(3, 2, 2, stride=2).double()
    with torch.no_grad():
        dense.weight.copy_(conv.weight.reshape(2, 2, 2, 3, 2).permute(4, 3, 0, 1, 2))
        dense.bias.copy_(conv.bias)
    y = conv(x)
    ref = dense(_dense(x, lo, n))[0]  # parent p of grid cell (c - lo) is (c - lo) // 2 = p_world + 2
    c = y.coords - lo // 2
    assert y.stride == 2 and len(y) == len(torch.unique(torch.div(coords, 2, rounding_mode="floor"), dim=0))
    torch.testing.assert_close(y.feats, ref[:, c[:, 0], c[:, 1], c[:, 2]].T)


def test_up_conv_generative_and_restricted_match_conv_transpose3d():
    torch.manual_seed(0)
    n, lo = 4, -2
    coords = random_sites(20, n, seed=3, lo=lo)
    x = SparseVoxels(coords, torch.randn(20, 3, dtype=torch.float64), stride=2)
    up = UpConv3d(3, 2).double()
    dense = nn.ConvTranspose3d(3, 2, 2, stride=2).double()
    with torch.no_grad():  # transposed weight is (in, out, kx, ky, kz)
        dense.weight.copy_(up.weight.reshape(2, 2, 2, 3, 2).permute(3, 4, 0, 1, 2))
        dense.bias.copy_(up.bias)
    ref = dense(_dense(x, lo, n))[0]
    y, rows = up(x)
    assert len(y) == 8 * len(x) and y.stride == 1 and torch.equal(rows, torch.arange(len(y)))
    c = y.coords - 2 * lo
    torch.testing.assert_close(y.feats, ref[:, c[:, 0], c[:, 1], c[:, 2]].T)
    # restricted: a target set of fine coordinates, some of whose parents are absent
    target = random_sites(60, 2 * n, seed=4, lo=2 * lo)
    yr, rows = up(x, target)
    expect = restrict_to_kept(target, x)
    assert torch.equal(rows, expect.nonzero().flatten()) and 0 < len(yr) < len(target)
    c = yr.coords - 2 * lo
    torch.testing.assert_close(yr.feats, ref[:, c[:, 0], c[:, 1], c[:, 2]].T)


def test_gradients_flow_to_features_and_weights():
    coords = random_sites(30, 5, seed=5)
    f = torch.randn(30, 2, requires_grad=True)
    conv, down, up = SubmConv3d(2, 3), DownConv3d(3, 3), UpConv3d(3, 1)
    y, _ = up(down(conv(SparseVoxels(coords, f))))
    y.feats.sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    assert all(p.grad is not None for m in (conv, down, up) for p in m.parameters())


@pytest.mark.parametrize("spread", [1, 1000])  # compact sites: index-grid path; spread out: sorted-key path
def test_kernel_map_equals_per_offset_lookup(spread):
    coords = random_sites(200, 9, seed=6, lo=-4) * spread
    coords = torch.cat([coords, coords[:50] + torch.tensor([0, 0, 1])])  # some neighbours at any spread
    coords = unique_coords(coords)[0]
    x = SparseVoxels(coords, torch.zeros(len(coords), 1))
    for o, (src, dst) in zip(OFFSETS3, x.kernel_map()):
        ref = x.lookup(coords + o)
        hit = (ref >= 0).nonzero().flatten()
        assert torch.equal(dst, hit) and torch.equal(src, ref[hit])


def test_kernel_map_raises_where_a_neighbour_cannot_be_keyed(monkeypatch):
    monkeypatch.setattr(sparse, "DENSE_LOOKUP_CELLS", 0)  # force the sorted-key path
    x = SparseVoxels(torch.tensor([[(1 << 19) - 1, 0, 0]]), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="must lie in"):
        x.kernel_map()


def test_unique_coords_equals_torch_unique_rows():
    c = torch.cat([random_sites(150, 6, seed=7, lo=-3)] * 2)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    got, inv = unique_coords(c)
    ref, ref_inv = torch.unique(c, dim=0, return_inverse=True)
    assert torch.equal(got, ref) and torch.equal(inv, ref_inv)


def test_offsets_tables():
    assert OFFSETS3.shape == (27, 3) and torch.equal(OFFSETS3[13], torch.zeros(3, dtype=torch.int64))
    assert OFFSETS2.shape == (8, 3) and len(torch.unique(OFFSETS2, dim=0)) == 8
