"""A trained Cropr scorer must rank the tokens that carry the task above background (AUC > 0.8).

Catches any sign or direction error between the auxiliary branch (which learns where the
task information is) and the pruning score / selection (which must keep exactly those tokens).
"""

import torch
from .conftest import tiny_config

from prunekit_tokens.attach import attach_cropr
from prunekit_tokens.diagnostics import patch_relevance, ranking_auc, record_rankings
from prunekit_tokens.modules import CroprModule
from prunekit_tokens.tasks import ClassificationTask
from prunekit_tokens.training import train_epoch


def test_ranking_auc_extremes_and_ties():
    rel = torch.tensor([[True, False, False, True]])
    assert ranking_auc(torch.tensor([[3.0, 1.0, 0.0, 2.0]]), rel).item() == 1.0
    assert ranking_auc(torch.tensor([[0.0, 1.0, 2.0, -1.0]]), rel).item() == 0.0
    assert ranking_auc(torch.ones(1, 4), rel).item() == 0.5
    assert ranking_auc(torch.ones(1, 4), torch.zeros(1, 4, dtype=torch.bool)).isnan().all()
    valid = torch.tensor([[True, True, False, True]])  # the top-scored background token is not counted
    assert ranking_auc(torch.tensor([[1.0, 0.0, 9.0, 2.0]]), rel, valid).item() == 1.0


def test_patch_relevance_counts_mask_pixels():
    m = torch.zeros(1, 16, 16, dtype=torch.bool)
    m[0, 9:12, 1:3] = True  # 6 pixels in patch (1, 0) of a 2x2 grid of 8x8 patches
    assert patch_relevance(m, 8, 1).tolist() == [[False, False, True, False]]
    assert patch_relevance(m, 8, 7).tolist() == [[False, False, False, False]]


def _tokens(n, seed, num_tokens=24, dim=16, relevant=3, classes=4):
    """Background: noise. ``relevant`` tokens per image: a shared marker + a class code + noise."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99))
    marker = torch.randn(dim, generator=torch.Generator().manual_seed(98))
    x = torch.randn(n, num_tokens, dim, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    pos = torch.rand(n, num_tokens, generator=g).argsort(1)[:, :relevant]
    rel = torch.zeros(n, num_tokens, dtype=torch.bool).scatter_(1, pos, True)
    x[rel] += (2 * marker + 2 * codes[y].repeat_interleave(relevant, 0)).view(-1, dim)
    return x, y, rel


def test_trained_scorer_ranks_informative_tokens_first():
    torch.manual_seed(0)
    mod = CroprModule(16, 2, aux_out=4).train()
    opt = torch.optim.Adam(mod.parameters(), 1e-2)
    task = ClassificationTask(4)
    for step in range(60):
        x, y, _ = _tokens(64, step)
        _, aux = mod(x)
        loss = task.aux_loss(aux, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y, rel = _tokens(256, 10_000)
    with torch.no_grad():
        auc = ranking_auc(mod.eval()(x)[0], rel)
    assert auc.mean() > 0.8, float(auc.mean())


def _images(n, seed, classes=4):
    """32x32 noise images; one random 8x8 patch holds a bright class pattern (the digit of this toy task)."""
    g = torch.Generator().manual_seed(seed)
    patterns = (torch.rand(classes, 8, 8, generator=torch.Generator().manual_seed(7)) > 0.5).float() * 3
    x = 0.3 * torch.randn(n, 1, 32, 32, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    where = torch.randint(0, 16, (n,), generator=g)
    mask = torch.zeros(n, 32, 32, dtype=torch.bool)
    for i in range(n):
        r, c = divmod(int(where[i]), 4)
        x[i, 0, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += patterns[y[i]]
        mask[i, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = True
    return x, y, mask


def test_frozen_vit_cropr_keeps_the_informative_patch():
    """End to end: hooks, frozen training loop, scores and selection on a (random, frozen) tiny ViT."""
    from transformers import ViTForImageClassification

    torch.manual_seed(0)
    vit = ViTForImageClassification(tiny_config(num_labels=4)).eval().requires_grad_(False)
    red = attach_cropr(vit, prune_counts=(8,), prune_after=(1,), aux_out=4).train()
    opt = torch.optim.Adam(red.parameters(), 1e-2)
    data = [(x, y) for x, y, _ in (_images(32, s) for s in range(30))]
    train_epoch(lambda xb: vit(pixel_values=xb).logits, list(red.parameters()), data, ClassificationTask(4), opt,
                red, "frozen")
    red.eval()
    x, _, mask = _images(128, 5000)
    relevant = torch.cat([torch.zeros(128, 1, dtype=torch.bool), patch_relevance(mask, 8)], 1)
    with torch.no_grad(), record_rankings(red) as rec:
        vit(pixel_values=x)
    assert rec.module_auc(0, relevant).mean() > 0.8
    kept = red.kept_original()  # the informative patch survives pruning half the patches
    assert kept[relevant].float().mean() > 0.9
