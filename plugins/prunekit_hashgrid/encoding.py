"""Multiresolution hash encoding (Müller et al., Instant-NGP, SIGGRAPH 2022) in pure PyTorch.

Layout and hash are those of nerfstudio's ``HashEncoding(implementation="torch")`` so that a
nerfstudio table can be wrapped as is (:meth:`HashGrid.from_nerfstudio`):

- growth b = exp((ln max_res - ln min_res) / (L - 1)); level l has resolution R_l = floor(min_res * b^l);
- one table of shape (L * T, F); level l owns rows [l*T, (l+1)*T); every level is hashed;
- vertex v = (x, y, z) (integers) of level l lives in row  l*T + ((x*1) ^ (y*2654435761) ^ (z*805459861)) mod T;
- a point p in [0, 1]^3 is scaled to p*R_l, and its feature is the trilinear blend of its 8 corner
  vertices (floor/ceil per axis), weight prod_axis(offset if ceil else 1 - offset).

``T`` need not be a power of two here (``table_size``): the dense baseline "of the same parameter
count" in the benchmark uses that. With T = 2^log2_hashmap_size the layout is nerfstudio's exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PRIMES = (1, 2654435761, 805459861)


def level_resolutions(num_levels: int, min_res: int, max_res: int) -> torch.Tensor:
    """R_l = floor(min_res * b^l), b = exp((ln max_res - ln min_res)/(L-1)) (float64, like nerfstudio's numpy)."""
    growth = math.exp((math.log(max_res) - math.log(min_res)) / (num_levels - 1)) if num_levels > 1 else 1.0
    levels = torch.arange(num_levels, dtype=torch.float64)
    return torch.floor(min_res * growth**levels)


def hash_vertices(v: torch.Tensor, table_size: int) -> torch.Tensor:
    """Spatial hash of integer vertices ``v[..., 3]`` into [0, table_size) (no level offset)."""
    v = v.to(torch.int64)
    h = torch.bitwise_xor(v[..., 0] * PRIMES[0], v[..., 1] * PRIMES[1])
    return torch.bitwise_xor(h, v[..., 2] * PRIMES[2]) % table_size


def corner_rows_and_weights(x: torch.Tensor, scalings: torch.Tensor, table_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Table rows [N, L, 8] (int32) and trilinear weights [N, L, 8] of points ``x`` [N, 3] in [0, 1]^3.

    Corner k = 4*bx + 2*by + bz with bit 1 = ceil, 0 = floor on that axis (ceil = floor + 1[offset > 0],
    as torch.ceil). With a power-of-two T the hash is reduced per axis before the xor (same value,
    since (a ^ b) mod 2^k = (a mod 2^k) ^ (b mod 2^k) for a, b >= 0), in int32: 3-4x faster on CPU.
    """
    num_levels = scalings.numel()
    scaled = x[:, None, :] * scalings.to(x.dtype)[None, :, None]  # [N, L, 3]
    lo = torch.floor(scaled)
    off = scaled - lo
    lo = lo.to(torch.int64)
    pow2 = table_size & (table_size - 1) == 0
    axes = []
    for a in range(3):
        c = torch.stack([lo[..., a], lo[..., a] + (off[..., a] > 0)], -1) * PRIMES[a]  # [N, L, 2]
        axes.append((c & (table_size - 1)).to(torch.int32) if pow2 else c)
    h = (axes[0][..., :, None] ^ axes[1][..., None, :]).flatten(-2)
    h = (h[..., :, None] ^ axes[2][..., None, :]).flatten(-2)  # [N, L, 8]
    if not pow2:
        h = (h % table_size).to(torch.int32)
    rows = h + (torch.arange(num_levels, dtype=torch.int32, device=x.device) * table_size)[None, :, None]
    w = [torch.stack([1 - off[..., a], off[..., a]], -1) for a in range(3)]
    weights = (w[0][..., :, None] * w[1][..., None, :]).flatten(-2)
    weights = (weights[..., :, None] * w[2][..., None, :]).flatten(-2)
    return rows, weights


class _Interp(torch.autograd.Function):
    """out[n, l] = sum_k w[n, l, k] * table[rows[n, l, k]]; gradient to the table only (a scatter-add,
    much faster on CPU than the generic embedding backward). Positions carry no gradient in a NeRF."""

    @staticmethod
    def forward(ctx, table, rows, weights):
        flat = rows.reshape(-1).long()  # int64: index_add_ with int32 indices is ~10x slower on CPU
        ctx.save_for_backward(flat, weights)
        ctx.n = table.shape[0]
        feats = torch.index_select(table, 0, flat).view(*rows.shape, table.shape[-1])
        return (feats * weights[..., None]).sum(-2)

    @staticmethod
    def backward(ctx, grad):
        flat, weights = ctx.saved_tensors
        g = (weights[..., None] * grad[..., None, :]).reshape(-1, grad.shape[-1])
        out = torch.zeros(ctx.n, grad.shape[-1], dtype=grad.dtype, device=grad.device)
        out.index_add_(0, flat, g)
        return out, None, None


def interpolate(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Trilinear blend of table rows: [N, L, 8] rows/weights -> [N, L, F]."""
    return _Interp.apply(table, rows, weights.to(table.dtype))


class HashGrid(nn.Module):
    """Hash-grid encoder: ``forward(x[N, 3] in [0,1]^3) -> [N, L*F]`` (level-major, like nerfstudio)."""

    def __init__(self, num_levels: int = 12, min_res: int = 16, max_res: int = 512, log2_hashmap_size: int = 15,
                 features_per_level: int = 2, hash_init_scale: float = 1e-3, table_size: int | None = None):
        super().__init__()
        if num_levels < 1 or min_res < 1 or max_res < min_res or features_per_level < 1:
            raise ValueError("hash grid: need num_levels >= 1, 1 <= min_res <= max_res, features_per_level >= 1")
        self.num_levels, self.min_res, self.max_res = num_levels, min_res, max_res
        self.features_per_level = features_per_level
        self.table_size = int(table_size) if table_size is not None else 2**log2_hashmap_size
        self.register_buffer("scalings", level_resolutions(num_levels, min_res, max_res).float(), persistent=False)
        table = (torch.rand(self.table_size * num_levels, features_per_level) * 2 - 1) * hash_init_scale
        self.hash_table = nn.Parameter(table)

    @property
    def out_dim(self) -> int:
        return self.num_levels * self.features_per_level

    def spec(self) -> dict:
        return {"num_levels": self.num_levels, "min_res": self.min_res, "max_res": self.max_res,
                "features_per_level": self.features_per_level, "table_size": self.table_size}

    @classmethod
    def from_spec(cls, spec: dict) -> "HashGrid":
        return cls(**spec)

    @classmethod
    def from_nerfstudio(cls, enc) -> "HashGrid":
        """Wrap a nerfstudio ``HashEncoding`` built with ``implementation="torch"`` (shares its table)."""
        if getattr(enc, "tcnn_encoding", None) is not None:
            raise ValueError("nerfstudio HashEncoding uses tcnn (fused, different layout); build it with implementation='torch'")
        max_res = int(round(enc.min_res * float(enc.growth_factor) ** (enc.num_levels - 1)))
        grid = cls(enc.num_levels, enc.min_res, max_res, enc.log2_hashmap_size, enc.features_per_level)
        grid.register_buffer("scalings", enc.scalings.float().clone(), persistent=False)
        grid.hash_table = enc.hash_table
        return grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, weights = corner_rows_and_weights(x, self.scalings, self.table_size)
        return interpolate(self.hash_table, self.storage_rows(rows), weights).flatten(1)

    def storage_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Where logical table row r is stored (identity here; compacted grids remap)."""
        return rows

    def num_params(self) -> int:
        return self.hash_table.numel()
