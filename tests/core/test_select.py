import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit import Budget, Scores, select


def s(*groups, cost=None):
    return Scores({f"g{i}": torch.tensor(g, dtype=torch.float32) for i, g in enumerate(groups)},
                  {f"g{i}": torch.tensor(c, dtype=torch.float32) for i, c in enumerate(cost)} if cost else {})


def kept(mask):
    return {k: v.nonzero().flatten().tolist() for k, v in mask.groups.items()}


def test_keep_ratio_global_ranks_across_groups():
    m = select(s([1, 3, 2, 3], [5, 0]), Budget(keep_ratio=0.5))
    assert kept(m) == {"g0": [1, 3], "g1": [0]}


def test_keep_ratio_floors_at_one_unit_and_rounds_down():
    assert select(s([1, 2, 3]), Budget(keep_ratio=0.01)).total_kept == 1
    assert select(s(list(range(10))), Budget(keep_ratio=0.39)).total_kept == 3


def test_keep_count_per_group():
    m = select(s([1, 3, 2], [5, 0, 4]), Budget(keep_count=1, scope="per_group"))
    assert kept(m) == {"g0": [1], "g1": [0]}


def test_threshold_keeps_at_or_above():
    m = select(s([0.1, 0.5, 0.9, 0.5]), Budget(threshold=0.5))
    assert kept(m) == {"g0": [1, 2, 3]}


def test_ties_break_by_group_then_index_deterministically():
    m = select(s([1, 1, 1], [1, 1]), Budget(keep_count=3))
    assert kept(m) == {"g0": [0, 1, 2], "g1": []}
    m2 = select(s([1, 1, 1], [1, 1]), Budget(keep_count=4))
    assert kept(m2) == {"g0": [0, 1, 2], "g1": [0]}
    # repeated calls give the same mask
    assert select(s([2, 2, 2, 2]), Budget(keep_count=2)) == select(s([2, 2, 2, 2]), Budget(keep_count=2))


def test_nan_ranks_lowest():
    m = select(s([float("nan"), 0.0, -5.0]), Budget(keep_count=2))
    assert kept(m) == {"g0": [1, 2]}


def test_floor_reserves_units_in_every_group_within_budget():
    m = select(s([10, 9, 8, 7], [0, -1]), Budget(keep_count=3, floor=1))
    assert kept(m) == {"g0": [0, 1], "g1": [0]}
    assert m.total_kept == 3


def test_floor_applies_to_threshold():
    m = select(s([0.1, 0.2], [0.9]), Budget(threshold=0.5, floor=1))
    assert kept(m) == {"g0": [1], "g1": [0]}


def test_cost_budget_takes_score_order_prefix():
    # scores 4,3,2,1 with costs 2,2,1,1 and budget 4.5: keep the 4 and 3 (cost 4), stop at 2 (cost 5 > 4.5)
    m = select(s([4, 3, 2, 1], cost=[[2, 2, 1, 1]]), Budget(cost=4.5))
    assert kept(m) == {"g0": [0, 1]}
    spent = float((torch.tensor([2, 2, 1, 1.0]) * m["g0"]).sum())
    assert spent <= 4.5


def test_cost_budget_with_floor_counts_floor_cost_first():
    m = select(s([4, 3], [0.5], cost=[[1, 1], [3]]), Budget(cost=2.0, floor=1))
    # floors: g0[0] (1) and g1[0] (3) are forced even though they exceed the budget together
    assert kept(m) == {"g0": [0], "g1": [0]}


def test_low_fraction_takes_both_ends():
    m = select(s([5, 1, 4, 2, 3, 0]), Budget(keep_count=4, low_fraction=0.5))
    assert kept(m) == {"g0": [0, 1, 2, 5]}  # top 5, 4 and bottom 0, 1


@pytest.mark.parametrize("bad", [dict(), dict(keep_ratio=0.5, keep_count=2), dict(keep_ratio=0.0),
                                 dict(keep_ratio=1.5), dict(keep_count=-1), dict(cost=-1.0),
                                 dict(threshold=float("nan")), dict(keep_ratio=0.5, floor=-1),
                                 dict(threshold=0.1, low_fraction=0.5), dict(keep_ratio=0.5, scope="nope")])
def test_invalid_budgets_raise(bad):
    with pytest.raises(ValueError):
        Budget(**bad)


def test_scores_validate_shapes():
    with pytest.raises(ValueError):
        Scores({"a": torch.zeros(2, 2)})
    with pytest.raises(ValueError):
        Scores({"a": torch.zeros(3)}, {"a": torch.ones(2)})
    with pytest.raises(ValueError):
        Scores({"a": torch.zeros(3)}, {"a": -torch.ones(3)})


scores_st = st.lists(st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=30),
                     min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(scores_st, st.floats(0.01, 1.0), st.sampled_from(["global", "per_group"]))
def test_ratio_budget_properties(groups, ratio, scope):
    sc = s(*groups)
    m = select(sc, Budget(keep_ratio=ratio, scope=scope))
    if scope == "global":
        n = sum(len(g) for g in groups)
        assert m.total_kept == max(1, math.floor(ratio * n + 1e-9))
        # every kept score >= every dropped score
        flat = torch.cat([sc[k] for k in sc])
        fm = torch.cat([m[k] for k in m])
        if fm.any() and (~fm).any():
            assert flat[fm].min() >= flat[~fm].max()
    else:
        for k, g in zip(m, groups):
            assert int(m[k].sum()) == max(1, math.floor(ratio * len(g) + 1e-9))


@settings(max_examples=150, deadline=None)
@given(scores_st, st.floats(0.0, 50.0), st.integers(0, 3))
def test_cost_budget_properties(groups, budget, floor):
    cost = [[(i % 3) + 0.5 for i in range(len(g))] for g in groups]
    sc = s(*groups, cost=cost)
    m = select(sc, Budget(cost=budget, floor=floor))
    spent = sum(float((sc.cost[k] * m[k]).sum()) for k in m)
    # each group keeps at least min(floor, size); spending beyond the budget comes only from floors
    for k, g in zip(m, groups):
        assert int(m[k].sum()) >= min(floor, len(g))
    if floor == 0:
        assert spent <= budget + 1e-6


@settings(max_examples=100, deadline=None)
@given(scores_st, st.floats(-10, 10))
def test_threshold_properties(groups, t):
    sc = s(*groups)
    m = select(sc, Budget(threshold=t))
    for k in m:
        assert torch.equal(m[k], sc[k].double() >= t)
