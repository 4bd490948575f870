"""Iterative LD-Pruner: remove operators in rounds, re-scoring the survivors after each round.

Our own variant (the paper scores every operator once against the full model; see
:mod:`~prunekit_diffusion.scoring`). With ``C`` the summed MAC saving of all removable
operators and ``B`` the operator budget (:func:`~prunekit_diffusion.scoring.macs_budget`),
round ``r = 1..R`` scores the operators still present with every operator removed so far
kept bypassed, and keeps, by :func:`prunekit.select`, the best of them under

    B_r = C - (C - B) * r / R          (MAC budgets; B_R = B)
    K_r = N - round((N - K) * r / R)   (operator-count budgets, K = operators to keep)

so each round removes about ``1/R`` of the budget gap and the last round meets the budget.
With ``keep_per_block=m`` every round selects through
:func:`~prunekit_diffusion.scoring.select_operators` (the ``m`` best survivors of each block are
kept). ``S_k`` in round ``r`` is the distance of the latents with ``removed + [k]`` bypassed to the
*original* model's latents (computed once), so the removals are chosen greedily to keep the
final latents close to the unpruned model's. ``R = 1`` is exactly the one-shot selection.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from prunekit import Budget, Mask, Scores
from prunekit.errors import UsageError

from .operators import Operator
from .sampling import Calibration
from .scoring import GROUP, ld_pruner_scores, mac_costs, reference_latents, removable, select_operators


def round_budget(budget: Budget, n: int, total_cost: float, r: int, rounds: int) -> Budget:
    """The budget of round ``r`` of ``rounds`` over all ``n`` removable operators (see the module docstring)."""
    if r == rounds:
        return budget
    if budget.kind == "cost":
        return dataclasses.replace(budget, cost=max(budget.cost, total_cost - (total_cost - budget.cost) * r / rounds))
    if budget.kind in ("keep_ratio", "keep_count"):
        k = budget.count_for(n)
        return dataclasses.replace(budget, keep_ratio=None, keep_count=n - round((n - k) * r / rounds))
    raise UsageError(f"iterative LD-Pruner needs a cost, keep_ratio or keep_count budget, got {budget.kind}")


@torch.no_grad()
def iterative_ld_pruner(model: torch.nn.Module, scheduler, ops: Sequence[Operator], calib: Calibration,
                        budget: Budget, rounds: int, per_mac: bool = False,
                        progress: bool = True, keep_per_block: int = 0) -> tuple[Scores, Mask, list[dict]]:
    """(scores, keep mask over the removable operators, per-round log).

    Each operator's score is the one from the last round it was scored in (the round it was
    removed, or the last round for survivors).
    """
    if int(rounds) != rounds or rounds < 1:
        raise UsageError(f"rounds must be a positive integer, got {rounds}")
    units = removable(ops)
    if not units:
        raise UsageError("no removable operators in this denoiser")
    reference = reference_latents(model, scheduler, calib)
    n = len(units)
    cost = mac_costs(units)
    values = torch.full((n,), float("nan"), dtype=torch.float64)
    alive = list(range(n))
    log = []
    it = range(1, rounds + 1)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="LD-Pruner rounds", unit="round")
    for r in it:
        removed = [units[i] for i in range(n) if i not in alive]
        survivors = [units[i] for i in alive]
        s = ld_pruner_scores(model, scheduler, survivors, calib, progress=False,
                             reference=reference, removed=removed, per_mac=per_mac)
        values[alive] = s[GROUP]
        keep = select_operators(s, survivors, round_budget(budget, n, float(cost.sum()), r, rounds),
                                keep_per_block)[GROUP].tolist()
        dropped = [units[i].name for i, k in zip(alive, keep) if not k]
        alive = [i for i, k in zip(alive, keep) if k]
        log.append({"round": r, "scored": len(keep), "removed": dropped, "kept_cost": float(cost[alive].sum())})
    mask = torch.zeros(n, dtype=torch.bool)
    mask[alive] = True
    return Scores.single(values, cost=cost, name=GROUP), Mask({GROUP: mask}), log
