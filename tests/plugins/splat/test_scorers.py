import torch

import prunekit
from prunekit_splat.configs import RandomConfig, SundaeConfig
from prunekit_splat.graph import high_pass_scores
from prunekit_splat.scene import GaussianScene
from prunekit_splat.scorers import opacity, random, sundae


def cloud(means):
    n = len(means)
    return GaussianScene(means.float(), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 3), -3.0),
                         torch.linspace(-3, 3, n), torch.zeros(n, 3), torch.zeros(n, 0, 3))


def plane(k=40, jitter=0.0):
    g = torch.stack(torch.meshgrid(torch.linspace(0, 1, k), torch.linspace(0, 1, k), indexing="ij"), -1).reshape(-1, 2)
    g = g + jitter / k * torch.randn(g.shape, generator=torch.Generator().manual_seed(0))
    return torch.cat([g, torch.zeros(len(g), 1)], 1).double()


def test_high_pass_is_zero_in_flat_interior_and_large_on_corners_and_edges():
    s = high_pass_scores(plane()).reshape(40, 40)
    interior, edge, corner = s[20, 20], s[0, 20], s[0, 0]
    assert interior < 1e-5 * corner
    assert corner > edge > 10 * interior
    # invariant to translation, scales linearly with the point set
    # (a jittered grid: no distance ties at the radius or the neighbour cap)
    pts = plane(jitter=0.05)
    base = high_pass_scores(pts)
    assert torch.allclose(high_pass_scores(pts + 7.0), base, rtol=1e-3, atol=1e-6)
    assert torch.allclose(high_pass_scores(pts * 2), 2 * base, rtol=1e-3, atol=1e-6)


def test_sundae_two_band_rule_keeps_both_ends():
    sc = cloud(plane(20))
    cfg = SundaeConfig(band_weight=0.5)
    scores = sundae(sc, None, cfg)
    budget = cfg.budget(prunekit.Budget(keep_ratio=0.2))
    mask = prunekit.select(scores, budget).only
    n_keep = int(0.2 * len(sc))
    assert int(mask.sum()) == n_keep
    v = scores.groups["units"]
    s_sorted = torch.sort(v, descending=True).values
    hi_cut, lo_cut = s_sorted[n_keep // 2 - 1], s_sorted[len(v) - (n_keep - n_keep // 2)]
    kept_v, dropped_v = v[mask], v[~mask]
    # every kept score is at either end: >= the high cut or <= the low cut; dropped ones lie between
    assert ((kept_v >= hi_cut) | (kept_v <= lo_cut)).all()
    assert ((dropped_v <= hi_cut) & (dropped_v >= lo_cut)).all()
    assert int((kept_v >= hi_cut).sum()) >= n_keep // 2 and int((kept_v <= lo_cut).sum()) >= n_keep - n_keep // 2
    only_high = prunekit.select(scores, SundaeConfig(band_weight=1.0).budget(prunekit.Budget(keep_ratio=0.2))).only
    assert v[only_high].min() >= v[~only_high].max()


def test_opacity_and_random_baselines():
    sc = cloud(torch.randn(100, 3))
    m = prunekit.select(opacity(sc, None), prunekit.Budget(keep_count=10)).only
    assert m[-10:].all()  # opacities are increasing with index
    a = random(sc, None, RandomConfig(seed=1)).groups["units"]
    b = random(sc, None, RandomConfig(seed=1)).groups["units"]
    c = random(sc, None, RandomConfig(seed=2)).groups["units"]
    assert torch.equal(a, b) and not torch.equal(a, c)
