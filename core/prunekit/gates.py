"""Gates: learnable soft masks, and an augmented-Lagrangian budget enforcer.

- :func:`sigmoid_gate` — m = sigmoid(logits / T).
- :func:`straight_through_gate` — forward 1[sigmoid(logits) > threshold], backward the
  sigmoid's gradient (Bengio et al. 2013).
- :class:`HardConcrete` — the stretched, clamped binary-concrete gate of Louizos et al.
  (2018, "Learning Sparse Neural Networks through L0 Regularization", arXiv 1712.01312):
  u ~ U(0,1), s = sigmoid((log u - log(1-u) + log_alpha) / beta), z = clamp(s*(zeta-gamma)+gamma, 0, 1);
  expected L0 = sigmoid(log_alpha - beta * log(-gamma/zeta)).
- :class:`AugmentedLagrangian` — drives a density d (e.g. mean gate value) to a target C:
  penalty = lambda*g + (rho/2)*g^2 with g = d - C, and dual ascent lambda <- max(0, lambda + eta*g)
  (the ADMM-style budget used by HollowNeRF and APTP). With ``equality=True`` lambda may go
  negative and the constraint is d = C.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sigmoid_gate(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.sigmoid(logits / temperature)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, threshold, temperature):
        soft = torch.sigmoid(logits / temperature)
        ctx.save_for_backward(soft)
        ctx.temperature = temperature
        return (soft > threshold).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad):
        (soft,) = ctx.saved_tensors
        return grad * soft * (1 - soft) / ctx.temperature, None, None


def straight_through_gate(logits: torch.Tensor, threshold: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Hard 0/1 gate forward; sigmoid gradient backward."""
    return _StraightThrough.apply(logits, threshold, temperature)


class HardConcrete(nn.Module):
    """Hard-concrete gates over ``n`` units (Louizos et al. 2018)."""

    def __init__(self, n: int, init_keep: float = 0.9, beta: float = 2 / 3, gamma: float = -0.1, zeta: float = 1.1):
        super().__init__()
        self.beta, self.gamma, self.zeta = beta, gamma, zeta
        init = math.log(init_keep / (1 - init_keep)) if 0 < init_keep < 1 else 0.0
        self.log_alpha = nn.Parameter(torch.full((n,), init))

    def forward(self) -> torch.Tensor:
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def expected_l0(self) -> torch.Tensor:
        """Probability of each gate being non-zero."""
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.gamma / self.zeta))

    def scores(self) -> torch.Tensor:
        """Per-unit importance for :func:`prunekit.select` (the gate logits)."""
        return self.log_alpha.detach().clone()


class AugmentedLagrangian:
    """Budget enforcer: penalty(d) = lam*(d-C) + rho/2*(d-C)^2; ``update`` does dual ascent."""

    def __init__(self, target: float, rho: float = 1.0, eta: float = 0.1, equality: bool = False):
        self.target, self.rho, self.eta, self.equality = float(target), float(rho), float(eta), equality
        self.lam = 0.0

    def gap(self, density: torch.Tensor) -> torch.Tensor:
        return density - self.target

    def penalty(self, density: torch.Tensor) -> torch.Tensor:
        g = self.gap(density)
        if not self.equality:
            # inequality d <= C: only the violated part is penalised quadratically
            g_q = torch.clamp(g, min=-self.lam / self.rho) if self.rho > 0 else g
            return self.lam * g_q + 0.5 * self.rho * g_q**2
        return self.lam * g + 0.5 * self.rho * g**2

    def update(self, density: torch.Tensor | float) -> float:
        g = float(density) - self.target
        self.lam = self.lam + self.eta * g
        if not self.equality:
            self.lam = max(0.0, self.lam)
        return self.lam

    def state_dict(self) -> dict:
        return {"target": self.target, "rho": self.rho, "eta": self.eta, "equality": self.equality, "lam": self.lam}

    def load_state_dict(self, d: dict) -> None:
        self.target, self.rho, self.eta = d["target"], d["rho"], d["eta"]
        self.equality, self.lam = d["equality"], d["lam"]
