"""merge_progressive(drop=...): unseen Gaussians are removed, not folded into kept ones."""

import torch

import prunekit
from prunekit_splat.merge import merge_progressive
from prunekit_splat.scene import GaussianScene


def line_scene(n=12):
    means = torch.zeros(n, 3)
    means[:, 0] = torch.arange(n, dtype=torch.float32) * 0.1
    means[-3:, 0] += 100.0  # three far away: "unseen"
    return GaussianScene(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), -2.0),
                         torch.zeros(n), torch.zeros(n, 3), torch.zeros(n, 0, 3))


def test_dropped_gaussians_do_not_reach_the_output():
    sc = line_scene()
    scores = torch.arange(12, dtype=torch.float64)  # the far ones score highest: merging would keep them
    drop = torch.zeros(12, dtype=torch.bool)
    drop[-3:] = True
    out = merge_progressive(sc, scores, prunekit.Budget(keep_count=4), drop=drop)
    assert len(out) == 4 and out.meta["dropped_unseen"] == 3 and out.meta["merged_parts"] == 5
    assert float(out.means[:, 0].max()) < 5  # nothing from x >= 100, not even averaged in
    plain = merge_progressive(sc, scores, prunekit.Budget(keep_count=4))
    assert float(plain.means[:, 0].max()) > 50


def test_drop_is_ignored_when_too_few_would_remain():
    sc = line_scene()
    drop = torch.ones(12, dtype=torch.bool)
    drop[:2] = False
    out = merge_progressive(sc, torch.arange(12.0), prunekit.Budget(keep_ratio=0.5), drop=drop)
    assert len(out) == 6 and "dropped_unseen" not in out.meta
