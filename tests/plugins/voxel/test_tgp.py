"""TGP: keep scores through the core select, training targets, focal loss, text conditioning."""

import numpy as np
import pytest
import torch

from prunekit_voxel.sparse import SparseVoxels
from prunekit_voxel.tgp import (EVAL_THRESHOLDS, MARGINS, TGP, focal_loss, keep_scores, tgp_keep, tgp_targets,
                                train_keep_count)

from .conftest import random_sites


def test_threshold_keep_follows_the_paper_convention():
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])  # logit = prunable
    s = keep_scores(logits)
    assert torch.all(s[:-1] > s[1:])  # more prunable -> lower keep score
    keep = tgp_keep(logits, threshold=EVAL_THRESHOLDS[0])
    assert keep.tolist() == (s >= 0.7).tolist() == [True, False, False, False, False]
    keep = tgp_keep(logits, threshold=EVAL_THRESHOLDS[1])
    assert keep.tolist() == [True, True, True, True, False]  # s(0.5) = 0.38 >= 0.3


def test_budgets_by_count_and_ratio_and_empty_scene_guard():
    logits = torch.tensor([2.0, -1.0, 0.5, -2.0, 1.0, 0.0])
    assert tgp_keep(logits, keep_count=2).nonzero().flatten().tolist() == [1, 3]
    assert int(tgp_keep(logits, keep_ratio=0.5).sum()) == 3
    # every voxel looks prunable: the floor still keeps the least prunable ones
    allprune = torch.full((6,), 9.0)
    allprune[4] = 8.0
    assert tgp_keep(allprune, threshold=0.7).nonzero().flatten().tolist() == [4]
    assert int(tgp_keep(allprune, threshold=0.7, min_keep=0).sum()) == 0
    with pytest.raises(ValueError):
        tgp_keep(logits, threshold=0.5, keep_count=2)


def test_train_keep_count_range():
    rng = np.random.default_rng(0)
    ks = [train_keep_count(1, rng) for _ in range(200)]
    assert train_keep_count(0, rng) == 4000 and min(ks) >= 1200 and max(ks) < 4000 and len(set(ks)) > 50


def test_targets_use_the_papers_box_growth():
    assert MARGINS == (1.04, 0.52)  # 13 * (4 * 0.01) * 2**(l-1) / 2 for l = 3, 2
    boxes = torch.tensor([[0.0, 0, 0, 1, 1, 1], [5.0, 0, 0, 1, 1, 1]])
    xyz = torch.tensor([[0.5 + 1.0, 0, 0], [0.5 + 1.1, 0, 0], [5.0, 0, 0], [9.0, 9, 9], [0.5 + 0.6, 0, 0]])
    scene = tgp_targets(xyz, boxes, MARGINS[0])  # scene level: every object
    assert scene.tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    target = tgp_targets(xyz, boxes[:1], MARGINS[1])  # target level: only the referred object, tighter
    assert target.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0]
    assert tgp_targets(xyz, boxes[:1], MARGINS[1])[4] == 1.0 and tgp_targets(xyz[4:], boxes[:1], 0.61).item() == 0.0
    assert tgp_targets(xyz, torch.zeros(0, 6), MARGINS[0]).tolist() == [1.0] * 5


def test_focal_loss_formula_and_normalisation():
    logits = torch.tensor([2.0, -1.0, 0.0])
    labels = torch.tensor([1.0, 1.0, 0.0])
    p = torch.sigmoid(logits)
    manual = (-0.25 * (1 - p[0]) ** 2 * torch.log(p[0]) - 0.25 * (1 - p[1]) ** 2 * torch.log(p[1])
              - 0.75 * p[2] ** 2 * torch.log(1 - p[2])) / 2
    torch.testing.assert_close(focal_loss(logits, labels), manual)
    assert focal_loss(torch.tensor([-5.0]), torch.tensor([0.0])) < 1e-3  # confident and right: ~0


def _scene(seed=0, n=60):
    coords = random_sites(n, 6, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return SparseVoxels(coords, torch.randn(n, 16, generator=g)), (coords.float() + 0.5) * 0.16


def test_tgp_is_text_conditioned_padding_blind_and_voxel_equivariant():
    torch.manual_seed(0)
    tgp = TGP(d=16, heads=2, layers=2).eval()
    vox, xyz = _scene()
    text = torch.randn(5, 16)
    pad = torch.tensor([False, False, False, True, True])
    with torch.no_grad():
        a, fused = tgp(vox, xyz, text, pad)
        text2 = text.clone()
        text2[3:] = 100.0  # content of padded tokens must not matter
        b, _ = tgp(vox, xyz, text2, pad)
        c, _ = tgp(vox, xyz, torch.randn(5, 16), pad)
        perm = torch.randperm(len(vox))
        d, _ = tgp(SparseVoxels(vox.coords[perm], vox.feats[perm]), xyz[perm], text, pad)
    assert a.shape == (60,) and fused.shape == (60, 16)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-3
    torch.testing.assert_close(d, a[perm], atol=1e-5, rtol=1e-5)



def test_tgp_learns_to_keep_what_the_text_names():
    """Two voxel clusters; the text says which one is relevant. 60 Adam steps on the focal loss must
    learn the text x position interaction (the same voxels, opposite labels per text)."""
    torch.manual_seed(0)
    tgp = TGP(d=16, heads=2, layers=1)
    opt = torch.optim.Adam(tgp.parameters(), lr=1e-2)
    words = torch.randn(2, 1, 16)
    boxes = torch.tensor([[0.4, 0.4, 0.4, 1.0, 1.0, 1.0], [2.4, 2.4, 2.4, 1.0, 1.0, 1.0]])
    g = torch.Generator().manual_seed(1)
    pts = torch.cat([torch.rand(40, 3, generator=g) * 0.8, 2.0 + torch.rand(40, 3, generator=g) * 0.8])
    coords = torch.unique(torch.floor(pts / 0.1).long(), dim=0)
    vox = SparseVoxels(coords, torch.ones(len(coords), 16))
    xyz = (coords.float() + 0.5) * 0.1
    labels = [tgp_targets(xyz, b[None], 0.0) for b in boxes]  # target level, no growth
    assert all(0 < int((lab == 0).sum()) < len(vox) for lab in labels)
    for step in range(60):
        which = step % 2
        loss = focal_loss(tgp(vox, xyz, words[which])[0], labels[which])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tgp.eval()
    with torch.no_grad():
        for which in (0, 1):
            relevant = labels[which] == 0
            keep = tgp_keep(tgp(vox, xyz, words[which])[0], keep_count=int(relevant.sum()))
            assert float((keep & relevant).sum() / relevant.sum()) > 0.95, which
