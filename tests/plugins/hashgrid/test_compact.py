"""Compaction frees exactly the rows only pruned cells reach, and leaves renders in kept cells unchanged."""

import math
from fractions import Fraction

import torch

from prunekit_hashgrid.compact import compact_field, compact_grid
from prunekit_hashgrid.encoding import HashGrid, corner_rows_and_weights, hash_vertices
from prunekit_hashgrid.render import render_image
from prunekit_hashgrid.saliency import cell_index


def _points_in(kept: torch.Tensor, G: int, n: int, seed: int = 0) -> torch.Tensor:
    """Random points in kept cells, plus every kept cell's 8 corners pulled just inside it."""
    g = torch.Generator().manual_seed(seed)
    cells = kept.nonzero().flatten()
    ijk = torch.stack([cells // (G * G), (cells // G) % G, cells % G], 1).float()
    pick = ijk[torch.randint(0, len(cells), (n,), generator=g)]
    rand = (pick + torch.rand(n, 3, generator=g)) / G
    corners = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=torch.float32)
    edge = ((ijk[:, None, :] + corners[None] * (1 - 1e-6)) / G).reshape(-1, 3)
    pts = torch.cat([rand, edge]).clamp(0, 1)
    return pts[kept[cell_index(pts, G)]]


def test_rows_reached_from_kept_cells_are_kept_and_others_freed():
    torch.manual_seed(0)
    G = 6
    grid = HashGrid(num_levels=3, min_res=4, max_res=40, log2_hashmap_size=9)
    kept = torch.zeros(G**3, dtype=torch.bool)
    kept[torch.randperm(G**3)[:20]] = True
    small, used = compact_grid(grid, kept, G)
    # 1) safety: every row a point in a kept cell reads is stored
    rows, _ = corner_rows_and_weights(_points_in(kept, G, 20000), grid.scalings, grid.table_size)
    assert bool(used[rows.long()].all()) and bool(small.has_rows(rows).all())
    # 2) tightness: every kept row is the hash of a vertex of a kept cell, computed in exact rationals
    #    (widened by one lattice step, the float margin compaction allows itself)
    T, exact = grid.table_size, torch.zeros_like(used)
    for c in kept.nonzero().flatten().tolist():
        ijk = (c // (G * G), (c // G) % G, c % G)
        for lvl, R in enumerate(int(r) for r in grid.scalings.tolist()):
            rng = [range(max(0, math.floor(Fraction(i * R, G)) - 1), min(R, math.ceil(Fraction((i + 1) * R, G)) + 1) + 1)
                   for i in ijk]
            v = torch.cartesian_prod(*[torch.tensor(list(r)) for r in rng])
            exact[lvl * T + hash_vertices(v, T)] = True
    assert not bool((used & ~exact).any())
    # 3) it frees something, and the compact table holds exactly the kept rows' values
    assert 0 < int(used.sum()) < used.numel()
    assert torch.equal(small.hash_table.detach(), grid.hash_table.detach()[used])


def test_no_kept_cells_frees_everything():
    grid = HashGrid(num_levels=2, min_res=4, max_res=8, log2_hashmap_size=6)
    _, used = compact_grid(grid, torch.zeros(4**3, dtype=torch.bool), 4)
    assert not bool(used.any())


def test_compacted_field_renders_identically(tiny_hollow, tiny_views):
    fld = tiny_hollow.field
    kept = fld.saliency.kept()
    assert 0 < kept.float().mean() < 1
    small, stats = compact_field(fld)
    assert stats["rows_kept"] < stats["rows_total"]
    assert small.encoding.hash_table.numel() == stats["rows_kept"] * fld.encoding.features_per_level
    G = fld.saliency.res
    x = _points_in(kept, G, 3000)
    d = torch.nn.functional.normalize(torch.randn_like(x), dim=-1)
    with torch.no_grad():
        s0, c0 = fld(x, d, hard=True)
        s1, c1 = small(x, d)
    assert torch.equal(s0, s1) and torch.equal(c0, c1)
    held = tiny_views[1]
    for i in range(len(held)):
        a, qa, n = render_image(fld, held.rays_o[i], held.rays_d[i], 16, keep=fld.saliency.keep_fn())
        b, qb, _ = render_image(small, held.rays_o[i], held.rays_d[i], 16, keep=small.saliency.keep_fn())
        full, qf, _ = render_image(fld, held.rays_o[i], held.rays_d[i], 16, keep=None)
        assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, full, atol=1e-6)
        assert qa == qb < qf == n  # lookups skipped in pruned cells, and only there


def test_trained_budget_is_met(tiny_hollow):
    cfg = tiny_hollow.config
    frac = tiny_hollow.log["kept_cell_fraction"]
    assert 0.5 * cfg.saliency_target <= frac <= cfg.saliency_target + 1 / cfg.saliency_res**3
    dens = [d for _, d in tiny_hollow.log["density"]]
    assert dens[0] > 0.9  # started dense: the budget did the pruning
