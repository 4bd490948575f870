"""Iterative LD-Pruner (remove in rounds, re-score the survivors) and score-per-MAC ranking."""

import pytest
import torch

from .conftest import class_calib


def test_round_budgets_interpolate_to_the_budget():
    from prunekit import Budget
    from prunekit.errors import UsageError
    from prunekit_diffusion.iterative import round_budget

    b = Budget(cost=40.0)
    assert [round_budget(b, 10, 100.0, r, 4).cost for r in (1, 2, 3)] == [85.0, 70.0, 55.0]
    assert round_budget(b, 10, 100.0, 4, 4) is b and round_budget(b, 10, 100.0, 1, 1) is b
    k = Budget(keep_ratio=0.5)  # 5 of 10 kept: 10 -> 9 -> 8 -> 6 -> (the budget itself)
    assert [round_budget(k, 10, 1.0, r, 4).keep_count for r in (1, 2, 3)] == [9, 8, 6]
    with pytest.raises(UsageError, match="threshold"):
        round_budget(Budget(threshold=0.1), 10, 1.0, 1, 2)


def _one_shot(unet, scheduler, ops, calib, budget, per_mac=False):
    from prunekit import select
    from prunekit_diffusion.scoring import ld_pruner_scores

    s = ld_pruner_scores(unet, scheduler, ops, calib, progress=False, per_mac=per_mac)
    return s, select(s, budget)


def test_one_round_is_the_one_shot_selection(unet, scheduler):
    from prunekit_diffusion.iterative import iterative_ld_pruner
    from prunekit_diffusion.operators import discover_operators, total_macs
    from prunekit_diffusion.scoring import macs_budget

    calib = class_calib(n=2, steps=1)
    ops = discover_operators(unet, calib=calib)
    budget = macs_budget(ops, total_macs(unet, calib.example(unet)), 0.6)
    for per_mac in (False, True):
        s1, m1 = _one_shot(unet, scheduler, ops, calib, budget, per_mac)
        s2, m2, log = iterative_ld_pruner(unet, scheduler, ops, calib, budget, rounds=1, per_mac=per_mac, progress=False)
        assert m1 == m2 and torch.equal(s1["operators"], s2["operators"]) and len(log) == 1


def test_rounds_rescore_and_meet_the_budget(unet, scheduler):
    from prunekit_diffusion.api import prune_denoiser
    from prunekit_diffusion.operators import total_macs

    calib = class_calib(n=2, steps=1)
    one = prune_denoiser(unet, scheduler, keep_macs=0.6, calib=calib, progress=False)
    it = prune_denoiser(unet, scheduler, keep_macs=0.6, calib=calib, progress=False, rounds=3)
    before = total_macs(unet, calib.example(unet))
    assert total_macs(it.model, calib.example(it.model)) <= 0.6 * before
    log = it.report.extra["rounds_log"]
    assert len(log) == 3 and log[-1]["kept_cost"] <= log[0]["kept_cost"]
    assert sum(len(r["removed"]) for r in log) == len(it.removed) and log[0]["removed"]
    # survivors were re-scored on the partly pruned model: their scores moved, and so did the selection
    kept = it.mask["operators"]
    assert not torch.allclose(it.scores["operators"][kept], one.scores["operators"][kept])
    assert it.mask != one.mask


def test_per_mac_divides_by_the_mac_saving(unet, scheduler):
    from prunekit_diffusion.operators import discover_operators
    from prunekit_diffusion.scoring import ld_pruner_scores

    calib = class_calib(n=2, steps=1)
    ops = discover_operators(unet, calib=calib)
    raw = ld_pruner_scores(unet, scheduler, ops, calib, progress=False)
    per = ld_pruner_scores(unet, scheduler, ops, calib, progress=False, per_mac=True)
    c = raw.cost["operators"]
    assert torch.all(c > 0) and torch.allclose(per["operators"], raw["operators"] / c)


def test_rounds_need_ld_pruner_and_a_positive_count(unet, scheduler):
    from prunekit.errors import UsageError
    from prunekit_diffusion.api import prune_denoiser

    calib = class_calib(n=2, steps=1)
    with pytest.raises(UsageError, match="needs method"):
        prune_denoiser(unet, scheduler, keep_macs=0.6, calib=calib, method="random", rounds=2)
    with pytest.raises(UsageError, match="positive integer"):
        prune_denoiser(unet, scheduler, keep_macs=0.6, calib=calib, progress=False, rounds=0)
