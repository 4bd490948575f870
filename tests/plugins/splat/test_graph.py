"""SUNDAE's graph (prunekit_splat.graph): both builds match a brute-force reading of the definition."""

import numpy as np
import pytest
import torch

from prunekit_splat import graph
from prunekit_splat.graph import high_pass_scores


def brute_force(x: np.ndarray, k: int, q: float = 0.0) -> np.ndarray:
    """||(L X)_i|| straight from the definition, with an N x N distance matrix (``q``: nn_quantile)."""
    x = x - x.mean(axis=0)
    n = len(x)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    nn1 = d.min(axis=1)
    r = min(10 * np.quantile(nn1[nn1 > 0], q), 2 * nn1.max())
    a = np.zeros((n, n))
    edges = []
    for i in range(n):
        near = [j for j in np.argsort(d[i], kind="stable")[:k] if d[i, j] <= r]
        edges += [(i, j) for j in near]
    dist = np.array([d[i, j] for i, j in edges])
    var = dist.var()
    for (i, j), dij in zip(edges, dist):
        a[i, j] = np.exp(-dij ** 2 / (2 * var))
    w = (a + a.T) / 2
    lx = w.sum(1)[:, None] * x - w @ x
    return np.linalg.norm(lx, axis=1)


def clustered(n: int, seed: int) -> np.ndarray:
    """Tight clusters far apart plus isolated points: r = 10 d_min is far below the spacing."""
    g = np.random.default_rng(seed)
    centres = g.uniform(-5, 5, (n // 10, 3))
    pts = centres[g.integers(0, len(centres), n)] + g.normal(0, 0.05, (n, 3))
    pts[: n // 20] = g.uniform(-5, 5, (n // 20, 3))
    return pts


def sparse(seed: int) -> np.ndarray:
    """A jittered lattice (spacing 1) with a few close pairs (0.05 .. 0.45 apart): r = 10 d_min
    reaches the partners but not the lattice neighbours, as in trained scenes."""
    g = np.random.default_rng(seed)
    pts = np.stack(np.meshgrid(*[np.arange(6.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pts += g.normal(0, 0.05, pts.shape)
    pick = g.choice(len(pts), 12, replace=False)
    step = g.normal(0, 1, (12, 3))
    gap = np.concatenate([[0.05], g.uniform(0.1, 0.45, 11)])[:, None]  # d_min = 0.05: r = 0.5
    partners = pts[pick] + step / np.linalg.norm(step, axis=1, keepdims=True) * gap
    return np.concatenate([pts, partners])


@pytest.fixture
def knn_calls(monkeypatch):
    calls = []
    real = graph._knn_graph
    monkeypatch.setattr(graph, "_knn_graph", lambda *a: calls.append(1) or real(*a))
    return calls


def test_sparse_graph_is_built_from_pairs_and_matches_brute_force(knn_calls):
    for seed in (0, 1):
        x = sparse(seed)
        ref = brute_force(x.astype(np.float32).astype(np.float64), k=6)
        assert 20 <= (ref > 0).sum() < len(x) // 4
        for build in ("auto", "knn"):
            got = high_pass_scores(torch.from_numpy(x), max_neighbors=6, build=build).double().numpy()
            np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-6 * ref.max())
    assert len(knn_calls) == 2  # only the explicit knn builds: "auto" chose the pair search


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("build", ["auto", "pairs", "knn"])
def test_builds_match_brute_force(seed, build):
    x = clustered(300, seed)
    ref = brute_force(x.astype(np.float32).astype(np.float64), k=6)
    got = high_pass_scores(torch.from_numpy(x), max_neighbors=6, build=build).double().numpy()
    assert (ref > 0).sum() > 10  # the test scene does have edges
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-6 * ref.max())


def test_near_uniform_set_uses_two_d_max_radius_in_both_builds(knn_calls):
    g = np.random.default_rng(3)
    grid = np.stack(np.meshgrid(*[np.arange(7.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    x = grid + g.normal(0, 0.02, grid.shape)  # r = 2 d_max < 10 d_min here
    ref = brute_force(x.astype(np.float32).astype(np.float64), k=8)
    for build in ("auto", "pairs", "knn"):
        got = high_pass_scores(torch.from_numpy(x), max_neighbors=8, build=build).double().numpy()
        np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-6 * ref.max())
    assert len(knn_calls) == 2  # "auto" saw a dense graph and used the kNN build


def test_coincident_twins_and_tiny_inputs():
    x = clustered(200, 5)
    x[10] = x[11]  # a twin pair: distance 0 is not d_min, and no centre is its own neighbour
    a = high_pass_scores(torch.from_numpy(x), build="pairs")
    b = high_pass_scores(torch.from_numpy(x), build="knn")
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-9)
    assert high_pass_scores(torch.zeros(1, 3)).shape == (1,)
    assert torch.equal(high_pass_scores(torch.zeros(5, 3)), torch.zeros(5))
    with pytest.raises(ValueError):
        high_pass_scores(torch.from_numpy(x), build="grid")


def test_near_duplicate_collapses_the_paper_radius_and_nn_quantile_restores_the_graph():
    x = sparse(3)
    x = np.concatenate([x, x[:1] + 1e-6])  # one relocated/cloned copy a hair away from its source
    paper = high_pass_scores(torch.from_numpy(x))
    assert (paper == 0).float().mean() > 0.99  # r = 1e-5: every other centre is isolated, score 0
    robust = high_pass_scores(torch.from_numpy(x), nn_quantile=0.5)
    assert (robust == 0).float().mean() < 0.05
    np.testing.assert_allclose(robust.numpy(), brute_force(x, 16, 0.5), rtol=1e-3, atol=1e-6)
