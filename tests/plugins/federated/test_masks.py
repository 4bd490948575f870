import math

import pytest
import torch

from prunekit import Mask
from prunekit_federated.masks import (erk_densities, low_magnitude, prunable_shapes, prune_and_grow, random_mask,
                                      regrow_fraction, regrow_schedule)
from prunekit_federated.models import SmallCNN

SHAPES = prunable_shapes(SmallCNN())


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.5])
def test_erk_meets_the_overall_density(density):
    d = erk_densities(SHAPES, density)
    total = sum(math.prod(s) for s in SHAPES.values())
    kept = sum(d[k] * math.prod(s) for k, s in SHAPES.items())
    assert kept == pytest.approx(density * total, rel=1e-6)
    assert all(0 < v <= 1.0 for v in d.values())
    # ERK: the big fc1 layer is sparser than the small conv1
    assert d["fc1.weight"] < d["conv1.weight"]


def test_random_mask_counts_and_seed():
    m1 = random_mask(SHAPES, 0.1, seed=3)
    m2 = random_mask(SHAPES, 0.1, seed=3)
    m3 = random_mask(SHAPES, 0.1, seed=4)
    assert m1 == m2 and not (m1 == m3)
    assert m1.kept_fraction == pytest.approx(0.1, abs=0.002)
    u = random_mask(SHAPES, 0.1, seed=0, layout="uniform")
    for k, n in u.kept().items():
        assert n == round(0.1 * math.prod(SHAPES[k]))


def test_cosine_schedule():
    s = regrow_schedule(every=10, end=50, alpha=0.3)
    assert s.steps == (10, 20, 30, 40, 50)
    assert s.is_prune_step(20) and not s.is_prune_step(21)
    for t in s.steps:
        assert 1.0 - s.keep_at(t) == pytest.approx(0.15 * (1 + math.cos(math.pi * t / 50)), abs=1e-6)
    assert regrow_fraction(0, 0.3, 50) == pytest.approx(0.3)
    assert regrow_fraction(50, 0.3, 50) == pytest.approx(0.0, abs=1e-12)


def test_prune_and_grow_swaps_smallest_weights_for_largest_gradients():
    g = torch.Generator().manual_seed(0)
    n = 200
    mask = Mask({"w": torch.rand(n, generator=g) < 0.3})
    w = torch.randn(n, generator=g) * mask["w"]
    grad = torch.randn(n, generator=g)
    new, counts = prune_and_grow({"w": w}, mask, {"w": grad}, fraction=0.2)
    k = counts["w"]
    assert k == int(0.2 * int(mask["w"].sum()))
    assert new.total_kept == mask.total_kept  # density unchanged
    dropped = mask["w"] & ~new["w"]
    grown = new["w"] & ~mask["w"]
    assert int(dropped.sum()) == k and int(grown.sum()) == k
    # every dropped weight is no larger than every surviving one
    assert w.abs()[dropped].max() <= w.abs()[mask["w"] & new["w"]].min()
    # every grown weight had a larger |grad| than every inactive one left out
    assert grad.abs()[grown].min() >= grad.abs()[~mask["w"] & ~new["w"]].max()


def test_low_magnitude_matches_prune_half():
    g = torch.Generator().manual_seed(1)
    mask = Mask({"w": torch.rand(100, generator=g) < 0.5})
    w = torch.randn(100, generator=g) * mask["w"]
    low = low_magnitude({"w": w}, mask, {"w": 5})
    assert int(low["w"].sum()) == 5
    assert bool((low["w"] <= mask["w"]).all())
    new, _ = prune_and_grow({"w": w}, mask, {"w": torch.zeros(100)}, fraction=5 / int(mask["w"].sum()) + 1e-9)
    assert torch.equal(low["w"], mask["w"] & ~new["w"])
