"""Masks, layer densities and the prune/grow step, all through the prunekit core.

Masks are :class:`prunekit.Mask` objects with one flat group per prunable weight
(conv and linear ``*.weight``; biases and norm layers stay dense). Every score-to-mask
step goes through :func:`prunekit.select`.

- ERK layer densities (Evci et al., RigL, arXiv 1911.11134): density of layer l is
  min(1, eps * (sum of its dims) / (product of its dims)), eps chosen so the total
  kept count equals density * total.
- Prune/grow (FedTiny section "progressive pruning", also FedMef's server): at a
  prune round t, per layer, k = floor(f(t) * active) active weights with the smallest
  |w| are removed and the k inactive weights with the largest aggregated |gradient|
  are grown (initialised to 0), so the density stays fixed.
- f(t) = (alpha / 2) * (1 + cos(pi * t / T_end)) is expressed as a
  :class:`prunekit.Schedule` whose ``keep_at(t)`` is 1 - f(t) at the prune rounds
  (the fraction of active weights that survive the prune half of the step).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from prunekit import Budget, Mask, Schedule, Scores, select


def prunable_names(model: torch.nn.Module) -> list[str]:
    """Names of conv/linear weights, in module order."""
    out = []
    for mname, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            out.append(f"{mname}.weight" if mname else "weight")
    return out


def prunable_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    params = dict(model.named_parameters())
    return {n: tuple(params[n].shape) for n in prunable_names(model)}


def erk_densities(shapes: Mapping[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdos-Renyi-Kernel densities meeting ``density`` overall (dense layers capped at 1)."""
    if density >= 1.0:
        return {k: 1.0 for k in shapes}
    sizes = {k: math.prod(s) for k, s in shapes.items()}
    raw = {k: sum(s) / math.prod(s) for k, s in shapes.items()}
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        budget = density * total - sum(sizes[k] for k in dense)
        free = sum(raw[k] * sizes[k] for k in shapes if k not in dense)
        eps = budget / free if free > 0 else 0.0
        over = {k for k in shapes if k not in dense and eps * raw[k] > 1.0}
        if not over:
            break
        dense |= over
    return {k: 1.0 if k in dense else eps * raw[k] for k in shapes}


def layer_densities(shapes: Mapping[str, tuple[int, ...]], density: float, layout: str = "erk") -> dict[str, float]:
    if layout == "uniform":
        return {k: density for k in shapes}
    if layout == "erk":
        return erk_densities(shapes, density)
    raise ValueError(f"unknown density layout {layout!r}")


def keep_counts(shapes: Mapping[str, tuple[int, ...]], densities: Mapping[str, float]) -> dict[str, int]:
    return {k: max(1, min(math.prod(s), int(round(densities[k] * math.prod(s))))) for k, s in shapes.items()}


def random_mask(shapes: Mapping[str, tuple[int, ...]], density: float, seed: int, layout: str = "erk") -> Mask:
    """A random mask with per-layer densities from ``layout`` (random scores -> select)."""
    counts = keep_counts(shapes, layer_densities(shapes, density, layout))
    g = torch.Generator().manual_seed(int(seed))
    groups = {}
    for k, s in shapes.items():
        scores = Scores.single(torch.rand(math.prod(s), generator=g))
        groups[k] = select(scores, Budget(keep_count=counts[k])).only
    return Mask(groups)


def mask_from_scores(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int]) -> Mask:
    """Per-layer top-``counts[k]`` of ``scores[k]`` (NaN = never kept unless needed)."""
    return Mask({k: select(Scores.single(scores[k].flatten()), Budget(keep_count=int(counts[k]))).only
                 for k in counts})


def regrow_schedule(every: int, end: int, alpha: float) -> Schedule:
    """Prune rounds every ``every`` rounds up to ``end``; keep_at(t) = 1 - f(t) there.

    f(t) = (alpha / 2) * (1 + cos(pi * t / end)) (FedTiny / RigL cosine decay).
    """
    steps = list(range(every, end + 1, every)) or [end]
    keeps = [1.0 - regrow_fraction(t, alpha, end) for t in steps]
    return Schedule("cosine-regrow", tuple(steps), tuple(max(k, 1e-6) for k in keeps))


def regrow_fraction(t: int, alpha: float, end: int) -> float:
    """f(t) = (alpha / 2) * (1 + cos(pi * t / end))."""
    return 0.5 * alpha * (1.0 + math.cos(math.pi * min(t, end) / end))


def swap_counts(mask: Mask, fraction: float) -> dict[str, int]:
    """k = floor(fraction * active) per layer (at least one active weight always survives)."""
    return {k: min(int(math.floor(fraction * n)), max(n - 1, 0)) for k, n in mask.kept().items()}


def low_magnitude(weights: Mapping[str, torch.Tensor], mask: Mask, counts: Mapping[str, int]) -> Mask:
    """The ``counts[k]`` active weights of smallest |w| per layer (those a magnitude prune removes)."""
    keep = {}
    for k, m in mask.groups.items():
        w = weights[k].detach().flatten().abs().to(torch.float64)
        score = torch.where(m, w, torch.full_like(w, float("nan")))
        survivors = select(Scores.single(score), Budget(keep_count=int(m.sum()) - int(counts.get(k, 0)))).only
        keep[k] = m & ~survivors
    return Mask(keep)


def prune_and_grow(weights: Mapping[str, torch.Tensor], mask: Mask, grads: Mapping[str, torch.Tensor],
                   fraction: float) -> tuple[Mask, dict[str, int]]:
    """One FedTiny/FedMef structure step: drop k smallest-|w| active, grow k largest-|g| inactive.

    ``grads[k]`` is the aggregated gradient (flat, zeros where unknown). Only weights
    inactive *before* the step can grow (just-pruned ones have no reported gradient).
    Returns the new mask and k per layer.
    """
    counts = swap_counts(mask, fraction)
    dropped = low_magnitude(weights, mask, counts)
    new = {}
    for k, m in mask.groups.items():
        g = grads[k].detach().flatten().abs().to(torch.float64) if k in grads else torch.zeros(m.numel(), dtype=torch.float64)
        score = torch.where(~m, g, torch.full_like(g, float("nan")))
        n_grow = min(counts[k], int((~m).sum()))
        grown = select(Scores.single(score), Budget(keep_count=n_grow)).only & ~m
        new[k] = (m & ~dropped[k]) | grown
    return Mask(new), counts


def apply_mask(model: torch.nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, m in mask.groups.items():
            p = params[k]
            p.mul_(m.view(p.shape).to(p.dtype))


def mask_gradients(model: torch.nn.Module, mask: Mask) -> None:
    params = dict(model.named_parameters())
    for k, m in mask.groups.items():
        p = params[k]
        if p.grad is not None:
            p.grad.mul_(m.view(p.shape).to(p.grad.dtype))
