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


def dilate_cells(kept: torch.Tensor, res: int, radius: int = 1) -> torch.Tensor:
    """Flat G^3 mask grown by ``radius`` cells: a cell is kept when any cell within Chebyshev distance
    ``radius`` (its 26-neighbourhood for radius 1) is kept (a 3-D max filter; ours, not the paper's)."""
    if radius <= 0:
        return kept.clone()
    k = kept.reshape(1, 1, res, res, res).float()
    grown = torch.nn.functional.max_pool3d(k, 2 * radius + 1, stride=1, padding=radius)
    return grown.reshape(-1) > 0


class GlobalAdam(torch.optim.Optimizer):
    """Adam with one second moment per tensor (the mean of g^2) instead of one per element.

    Per-element Adam normalises every cell's gradient to about the same step, so a cell's logit moves at
    the same speed whether the task needs it a lot or a little, and the ranking the budget should make
    (task gradient vs. penalty gradient, cell by cell) is lost. With a shared denominator the step stays
    proportional to each cell's net gradient: m_t = b1 m + (1-b1) g,  v_t = b2 v + (1-b2) mean(g^2),
    step = lr * m_hat / (sqrt(v_hat) + eps), clipped to +-``max_step``.
    """

    def __init__(self, params, lr: float = 1e-2, betas=(0.9, 0.99), eps: float = 1e-30, max_step: float = 0.1):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, max_step=max_step))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros((), dtype=p.dtype, device=p.device)
                st["t"] += 1
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).add_(p.grad.pow(2).mean(), alpha=1 - b2)
                m_hat = st["m"] / (1 - b1 ** st["t"])
                v_hat = st["v"] / (1 - b2 ** st["t"])
                step = (group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])).clamp(-group["max_step"], group["max_step"])
                p.sub_(step)


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


class CellMask(nn.Module):
    """A frozen, binary saliency grid (what compaction keeps): same interface as :class:`SaliencyGrid`."""

    def __init__(self, kept: torch.Tensor, res: int):
        super().__init__()
        if kept.numel() != res**3:
            raise ValueError(f"cell mask has {kept.numel()} cells, expected {res}^3 = {res**3}")
        self.res = res
        self.register_buffer("mask", kept.reshape(-1).to(torch.bool).clone())

    def forward(self, x: torch.Tensor, hard: bool = True) -> torch.Tensor:
        return self.mask[cell_index(x, self.res)].to(x.dtype)

    def kept(self) -> torch.Tensor:
        return self.mask

    def keep_fn(self):
        return cell_predicate(self.mask, self.res)
