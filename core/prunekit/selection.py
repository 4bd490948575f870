"""``select(scores, budget) -> Mask``: the one place where scores become masks.

Ranking is by score, descending; NaN ranks lowest. Ties break deterministically by
group order, then by unit index (a stable sort), so the same inputs always give the
same mask.
"""

from __future__ import annotations

import numpy as np
import torch

from .budget import Budget
from .mask import Mask
from .scores import Scores


def _order(values: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Indices by value (NaN last when descending, first when ascending), ties by index."""
    v = values.to(torch.float64)
    v = torch.where(torch.isnan(v), torch.full_like(v, -float("inf")), v)
    # stable sort: equal values keep index order in both directions
    return torch.sort(v, descending=descending, stable=True).indices


def _first(values: torch.Tensor, k: int, descending: bool = True) -> torch.Tensor:
    """The set ``_order(values, descending)[:k]`` without a full sort: a selection (O(N)) of the
    k-th key, every key before it, then the lowest-index units equal to it (the stable order)."""
    return torch.from_numpy(_first_np(_np64(values), k, descending))


def _np64(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().to(torch.float64).numpy()


def _first_np(values: np.ndarray, k: int, descending: bool = True) -> np.ndarray:
    n = values.size
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    v = values.astype(np.float64)  # a copy: NaN is rewritten below
    v[np.isnan(v)] = -np.inf  # NaN ranks lowest
    key = np.negative(v, out=v) if descending else v  # the k smallest keys
    kth = np.partition(key, k - 1)[k - 1]
    before = np.flatnonzero(key < kth)
    ties = np.flatnonzero(key == kth)[: k - before.size]
    return np.concatenate([before, ties]).astype(np.int64)


def _floor_units(values: torch.Tensor, floor: int) -> torch.Tensor:
    keep = torch.zeros(values.numel(), dtype=torch.bool)
    if floor:
        keep[_first(values, floor)] = True
    return keep


def _select_flat(values: torch.Tensor, cost: torch.Tensor, forced: torch.Tensor, budget: Budget,
                 count: int | None, cost_limit: float | None) -> torch.Tensor:
    """Keep-mask over one flat vector; ``forced`` units are kept and counted first."""
    n = values.numel()
    keep = forced.clone()
    kind = budget.kind
    if kind == "threshold":
        v = torch.nan_to_num(values.to(torch.float64), nan=-float("inf"))
        return keep | (v >= budget.threshold)
    if kind == "cost":
        free = (~forced).nonzero().flatten()
        remaining = cost_limit - float(cost[forced].sum())
        order = free[_order(values[free])]
        cum = torch.cumsum(cost[order].to(torch.float64), 0)
        take = int((cum <= remaining + 1e-9 * max(1.0, abs(remaining))).sum()) if remaining >= 0 else 0
        # cum is non-decreasing, so the kept set is a prefix of the order
        keep[order[:take]] = True
        return keep
    k = max(0, min(n, count) - int(forced.sum()))
    k_low = int(k * budget.low_fraction)
    k_high = k - k_low
    v, keep_np = _np64(values), keep.numpy()  # keep_np shares keep's memory
    if k_high:
        keep_np[_among(v, ~keep_np, k_high, True)] = True
    if k_low:
        keep_np[_among(v, ~keep_np, k_low, False)] = True
    return keep


def _among(values: np.ndarray, allowed: np.ndarray, k: int, descending: bool) -> np.ndarray:
    """Indices of the first ``k`` allowed units in the stable order."""
    if allowed.all():
        return _first_np(values, k, descending)
    idx = np.flatnonzero(allowed)
    return idx[_first_np(values[idx], k, descending)]


def select(scores: Scores, budget: Budget) -> Mask:
    """Turn ``scores`` into a keep :class:`Mask` under ``budget``.

    See :class:`~prunekit.budget.Budget` for the budget kinds, scopes, floors and the
    two-band (``low_fraction``) rule.
    """
    names = list(scores.groups)
    if budget.scope == "per_group" or len(names) == 1:
        total_cost = sum(float(scores.unit_cost(k).sum()) for k in names) or 1.0
        out = {}
        for k in names:
            v = scores[k]
            forced = _floor_units(v, budget.floor)
            count = budget.count_for(v.numel()) if budget.kind in ("keep_ratio", "keep_count") else None
            c = scores.unit_cost(k)
            limit = None
            if budget.kind == "cost":
                limit = budget.cost if len(names) == 1 else budget.cost * float(c.sum()) / total_cost
            out[k] = _select_flat(v, c, forced, budget, count, limit)
        return Mask(out)

    # global scope: rank every group together, in group order for ties
    values = torch.cat([scores[k].to(torch.float64) for k in names])
    cost = torch.cat([scores.unit_cost(k).to(torch.float64) for k in names])
    forced = torch.cat([_floor_units(scores[k], budget.floor) for k in names])
    count = budget.count_for(values.numel()) if budget.kind in ("keep_ratio", "keep_count") else None
    flat = _select_flat(values, cost, forced, budget, count, budget.cost)
    return Mask(dict(zip(names, torch.split(flat, [scores[k].numel() for k in names]))))
