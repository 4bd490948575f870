"""``select`` takes its top/bottom k by selection, not a full sort: same set as the stable sort."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.selection import _first, _order

values_st = st.lists(st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), -float("inf")]),
                               st.floats(-3, 3, allow_nan=False)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(values_st, st.integers(0, 45), st.booleans())
def test_first_k_is_the_stable_sort_prefix(values, k, descending):
    v = torch.tensor(values, dtype=torch.float64)
    expect = set(_order(v, descending)[:k].tolist())
    got = _first(v, k, descending).tolist()
    assert len(got) == len(set(got)) == min(k, len(values))
    assert set(got) == expect


def test_first_k_ties_take_lowest_indices():
    v = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.0])
    assert sorted(_first(v, 2).tolist()) == [1, 2]
    assert sorted(_first(v, 3, descending=False).tolist()) == [0, 1, 4]
