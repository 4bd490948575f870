"""Post-training compaction: free the hash-table entries that only pruned saliency cells reach.

A point x in cell c touches, at level l (resolution R_l), the 8 corner vertices floor/ceil(x R_l). Over
the cell [i/G, (i+1)/G) per axis these are the vertices floor(i R_l / G) .. ceil((i+1) R_l / G) (we widen
the cell by 1e-6 so float32 rounding of x R_l can never reach a vertex outside the enumerated set). A
table row is *reachable* when some vertex of some kept cell hashes to it; every other row is only ever
read from pruned cells, where the gate is 0 and samples are skipped, so it is dropped.

Enumeration is separable: with A_x[i, v] = "cell i touches vertex v along x", the reachable vertices are
the non-zeros of K x_1 A_x x_2 A_y x_3 A_z (K the kept-cell indicator), computed in slabs of x-vertices;
a level stops early once all its rows are reached (fine levels of big tables, where vertices >> rows).

The compacted table stores the kept rows' values plus their sorted logical row numbers (int32); a lookup
maps logical -> stored row by binary search (``torch.searchsorted``). Memory per kept row: F floats + 1 int32.
"""

from __future__ import annotations

import torch

from .encoding import HashGrid, hash_vertices


def _touch_matrix(G: int, R: int, margin: float = 1e-6) -> torch.Tensor:
    """A[i, v] = True when cell i (of G along an axis, widened by ``margin``) touches lattice vertex v (of R+1)
    at resolution R."""
    i = torch.arange(G, dtype=torch.float64)
    lo = torch.floor((i / G - margin) * R).clamp(0, R)
    hi = torch.ceil(((i + 1) / G + margin) * R).clamp(0, R)
    v = torch.arange(R + 1, dtype=torch.float64)
    return (v[None, :] >= lo[:, None]) & (v[None, :] <= hi[:, None])


def kept_vertices(kept_cells: torch.Tensor, res: int, R: int, max_slab: int = 1 << 24, margin: float = 1e-6):
    """Yield the lattice vertices [n, 3] (int64) at resolution ``R`` that some kept cell (flat G^3 mask,
    G = ``res``, cells widened by ``margin``; 0 gives the exact set) touches, in slabs of x; each vertex once."""
    K = kept_cells.reshape(res, res, res).float()
    if not bool(K.any()):
        return
    A = _touch_matrix(res, R, margin).float()
    Ky = (torch.einsum("ijk,jb->ibk", K, A) > 0).float()  # [G, R+1, G]: x-slice i of cells reaches vy
    chunk = max(1, max_slab // (R + 1) ** 2)
    for a0 in range(0, R + 1, chunk):
        ax = A[:, a0:a0 + chunk]  # [G, ca]
        cells = ax.any(1).nonzero().flatten()
        Kyz = (torch.einsum("ibk,kc->ibc", Ky[cells], A) > 0).float()  # [n, R+1, R+1]
        v = (torch.einsum("ia,ibc->abc", ax[cells], Kyz) > 0).nonzero()
        if v.numel():
            v[:, 0] += a0
            yield v


def reachable_rows(grid: HashGrid, kept_cells: torch.Tensor, res: int, max_slab: int = 1 << 24) -> torch.Tensor:
    """Bool [L * T]: table rows that some vertex of a kept cell (flat G^3 mask, G = ``res``) hashes to."""
    T = grid.table_size
    used = torch.zeros(grid.num_levels * T, dtype=torch.bool)
    for level, R in enumerate(int(r) for r in grid.scalings.tolist()):
        lvl = used[level * T:(level + 1) * T]
        for v in kept_vertices(kept_cells, res, R, max_slab):
            lvl[hash_vertices(v, T)] = True
            if bool(lvl.all()):
                break
    return used


class CompactHashGrid(HashGrid):
    """A :class:`HashGrid` that stores only some rows: ``hash_table`` [K, F], ``kept_rows`` [K] sorted int32."""

    def __init__(self, spec: dict, kept_rows: torch.Tensor, values: torch.Tensor | None = None):
        super().__init__(**spec, hash_init_scale=0.0)
        kept_rows = kept_rows.to(torch.int32)
        if kept_rows.numel() > 1 and not bool((kept_rows[1:] > kept_rows[:-1]).all()):
            raise ValueError("kept rows must be strictly increasing")
        self.register_buffer("kept_rows", kept_rows)
        n = int(kept_rows.numel())
        self.hash_table = torch.nn.Parameter(values.clone() if values is not None else torch.zeros(n, self.features_per_level))

    def storage_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.kept_rows, rows.contiguous()).clamp(max=max(0, self.kept_rows.numel() - 1))

    def has_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """True where logical ``rows`` are stored (compaction guarantees it for points in kept cells)."""
        pos = self.storage_rows(rows)
        return self.kept_rows[pos] == rows if self.kept_rows.numel() else torch.zeros_like(rows, dtype=torch.bool)

    def logical_size(self) -> int:
        return self.num_levels * self.table_size


def compact_grid(grid: HashGrid, kept_cells: torch.Tensor, res: int) -> tuple[CompactHashGrid, torch.Tensor]:
    """(compacted copy of ``grid`` keeping the rows reachable from ``kept_cells``, reachable mask [L*T])."""
    used = reachable_rows(grid, kept_cells, res)
    rows = used.nonzero().flatten()
    out = CompactHashGrid(grid.spec(), rows, grid.hash_table.detach()[rows])
    out.register_buffer("scalings", grid.scalings.clone(), persistent=False)
    return out, used


def compact_field(field, kept_cells: torch.Tensor | None = None):
    """A compacted copy of a hollow ``field``: pruned cells frozen out, unreachable rows freed.

    ``kept_cells`` defaults to the trained gate (s > 0). Returns (field, stats) with per-level row counts.
    Inside kept cells the copy computes exactly what the original computes with hard gates.
    """
    import copy

    from .field import CompactField
    from .saliency import CellMask

    if field.saliency is None:
        raise ValueError("this field has no saliency grid (a dense model): nothing to compact")
    res = field.saliency.res
    kept = field.saliency.kept() if kept_cells is None else kept_cells.reshape(-1).to(torch.bool)
    if kept.numel() != res**3:
        raise ValueError(f"cell mask has {kept.numel()} cells, the saliency grid {res}^3 = {res**3}")
    enc = field.encoding
    logical = enc.logical_size() if isinstance(enc, CompactHashGrid) else enc.num_levels * enc.table_size
    if isinstance(enc, CompactHashGrid):  # compact again with a stricter mask: expand to logical rows first
        full = HashGrid(**enc.spec(), hash_init_scale=0.0)
        full.hash_table.data[enc.kept_rows.long()] = enc.hash_table.detach()
        enc = full
    grid, used = compact_grid(enc, kept, res)
    enc_saved, field.encoding = field.encoding, None  # do not deep-copy the full table
    try:
        out = copy.deepcopy(field)
    finally:
        field.encoding = enc_saved
    out.__class__ = CompactField
    out.encoding = grid
    out.saliency = CellMask(kept, res)
    T = grid.table_size
    stats = {"rows_total": logical, "rows_kept": int(used.sum()), "cells_total": res**3, "cells_kept": int(kept.sum()),
             "rows_kept_per_level": [int(used[i * T:(i + 1) * T].sum()) for i in range(grid.num_levels)]}
    return out, stats
