"""Occupancy-grid culling in the manner of nerfacc's ``OccGridEstimator`` (Li et al., nerfacc, 2023), in torch.

The baseline HollowNeRF is compared with. One G^3 grid over the unit cube keeps an EMA-max occupancy

    occ_c <- max(decay * occ_c, sigma(x_c) * step)      (x_c a random point in cell c, every ``every`` steps)

and a cell is occupied when occ_c > min(mean(occ), threshold). Samples in unoccupied cells are skipped.
Simplifications against nerfacc (said here so nobody reads more into the baseline): one level (no
multi-level cascade), every cell is refreshed at each update (nerfacc refreshes all cells during warm-up,
then a random subset plus the occupied ones), and samples stay stratified (no ray marching with early
termination). It culls compute, not parameters: the hash table keeps its size.
"""

from __future__ import annotations

import torch

from .saliency import cell_index


class OccupancyGrid:
    def __init__(self, res: int = 64, threshold: float = 0.01, decay: float = 0.95, every: int = 16,
                 warmup: int = 256, device: torch.device | str = "cpu"):
        self.res, self.threshold, self.decay, self.every, self.warmup = res, threshold, decay, every, warmup
        self.occ = torch.zeros(res**3, device=device)
        self.binary = torch.ones(res**3, dtype=torch.bool, device=device)
        ijk = torch.stack(torch.meshgrid(*[torch.arange(res, device=device)] * 3, indexing="ij"), -1).reshape(-1, 3)
        self._corners = ijk.float() / res

    @torch.no_grad()
    def update(self, step: int, density_fn, step_size: float, generator: torch.Generator | None = None,
               chunk: int = 65536) -> bool:
        """Refresh the grid at step ``step`` (every ``every`` steps after ``warmup``); True if refreshed."""
        if step < self.warmup or step % self.every:
            return False
        x = self._corners + torch.rand(self._corners.shape, generator=generator, device=self._corners.device) / self.res
        sigma = torch.cat([density_fn(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])
        self.occ = torch.maximum(self.occ * self.decay, sigma * step_size)
        self.binary = self.occ > min(float(self.occ.mean()), self.threshold)
        return True

    def keep(self, x: torch.Tensor) -> torch.Tensor:
        return self.binary[cell_index(x, self.res)]

    def occupied_fraction(self) -> float:
        return float(self.binary.float().mean())
