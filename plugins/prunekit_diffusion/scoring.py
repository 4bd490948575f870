"""LD-Pruner operator scores (Castells et al., "LD-Pruner: Efficient Pruning of Latent
Diffusion Models using Task-Agnostic Insights", CVPR 2024 EDGE workshop, arXiv 2404.11936)
and the random-removal baseline.

For every removable operator ``k`` the reverse process is run twice on the same
calibration set (same seeds, same conditioning, ``model.eval()``): once with the
original denoiser (latents ``L_orig``, computed once) and once with ``k`` bypassed
(``L_k``). With mean and standard deviation taken element-wise over the ``n`` samples,

    S_k = || mean(L_orig) - mean(L_k) ||_2 + || std(L_orig) - std(L_k) ||_2

A large ``S_k`` means the final latents move a lot without ``k``: ``k`` is important.
Scores go into :class:`prunekit.Scores` with each operator's MAC saving as its cost, so
:func:`prunekit.select` can spend a MAC budget. By default scoring is one-shot (all operators
scored against the full model), which is how we read the paper (single-operator
modifications, O(n m k) cost); :mod:`~prunekit_diffusion.iterative` adds our own re-scoring
variant, which scores with already removed operators (``removed``) kept bypassed.
``per_mac=True`` is our own deviation as well: ``S_k / MACs_k`` (score per MAC saved). ``std`` uses the unbiased (n - 1) estimator. A bypass that produces
non-finite latents scores ``+inf`` (never removed first).

:func:`select_operators` is the one place where these scores become a keep mask. With
``keep_per_block=m > 0`` (our own structural constraint, opt-in, not in the paper) the
operators are split into one :class:`prunekit.Scores` group per denoiser block
(``down_blocks.i``, ``mid_block``, ``up_blocks.j``; a transformer's block list is one
group) and :func:`prunekit.select` runs with ``floor=m`` over all groups together: the ``m``
best-scored operators of every block are kept and counted in the budget first, so no
block -- and so no resolution level of a UNet -- loses every operator.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from prunekit import Budget, Mask, Scores, select
from prunekit.errors import UsageError

from .bypass import bypassed
from .operators import Operator
from .sampling import Calibration, sample_latents

GROUP = "operators"


def latent_distance(ref: torch.Tensor, cand: torch.Tensor) -> float:
    """LD-Pruner's statistic distance between two sets of final latents ``(n, ...)``."""
    ref, cand = ref.double(), cand.double()
    s = (ref.mean(0) - cand.mean(0)).norm() + (ref.std(0) - cand.std(0)).norm()
    return float(s) if torch.isfinite(s) else float("inf")


def removable(ops: Sequence[Operator]) -> list[Operator]:
    return [op for op in ops if op.removable]


def mac_costs(ops: Sequence[Operator]) -> torch.Tensor:
    return torch.tensor([float(max(op.saved_macs, 0)) for op in ops], dtype=torch.float64)


@torch.no_grad()
def reference_latents(model: torch.nn.Module, scheduler, calib: Calibration,
                      removed: Sequence[Operator] = ()) -> torch.Tensor:
    """Final latents of ``model`` with ``removed`` bypassed, sampled in eval mode (mode restored)."""
    was_training = model.training
    model.eval()
    try:
        with bypassed(model, list(removed)):
            return sample_latents(model, scheduler, calib)
    finally:
        model.train(was_training)


@torch.no_grad()
def ld_pruner_scores(model: torch.nn.Module, scheduler, ops: Sequence[Operator], calib: Calibration,
                     progress: bool = True, reference: torch.Tensor | None = None,
                     removed: Sequence[Operator] = (), per_mac: bool = False) -> Scores:
    """One score per removable operator of ``ops`` (group ``"operators"``, cost = MACs saved).

    ``removed``: operators bypassed throughout (a partly pruned model); ``S_k`` then compares
    the latents with ``removed + [k]`` bypassed to ``reference`` (default: the latents of the
    model with only ``removed`` bypassed). ``per_mac``: divide each score by its MAC saving
    (``+inf`` where it saves nothing) -- our deviation, not the paper's.
    """
    if calib.n < 2:
        raise UsageError(f"LD-Pruner needs at least 2 calibration samples (it compares spreads), got {calib.n}")
    units = removable(ops)
    if not units:
        raise UsageError("no removable operators in this denoiser")
    was_training = model.training
    model.eval()
    try:
        if reference is None:
            reference = reference_latents(model, scheduler, calib, removed)
        values = []
        it = units
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(units, desc="LD-Pruner scoring", unit="op")
        for op in it:
            with bypassed(model, [*removed, op]):
                values.append(latent_distance(reference, sample_latents(model, scheduler, calib)))
    finally:
        model.train(was_training)
    cost = mac_costs(units)
    vals = torch.tensor(values, dtype=torch.float64)
    if per_mac:
        vals = torch.where(cost > 0, vals / cost.clamp_min(1.0), torch.full_like(vals, float("inf")))
    return Scores.single(vals, cost=cost, name=GROUP)


def block_of(op: Operator) -> str:
    """The denoiser block an operator belongs to: ``"up_blocks.0.resnets.2"`` -> ``"up_blocks.0"``;
    a DiT block for a sublayer (``"transformer_blocks.3.ff"`` -> ``"transformer_blocks.3"``)."""
    parts = op.name.split(".")
    for i, p in enumerate(parts):
        if p in ("resnets", "attentions"):
            return ".".join(parts[:i])
    return ".".join(parts[:-1]) or op.name


def select_operators(scores: Scores, units: Sequence[Operator], budget: Budget, keep_per_block: int = 0) -> Mask:
    """Keep mask (group ``"operators"``) over ``units`` from their one-group ``scores`` under ``budget``.

    ``keep_per_block = 0``: plain :func:`prunekit.select`. ``m > 0``: one group per block
    (:func:`block_of`), ``select`` with ``floor=m`` and global ranking (see the module docstring);
    a cost budget that the floors alone exceed is a :class:`UsageError`.
    """
    if keep_per_block == 0:
        return select(scores, budget)
    if int(keep_per_block) != keep_per_block or keep_per_block < 0:
        raise UsageError(f"keep_per_block must be a non-negative integer, got {keep_per_block}")
    blocks = [block_of(op) for op in units]
    names = list(dict.fromkeys(blocks))
    idx = {b: [i for i, x in enumerate(blocks) if x == b] for b in names}
    vals, cost = scores[GROUP], scores.unit_cost(GROUP)
    grouped = Scores({b: vals[i] for b, i in idx.items()}, {b: cost[i] for b, i in idx.items()})
    bud = dataclasses.replace(budget, floor=int(keep_per_block), scope="global")
    mask = select(grouped, bud)
    keep = torch.zeros(len(units), dtype=torch.bool)
    for b, i in idx.items():
        keep[i] = mask[b]
    if budget.kind == "cost" and float(cost[keep].sum()) > budget.cost * (1 + 1e-9):
        raise UsageError(f"keeping {keep_per_block} operator(s) per block already costs {float(cost[keep].sum()):.4g}, "
                         f"more than the budget {budget.cost:.4g}")
    return Mask({GROUP: keep})


def random_scores(ops: Sequence[Operator], seed: int = 0) -> Scores:
    """Baseline: uniform random scores (same cost vector as LD-Pruner's)."""
    units = removable(ops)
    if not units:
        raise UsageError("no removable operators in this denoiser")
    g = torch.Generator().manual_seed(seed)
    return Scores.single(torch.rand(len(units), generator=g, dtype=torch.float64), cost=mac_costs(units), name=GROUP)


def macs_budget(ops: Sequence[Operator], total_macs: int, keep_macs: float) -> Budget:
    """A cost budget keeping at most ``keep_macs`` of the denoiser's MACs.

    Non-removable parts (stems, embeddings, resamplers, operators that cannot be
    bypassed, shortcut adaptors) are always kept, so the operator budget is
    ``keep_macs * total - fixed``.
    """
    if not (0.0 < keep_macs <= 1.0):
        raise UsageError(f"keep_macs must be in (0, 1], got {keep_macs}")
    fixed = total_macs - sum(max(op.saved_macs, 0) for op in removable(ops))
    limit = keep_macs * total_macs - fixed
    if limit < 0:
        raise UsageError(f"cannot keep only {keep_macs:.3g} of the MACs: the parts that cannot be removed "
                         f"already use {fixed / total_macs:.3f} of them")
    return Budget(cost=limit)
