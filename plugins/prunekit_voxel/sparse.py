"""A sparse voxel tensor in pure PyTorch and the ops a small multi-level backbone needs.

A :class:`SparseVoxels` holds integer grid coordinates ``coords`` (N x 3, int64, in the
units of its own level) and features ``feats`` (N x C), plus ``stride`` (the level's voxel
size as a multiple of the finest one). Coordinates are unique. Neighbour lookup is by
hashed keys: each axis is offset by 2**19 and packed into a 20-bit field of one int64
(METHODS.md 8.2), keys are sorted once and looked up with ``torch.searchsorted``; kernel maps
use an index grid over the bounding box when it is small enough (:meth:`SparseVoxels.kernel_map`).

Ops (each has an exact dense ``torch.nn`` counterpart, see the tests):

- :class:`SubmConv3d`   submanifold 3x3x3 convolution: outputs only at input sites,
  ``y_i = b + sum_{o in {-1,0,1}^3} W_o^T x_{nbr(c_i + o)}`` (absent neighbours are zero),
  equal to a dense ``Conv3d(k=3, padding=1)`` read at the active sites.
- :class:`DownConv3d`   strided 2x2x2 convolution, stride 2: output sites are the parents
  ``floor(c / 2)``, ``y_p = b + sum_{o in {0,1}^3} W_o^T x_{2p + o}`` (dense ``Conv3d(k=2, s=2)``).
- :class:`UpConv3d`     transposed 2x2x2 convolution, stride 2. *Generative*: every parent
  makes all 8 children, ``y_{2p+o} = b + W_o^T x_p`` (dense ``ConvTranspose3d(k=2, s=2)``);
  *restricted*: only at given target coordinates whose parent exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

_BITS = 20
_OFF = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1
#: :meth:`SparseVoxels.kernel_map` uses a dense index grid over the bounding box up to this many cells (128 MiB)
DENSE_LOOKUP_CELLS = 1 << 24
#: offsets of a 3x3x3 kernel, in the (x, y, z) order of a dense Conv3d weight's last three dims
OFFSETS3 = torch.stack(torch.meshgrid(*[torch.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
#: offsets of a 2x2x2 kernel (child position inside its parent)
OFFSETS2 = torch.stack(torch.meshgrid(*[torch.arange(0, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)


def hash_coords(coords: torch.Tensor) -> torch.Tensor:
    """Pack integer (x, y, z) into one int64 key, 20 bits per axis (|c| < 2**19)."""
    c = coords.to(torch.int64)
    if c.numel() and (int(c.min()) < -_OFF or int(c.max()) >= _OFF):
        raise ValueError(f"voxel coordinates must lie in [-{_OFF}, {_OFF}); got [{int(c.min())}, {int(c.max())}]")
    c = c + _OFF
    return (c[:, 0] << (2 * _BITS)) | (c[:, 1] << _BITS) | c[:, 2]


def unhash(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hash_coords`."""
    return torch.stack([(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK], 1) - _OFF


@dataclass(eq=False)
class SparseVoxels:
    """Unique integer voxel coordinates with features at one level of a sparse network."""

    coords: torch.Tensor
    feats: torch.Tensor
    stride: int = 1
    _index: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _maps: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.coords = torch.as_tensor(self.coords).to(torch.int64).reshape(-1, 3)
        if self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"{self.coords.shape[0]} coordinates but {self.feats.shape[0]} feature rows")

    def __len__(self) -> int:
        return self.coords.shape[0]

    def _sorted(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._index is None:
            keys = hash_coords(self.coords)
            sk, order = torch.sort(keys)
            if sk.numel() > 1 and bool((sk[1:] == sk[:-1]).any()):
                raise ValueError("SparseVoxels coordinates must be unique")
            self._index = (sk, order)
        return self._index

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """Row index of each query coordinate, -1 where it is not present."""
        sk, order = self._sorted()
        q = hash_coords(coords)
        if sk.numel() == 0:
            return torch.full_like(q, -1)
        pos = torch.searchsorted(sk, q).clamp_(max=sk.numel() - 1)
        return torch.where(sk[pos] == q, order[pos], torch.full_like(q, -1))

    def contains(self, coords: torch.Tensor) -> torch.Tensor:
        return self.lookup(coords) >= 0

    def replace(self, feats: torch.Tensor) -> "SparseVoxels":
        """Same sites (and cached neighbour maps), new features."""
        out = SparseVoxels(self.coords, feats, self.stride)
        out._index, out._maps = self._index, self._maps
        return out

    def select(self, keep: torch.Tensor) -> "SparseVoxels":
        """The sites where the bool mask ``keep`` is True."""
        return SparseVoxels(self.coords[keep], self.feats[keep], self.stride)

    def kernel_map(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """For each 3x3x3 offset: (input rows, output rows) of neighbour pairs, ordered by output row (cached)."""
        if "subm3" not in self._maps:
            nbr = self._neighbours(OFFSETS3)
            k, dst = (nbr >= 0).nonzero(as_tuple=True)
            counts = torch.bincount(k, minlength=len(OFFSETS3)).tolist()
            self._maps["subm3"] = list(zip(torch.split(nbr[k, dst], counts), torch.split(dst, counts)))
        return self._maps["subm3"]

    def _neighbours(self, offsets: torch.Tensor) -> torch.Tensor:
        """(K, N) row of ``coords + offsets[k]`` for every site, -1 where absent. Where the bounding box
        (one voxel of margin) has at most ``min(DENSE_LOOKUP_CELLS, 64 N)`` cells, an index grid over it
        (O(1) per query); otherwise the sorted-key lookup of :meth:`lookup` (O(log N) per query)."""
        c = self.coords
        if not len(c):
            return torch.full((len(offsets), 0), -1, dtype=torch.int64)
        lo = c.min(0).values - 1
        ext = c.max(0).values - lo + 2
        if int(ext.prod()) <= min(DENSE_LOOKUP_CELLS, 64 * len(c)):
            step = torch.stack([ext[1] * ext[2], ext[2], torch.ones_like(ext[2])])
            lin = ((c - lo) * step).sum(1)
            grid = torch.full((int(ext.prod()),), -1, dtype=torch.int64)
            grid[lin] = torch.arange(len(c))
            return grid[lin[None, :] + (offsets * step).sum(1)[:, None]]
        return self.lookup((c[None, :, :] + offsets[:, None, :]).reshape(-1, 3)).reshape(len(offsets), -1)

    def dense(self, origin: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
        """(C, X, Y, Z) dense grid with this tensor's features, for tests and drawing."""
        out = self.feats.new_zeros((self.feats.shape[1], *shape))
        c = self.coords - origin
        out[:, c[:, 0], c[:, 1], c[:, 2]] = self.feats.T
        return out


class _SparseConv(nn.Module):
    """Weights ``(kernel volume, cin, cout)`` and an optional bias, uniform(+-1/sqrt(fan_in)) like torch's convs."""

    volume = 27

    def __init__(self, cin: int, cout: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(self.volume, cin, cout))
        self.bias = nn.Parameter(torch.empty(cout)) if bias else None
        bound = 1.0 / (self.volume * cin) ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)


class SubmConv3d(_SparseConv):
    """Submanifold 3x3x3 sparse convolution (outputs at the input sites)."""

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        out = x.feats.new_zeros(len(x), self.weight.shape[2])
        for k, (src, dst) in enumerate(x.kernel_map()):
            if src.numel():
                out.index_add_(0, dst, x.feats[src] @ self.weight[k])
        if self.bias is not None:
            out = out + self.bias
        return x.replace(out)


def unique_coords(coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(coords, dim=0, return_inverse=True)``, same rows in the same (lexicographic) order,
    through the 1-D int64 keys of :func:`hash_coords` (whose order is lexicographic in (x, y, z)): a
    1-D sort instead of a row sort, several times faster."""
    keys, inv = torch.unique(hash_coords(coords), return_inverse=True)
    return unhash(keys), inv


def parents(coords: torch.Tensor) -> torch.Tensor:
    """Parent cell of each coordinate one level coarser: ``floor(c / 2)``."""
    return torch.div(coords, 2, rounding_mode="floor")


def child_slot(coords: torch.Tensor) -> torch.Tensor:
    """Index 0..7 of each coordinate inside its parent (order of :data:`OFFSETS2`)."""
    o = coords - 2 * parents(coords)
    return o[:, 0] * 4 + o[:, 1] * 2 + o[:, 2]


class DownConv3d(_SparseConv):
    """Strided 2x2x2 sparse convolution, stride 2 (outputs at the parent cells)."""

    volume = 8

    def forward(self, x: SparseVoxels) -> SparseVoxels:
        pc, inv = unique_coords(parents(x.coords))
        slot = child_slot(x.coords)
        out = x.feats.new_zeros(pc.shape[0], self.weight.shape[2])
        # one matmul per slot: (N_k, cin) @ (cin, cout)
        for k in range(8):
            rows = (slot == k).nonzero().flatten()
            if rows.numel():
                out.index_add_(0, inv[rows], x.feats[rows] @ self.weight[k])
        if self.bias is not None:
            out = out + self.bias
        return SparseVoxels(pc, out, x.stride * 2)


class UpConv3d(_SparseConv):
    """Transposed 2x2x2 sparse convolution, stride 2.

    ``forward(x)`` is generative (all 8 children of every site); ``forward(x, target)``
    outputs only at ``target``'s coordinates whose parent is in ``x`` (the others are
    dropped); the second return value gives each output's row in ``target``.
    """

    volume = 8

    def forward(self, x: SparseVoxels, target: torch.Tensor | None = None) -> tuple[SparseVoxels, torch.Tensor]:
        """Returns (upsampled voxels, row of each output in ``target``; arange when generative)."""
        if x.stride % 2:
            raise ValueError(f"cannot upsample a stride-{x.stride} level")
        if target is None:
            coords = (2 * x.coords[:, None, :] + OFFSETS2[None]).reshape(-1, 3)
            par = torch.arange(len(x)).repeat_interleave(8)
            rows = torch.arange(coords.shape[0])
        else:
            par_all = x.lookup(parents(target))
            rows = (par_all >= 0).nonzero().flatten()
            coords, par = target[rows], par_all[rows]
        slot = child_slot(coords)
        out = x.feats.new_zeros(coords.shape[0], self.weight.shape[2])
        for k in range(8):  # one matmul per child slot
            r = (slot == k).nonzero().flatten()
            if r.numel():
                out[r] = x.feats[par[r]] @ self.weight[k]
        if self.bias is not None:
            out = out + self.bias
        return SparseVoxels(coords, out, x.stride // 2), rows


def restrict_to_kept(fine: torch.Tensor, kept_coarse: SparseVoxels) -> torch.Tensor:
    """Bool mask: fine coordinates whose parent is among the kept coarse sites (METHODS 8.2)."""
    return kept_coarse.contains(parents(fine))
