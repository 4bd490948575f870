"""A tiny Instant-NGP-style radiance field: hash grid -> density MLP -> colour MLP, optionally hollow.

    h = enc(x) * m(x)                      (m = saliency gate, 1 without a saliency grid)
    [raw_sigma, geo] = MLP_density(h);  sigma = exp(min(raw_sigma, 15)) * m(x)
    rgb = sigmoid(MLP_colour([geo, d]))    (d = unit view direction)

Gating the density as well as the features makes a pruned cell empty space, so render-time
skipping of samples in pruned cells is exact (our reading of HollowNeRF; the paper gates features).
"""

from __future__ import annotations

import torch
from torch import nn

from .encoding import HashGrid
from .saliency import SaliencyGrid


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class HollowField(nn.Module):
    """Radiance field on the unit cube. ``saliency_res=0`` gives a plain (dense) hash-grid field."""

    def __init__(self, grid: dict | None = None, saliency_res: int = 32, hidden: int = 64, geo_dim: int = 15,
                 init_logit: float = 2.0, background: tuple[float, float, float] | None = (1.0, 1.0, 1.0)):
        super().__init__()
        self.grid_spec = dict(grid or {})
        self.encoding = HashGrid(**self.grid_spec)
        self.grid_spec = self.encoding.spec()
        self.saliency = SaliencyGrid(saliency_res, init_logit) if saliency_res else None
        self.hidden, self.geo_dim = hidden, geo_dim
        self.density_mlp = _mlp([self.encoding.out_dim, hidden, 1 + geo_dim])
        self.color_mlp = _mlp([geo_dim + 3, hidden, hidden, 3])
        # None: a learned constant background colour (real captures); else a fixed colour
        self.learn_background = background is None
        bg = torch.zeros(3) if background is None else torch.tensor(background, dtype=torch.float32)
        self.background = nn.Parameter(bg, requires_grad=self.learn_background)

    def spec(self) -> dict:
        return {"grid": self.grid_spec, "saliency_res": self.saliency.res if self.saliency is not None else 0,
                "hidden": self.hidden, "geo_dim": self.geo_dim,
                "background": None if self.learn_background else [float(v) for v in self.background]}

    def bg_color(self) -> torch.Tensor:
        return torch.sigmoid(self.background) if self.learn_background else self.background

    def gate(self, x: torch.Tensor, hard: bool) -> torch.Tensor | None:
        return None if self.saliency is None else self.saliency(x, hard)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoding(x)

    def forward(self, x: torch.Tensor, d: torch.Tensor, hard: bool = False,
                gate: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma [N], rgb [N, 3]) at points ``x`` [N, 3] in [0,1]^3 seen along unit directions ``d``.

        ``gate``: precomputed m(x) (e.g. all ones for points already known to lie in kept cells).
        """
        m = self.gate(x, hard) if gate is None else gate
        h = self.features(x)
        if m is not None:
            h = h * m[:, None]
        out = self.density_mlp(h)
        sigma = torch.exp(torch.clamp(out[:, 0], max=15.0))
        if m is not None:
            sigma = sigma * m
        rgb = torch.sigmoid(self.color_mlp(torch.cat([out[:, 1:], d], -1)))
        return sigma, rgb

    def density(self, x: torch.Tensor, hard: bool = True) -> torch.Tensor:
        """sigma only (occupancy-grid updates)."""
        m = self.gate(x, hard)
        h = self.features(x)
        if m is not None:
            h = h * m[:, None]
        sigma = torch.exp(torch.clamp(self.density_mlp(h)[:, 0], max=15.0))
        return sigma if m is None else sigma * m

    def hash_params(self) -> int:
        return self.encoding.num_params()


class CompactField(HollowField):
    """A compacted HollowField (built by :func:`prunekit_hashgrid.compact.compact_field`).

    ``saliency`` is a frozen :class:`~prunekit_hashgrid.saliency.CellMask` and ``encoding`` a
    :class:`~prunekit_hashgrid.compact.CompactHashGrid` holding only rows reachable from kept cells. Hash
    lookups happen only for points in kept cells; other points get sigma = 0 (and rgb = sigmoid(MLP(0))).
    """

    def forward(self, x, d, hard=True, gate=None):
        m = self.saliency.mask[_cells(x, self.saliency.res)]
        h = x.new_zeros(x.shape[0], self.encoding.out_dim)
        if bool(m.any()):
            h = h.index_put((m.nonzero().flatten(),), self.encoding(x[m]))
        out = self.density_mlp(h)
        sigma = torch.exp(torch.clamp(out[:, 0], max=15.0)) * m.to(x.dtype)
        rgb = torch.sigmoid(self.color_mlp(torch.cat([out[:, 1:], d], -1)))
        return sigma, rgb

    def density(self, x, hard=True):
        return self.forward(x, torch.zeros_like(x))[0]


def _cells(x, res):
    from .saliency import cell_index

    return cell_index(x, res)
