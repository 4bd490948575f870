"""HollowNeRF's coarse 3-D saliency grid: a core gate over scene cells, budgeted by the core's ADMM enforcer.

Reconstruction of Xie et al., ICCV 2023 (no public code). The grid holds one logit s_c per cell c
of a G^3 partition of the unit cube. A point x in cell c(x) = floor(G x) gets the gate

    m(x) = 1[sigmoid(s_c(x)) > 0.5], backward d m / d s = sigmoid'(s)   (:func:`prunekit.gates.straight_through_gate`)
    m(x) = sigmoid(s_c(x) / T)       (soft variant, :func:`prunekit.gates.sigmoid_gate`; not used by the
                                     trainer: with m scaling both features and density, exp(raw) and the MLP
                                     absorb any soft scale, so the task loss cannot resist the budget)

which multiplies the hash-grid features at x *and* the density at x (see ``field``): a suppressed
point sends no gradient into its hash slots, so colliding slots serve salient cells. The gate is
piecewise constant per cell (our choice; the paper's interpolation is [unverified]) so that the
compacted model reproduces the trained one exactly inside kept cells.

The budget is HollowNeRF's ADMM constraint on the saliency density d = mean_c m_c <= C (hard gates,
straight-through gradient, so d is exactly the kept-cell fraction), via
:class:`prunekit.gates.AugmentedLagrangian`: loss += lam*(d - C) + rho/2*(d - C)^2, lam <- max(0, lam + eta*(d - C)).
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.gates import AugmentedLagrangian, sigmoid_gate, straight_through_gate


def cell_index(x: torch.Tensor, res: int) -> torch.Tensor:
    """Flat index (z-fastest: ((i*G)+j)*G+k) of the cell of each point ``x`` [N, 3] in [0, 1]^3."""
    ijk = torch.clamp(torch.floor(x * res), 0, res - 1).to(torch.int64)
    return (ijk[:, 0] * res + ijk[:, 1]) * res + ijk[:, 2]


class SaliencyGrid(nn.Module):
    """G^3 gate logits over the unit cube. ``forward(x, hard)`` -> gate values m(x) in [0, 1]."""

    def __init__(self, res: int = 32, init_logit: float = 0.5, temperature: float = 1.0, init_spread: float = 0.25):
        super().__init__()
        if res < 1:
            raise ValueError(f"saliency grid resolution must be >= 1, got {res}")
        self.res, self.temperature = res, temperature
        # logits spread uniformly over init_logit +- init_spread: cells that no ray constrains then cross 0
        # one by one under the budget pressure instead of all at once, which lets the dual variable track
        self.logits = nn.Parameter(float(init_logit) + (torch.rand(res**3) * 2 - 1) * init_spread)

    def forward(self, x: torch.Tensor, hard: bool = False) -> torch.Tensor:
        s = self.logits[cell_index(x, self.res)]
        return straight_through_gate(s, 0.5, self.temperature) if hard else sigmoid_gate(s, self.temperature)

    def density(self, hard: bool = True) -> torch.Tensor:
        """d = mean_c m_c: the kept-cell fraction (hard, straight-through gradient) or mean sigmoid (soft)."""
        if hard:
            return straight_through_gate(self.logits, 0.5, self.temperature).mean()
        return sigmoid_gate(self.logits, self.temperature).mean()

    def kept(self) -> torch.Tensor:
        """Hard cell mask [G^3]: sigmoid(s) > 0.5, i.e. s > 0."""
        return self.logits.detach() > 0

    def keep_fn(self):
        """Predicate points -> in a kept cell (a snapshot of the current mask), for render-time skipping."""
        return cell_predicate(self.kept(), self.res)


def cell_predicate(kept: torch.Tensor, res: int):
    """points [N, 3] -> bool [N]: the point lies in a cell with ``kept`` True (flat G^3 mask)."""
    return lambda x: kept[cell_index(x, res)]


class SaliencyBudget:
    """Drives the kept-cell fraction to ``target`` with the core's augmented-Lagrangian enforcer.

    The enforcer's target follows the core's cubic :class:`prunekit.Schedule` (Zhu & Gupta 2017) from 1 at
    ``start`` to ``target`` at ``end``, so that the dual variable tracks a slowly tightening constraint
    instead of overshooting a distant one (with a fixed target the dual overshoots and prunes far past C).
    ``penalty(grid, step)`` is 0 before ``start``; ``update(grid, step)`` does the dual ascent.
    """

    def __init__(self, target: float, start: int, end: int, rho: float = 1.0, eta: float = 0.05):
        from prunekit import Schedule

        if not 0.0 < target <= 1.0:
            raise ValueError(f"saliency target must be in (0, 1], got {target}")
        self.final, self.start = float(target), int(start)
        self.schedule = Schedule.cubic(self.start, max(self.start + 1, int(end)), 1, self.final)
        self.enforcer = AugmentedLagrangian(target=1.0, rho=rho, eta=eta)

    def penalty(self, grid: SaliencyGrid, step: int) -> torch.Tensor:
        if step < self.start:
            return grid.logits.new_zeros(())
        self.enforcer.target = self.schedule.keep_at(step)
        return self.enforcer.penalty(grid.density())

    def update(self, grid: SaliencyGrid, step: int) -> float:
        if step >= self.start:
            self.enforcer.target = self.schedule.keep_at(step)
            self.enforcer.update(float(grid.density().detach()))
        return self.enforcer.lam
