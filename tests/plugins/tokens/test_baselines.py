"""Random pruning and ToMe-style merging at the same token budget as Cropr."""

import pytest
import torch
from .conftest import tiny_config

from prunekit.errors import UsageError
from prunekit_tokens.attach import attach_cropr, attach_merge, attach_random
from prunekit_tokens.config import CroprConfig
from prunekit_tokens.merge import bipartite_merge


@pytest.mark.parametrize("llf", [False, True])
def test_same_token_budget_as_cropr(vit_cls, images, llf):
    cfg = CroprConfig(prune_counts=(3, 2) if llf else (3, 2, 4), llf=llf)
    counts = {}
    for name, attach in [("cropr", lambda: attach_cropr(vit_cls, cfg)),
                         ("random", lambda: attach_random(vit_cls, config=cfg)),
                         ("merge", lambda: attach_merge(vit_cls, config=cfg)),
                         ("merge-prop", lambda: attach_merge(vit_cls, config=cfg, proportional_attention=True))]:
        red = attach()
        assert vit_cls(pixel_values=images).logits.shape == (3, 10)
        counts[name] = red.token_counts
        red.remove()
    assert len({tuple(c) for c in counts.values()}) == 1
    assert counts["cropr"] == ([17, 14, 12, 17] if llf else [17, 14, 12, 8])


def test_random_is_seeded_and_keeps_cls(vit_cls, images):
    masks = []
    for _ in range(2):
        red = attach_random(vit_cls, [(0, 6)], seed=3)
        vit_cls(pixel_values=images)
        masks.append(red.state.owner.clone())
        red.remove()
    assert torch.equal(masks[0], masks[1])
    assert bool((masks[0][:, 0] == 0).all())
    assert not torch.equal(masks[0][0], masks[0][1])  # per-image draws differ


def test_bipartite_merge_conserves_mass_and_protects_prefix():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 11, 8, generator=g)
    keys = torch.randn(2, 11, 8, generator=g)
    size = torch.rand(2, 11, 1, generator=g) + 0.5
    new_x, remap, new_size = bipartite_merge(x, keys, r=3, num_prefix=1, num_heads=2, size=size)
    assert new_x.shape == (2, 8, 8) and new_size.shape == (2, 8, 1)
    assert torch.allclose((new_x * new_size).sum(1), (x * size).sum(1), atol=1e-5)
    assert torch.allclose(new_size.sum(1), size.sum(1))
    assert torch.equal(new_x[:, 0], x[:, 0]) and torch.equal(remap[:, 0], torch.zeros(2, dtype=torch.long))
    # every old token maps to a valid new slot; exactly 8 distinct destinations
    assert all(len(set(row.tolist())) == 8 and row.max() < 8 for row in remap)


def test_merge_joins_most_similar_pair():
    # tokens 1 (A) and 2 (B) share a key; all other keys are orthogonal-ish
    keys = torch.eye(7).unsqueeze(0)
    keys[0, 1] = keys[0, 2]
    x = torch.arange(7.0).view(1, 7, 1)
    new_x, remap, size = bipartite_merge(x, keys, r=1, num_prefix=1, num_heads=1, size=None)
    assert remap[0, 1] == remap[0, 2]
    assert new_x[0, remap[0, 1], 0] == pytest.approx(1.5)
    assert size[0, remap[0, 1], 0] == 2


def test_proportional_attention_changes_later_blocks_only(vit_cls, images):
    cfg = CroprConfig(prune_counts=(0, 4, 0))
    plain = attach_merge(vit_cls, config=cfg)
    ref = vit_cls(pixel_values=images).logits
    plain.remove()
    prop = attach_merge(vit_cls, config=cfg, proportional_attention=True)
    out = vit_cls(pixel_values=images).logits
    prop.remove()
    assert not torch.allclose(out, ref)


def test_proportional_attention_needs_transformers5_host():
    from prunekit_tokens.hosts import Host

    h = Host("timm", torch.nn.Module(), [torch.nn.Identity()] * 3, 1, 8, 2, False)
    from prunekit_tokens.attach import MergeReducer

    with pytest.raises(UsageError, match="proportional attention"):
        MergeReducer(h, [(0, 1)], proportional_attention=True)


def test_merge_llf_unmerges_to_full_sequence(images):
    from transformers import ViTModel

    torch.manual_seed(0)
    model = ViTModel(tiny_config()).eval()
    red = attach_merge(model, config=CroprConfig(prune_count=3, llf=True))
    seen = {}
    model.layers[3].register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0]))
    assert model(pixel_values=images).last_hidden_state.shape == (3, 17, 32)
    assert red.token_counts == [17, 14, 11, 17]
    # merged tokens come back as copies: at most 11 distinct vectors per image
    assert all(len(torch.unique(seen["x"][b], dim=0)) <= 11 for b in range(3))


def test_merge_more_than_half_is_usage_error(vit_cls, images):
    attach_merge(vit_cls, [(0, 9)])
    with pytest.raises(UsageError, match="at most half"):
        vit_cls(pixel_values=images)
