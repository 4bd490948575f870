"""Hash encoding: nerfstudio layout, hash formula, trilinear blend and its custom backward."""

import itertools

import pytest
import torch

from prunekit_hashgrid.encoding import HashGrid, corner_rows_and_weights, hash_vertices, interpolate, level_resolutions


def test_hash_formula_and_level_offsets():
    T = 2**11
    v = torch.tensor([[3, 5, 7]])
    expected = (3 * 1 ^ 5 * 2654435761 ^ 7 * 805459861) % T
    assert int(hash_vertices(v, T)) == expected
    # a point exactly on vertex (3, 5, 7) of level 1 reads that vertex's row with weight 1
    g = HashGrid(num_levels=2, min_res=8, max_res=16, log2_hashmap_size=11)
    R1 = float(g.scalings[1])
    rows, w = corner_rows_and_weights(torch.tensor([[3 / R1, 5 / R1, 7 / R1]]), g.scalings, T)
    assert float(w[0, 1].max()) == pytest.approx(1.0)
    assert int(rows[0, 1, int(w[0, 1].argmax())]) == T + expected


def test_resolutions_follow_nerfstudio_growth_rule():
    r = level_resolutions(16, 16, 2048)
    assert r[0] == 16 and r[-1] == 2048 and bool((r[1:] > r[:-1]).all())


def _naive(grid: HashGrid, x: torch.Tensor) -> torch.Tensor:
    """Loop reference: 8 corners per level, hash of each corner, trilinear weights."""
    out = []
    for p in x:
        feats = []
        for lvl, R in enumerate(grid.scalings.tolist()):
            s = p.double() * R
            lo, off = torch.floor(s), s - torch.floor(s)
            acc = 0
            for b in itertools.product((0, 1), repeat=3):
                v = torch.stack([lo[a] + (b[a] and off[a] > 0) for a in range(3)]).long()
                w = 1.0
                for a in range(3):
                    w = w * (off[a] if b[a] else 1 - off[a])
                row = lvl * grid.table_size + int(hash_vertices(v[None], grid.table_size))
                acc = acc + w.to(grid.hash_table.dtype) * grid.hash_table[row]
            feats.append(acc)
        out.append(torch.cat(feats))
    return torch.stack(out)


@pytest.mark.parametrize("table_size", [2**9, 777])  # power of two (int32 fast path) and generic modulo
def test_forward_and_gradient_match_naive_reference(table_size):
    torch.manual_seed(0)
    g = HashGrid(num_levels=3, min_res=4, max_res=32, table_size=table_size, hash_init_scale=1.0).double()
    x = torch.rand(40, 3, dtype=torch.float64)
    x[0] = torch.tensor([0.25, 0.5, 1.0])  # on lattice vertices / the cube face
    out = g(x)
    ref = _naive(g, x)
    assert torch.allclose(out, ref, atol=1e-12)
    up = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * up).sum(), g.hash_table)
    (grad_ref,) = torch.autograd.grad((ref * up).sum(), g.hash_table)
    assert torch.allclose(grad, grad_ref, atol=1e-12) and grad.abs().sum() > 0


def test_interpolate_gradcheck():
    torch.manual_seed(1)
    table = torch.randn(50, 2, dtype=torch.float64, requires_grad=True)
    rows = torch.randint(0, 50, (6, 2, 8), dtype=torch.int32)
    w = torch.rand(6, 2, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: interpolate(t, rows, w), (table,))


def test_wraps_nerfstudio_torch_hash_encoding():
    enc_mod = pytest.importorskip("nerfstudio.field_components.encodings")
    torch.manual_seed(0)
    ns = enc_mod.HashEncoding(num_levels=4, min_res=16, max_res=128, log2_hashmap_size=10, features_per_level=2,
                              hash_init_scale=0.5, implementation="torch")
    g = HashGrid.from_nerfstudio(ns)
    assert g.hash_table is ns.hash_table and g.table_size == 2**10
    x = torch.rand(500, 3)
    assert torch.allclose(g(x), ns(x), atol=1e-6)
