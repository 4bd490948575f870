"""Cropr modules on transformers ViTs: shapes, CLS, counts, detached scorer, aux heads, LLF."""

import pytest
import torch
from .conftest import tiny_config

from prunekit.errors import UsageError
from prunekit_tokens.attach import attach_cropr, expected_token_counts
from prunekit_tokens.config import CroprConfig
from prunekit_tokens.modules import CroprModule


def test_shapes_batch_and_counts(vit_cls, images):
    red = attach_cropr(vit_cls, prune_count=3)
    out = vit_cls(pixel_values=images).logits
    assert out.shape == (3, 10)
    assert red.plan == [(0, 3), (1, 3), (2, 3)]
    assert red.token_counts == [17, 14, 11, 8] == expected_token_counts(17, red.plan, 4, llf=False)


def test_vitmodel_output_is_shortened(images):
    from transformers import ViTModel

    torch.manual_seed(0)
    model = ViTModel(tiny_config()).eval()
    attach_cropr(model, prune_counts=(2, 5, 1))
    h = model(pixel_values=images).last_hidden_state
    assert h.shape == (3, 17 - 8, 32)


def test_exactly_r_dropped_per_module_schedule(vit_cls, images):
    red = attach_cropr(vit_cls, prune_counts=(4, 0, 2))
    vit_cls(pixel_values=images)
    c = red.token_counts
    assert [c[i] - c[i + 1] for i in range(3)] == [4, 0, 2]
    per_image = red.state.kept_original(c[-1]).sum(1)
    assert per_image.tolist() == [11, 11, 11]


def test_cls_always_kept_even_with_lowest_score(vit_cls, images, monkeypatch):
    before = {}
    vit_cls.vit.layers[0].register_forward_hook(lambda m, a, o: before.__setitem__("x", o))
    red = attach_cropr(vit_cls, prune_count=5)
    after = {}
    vit_cls.vit.layers[0].register_forward_hook(lambda m, a, o: after.__setitem__("x", o))

    def scores_cls_lowest(self, x):
        s = torch.arange(x.shape[1], dtype=x.dtype).expand(x.shape[0], -1).clone()
        s[:, 0] = -1e9
        return s

    monkeypatch.setattr(CroprModule, "scores", scores_cls_lowest)
    vit_cls(pixel_values=images)
    assert torch.equal(after["x"][:, 0], before["x"][:, 0])
    # the highest-index tokens have the highest scores: tokens 6..16 survive module 0
    assert torch.equal(after["x"][:, 1:], before["x"][:, 6:])
    assert bool(red.state.owner[:, 0].eq(0).all())


def test_scorer_gets_detached_tokens(vit_cls, images):
    red = attach_cropr(vit_cls, prune_count=3, aux_out=10)
    red.train()
    vit_cls(pixel_values=images)
    assert len(red.aux_outputs) == 3 and red.aux_outputs[0].shape == (3, 1, 10)
    loss = red.aux_loss(lambda a, y: torch.nn.functional.cross_entropy(a.mean(1), y), torch.tensor([1, 2, 3]))
    loss.backward()
    assert all(p.grad is None for p in vit_cls.parameters())
    assert all(m.queries.grad is not None and m.queries.grad.abs().sum() > 0 for m in red.cropr)


def test_main_loss_does_not_train_scorer(vit_cls, images):
    red = attach_cropr(vit_cls, prune_count=3, aux_out=10)
    red.train()
    vit_cls.train()
    vit_cls(pixel_values=images).logits.sum().backward()
    assert vit_cls.classifier.weight.grad is not None
    assert all(p.grad is None for p in red.parameters())


def test_remove_aux_heads_keeps_eval_outputs(vit_cls, images):
    red = attach_cropr(vit_cls, prune_count=3, aux_out=10, qk_proj=True, v_proj=True)
    red.eval()
    ref = vit_cls(pixel_values=images).logits
    assert any(".aux." in n for n, _ in red.named_parameters())
    n_before = sum(p.numel() for p in red.parameters())
    red.remove_aux_heads()
    assert not red.has_aux_heads
    assert not any(".aux." in n for n, _ in red.named_parameters())
    assert sum(p.numel() for p in red.parameters()) < n_before
    assert torch.equal(vit_cls(pixel_values=images).logits, ref)
    assert red.config.aux_out == 0


def test_eval_mode_makes_no_aux_outputs(vit_cls, images):
    red = attach_cropr(vit_cls, prune_count=3, aux_out=10).eval()
    vit_cls(pixel_values=images)
    assert red.aux_outputs == []


def test_llf_restores_full_count_before_last_block(images):
    from transformers import ViTModel

    torch.manual_seed(0)
    model = ViTModel(tiny_config()).eval()
    red = attach_cropr(model, prune_count=4, llf=True)
    assert red.plan == [(0, 4), (1, 4)]
    seen = {}
    model.layers[3].register_forward_pre_hook(lambda m, a: seen.__setitem__("last_in", a[0]))
    out = model(pixel_values=images).last_hidden_state
    assert red.token_counts == [17, 13, 9, 17]
    assert seen["last_in"].shape == (3, 17, 32)
    assert out.shape == (3, 17, 32)


def test_llf_pool_values(images):
    """Pruned-after-block-0 tokens re-enter the last block with their block-0 output values."""
    from transformers import ViTModel

    torch.manual_seed(0)
    model = ViTModel(tiny_config()).eval()
    raw = {}
    model.layers[0].register_forward_hook(lambda m, a, o: raw.__setitem__("b0", o.clone()))
    red = attach_cropr(model, prune_count=4, llf=True)
    snap = {}

    def grab(m, a, o):
        snap["owner"] = red.state.owner.clone()

    model.layers[0].register_forward_hook(grab)
    model.layers[3].register_forward_pre_hook(lambda m, a: snap.__setitem__("last_in", a[0]), prepend=False)
    model(pixel_values=images)
    gone = snap["owner"] < 0  # pruned by module 0
    assert int(gone.sum()) == 3 * 4
    restored = snap["last_in"]
    assert torch.equal(restored[gone], raw["b0"][gone])


def test_too_many_tokens_dropped_is_usage_error(vit_cls, images):
    attach_cropr(vit_cls, prune_count=7)
    with pytest.raises(UsageError, match="would drop"):
        vit_cls(pixel_values=images)


def test_bad_plans():
    with pytest.raises(ValueError):
        CroprConfig(prune_count=-1)
    with pytest.raises(ValueError, match="module slots"):
        CroprConfig(prune_counts=(1, 1, 1, 1)).plan(4)
    with pytest.raises(ValueError, match="prune_after"):
        CroprConfig(prune_after=(2,), llf=True).plan(4)
    assert CroprConfig(prune_after=(0, 2), prune_counts=(3, 1)).plan(4) == [(0, 3), (2, 1)]


def test_not_a_vit_is_usage_error():
    with pytest.raises(UsageError, match="not a supported ViT"):
        attach_cropr(torch.nn.Linear(3, 3))


def test_remove_restores_unpruned_model(vit_cls, images):
    ref = vit_cls(pixel_values=images).logits
    red = attach_cropr(vit_cls, prune_count=3)
    assert not torch.equal(vit_cls(pixel_values=images).logits, ref)
    red.remove()
    assert torch.equal(vit_cls(pixel_values=images).logits, ref)


def test_fast_scores_equal_summed_attention_logits():
    torch.manual_seed(0)
    m = CroprModule(32, 4, num_queries=3, qk_proj=True, aux_out=5).train()
    x = torch.randn(2, 9, 32)
    kin = m.norm(x)
    q = m.q_proj(m.queries).view(3, 4, 8)
    k = m.k_proj(kin).view(2, 9, 4, 8)
    logits = torch.einsum("qhd,bnhd->bhqn", q, k)
    assert torch.allclose(m.scores(x), logits.sum((1, 2)), atol=1e-5)


def test_deit_keeps_both_prefix_tokens(images):
    from transformers import DeiTConfig, DeiTForImageClassification

    torch.manual_seed(0)
    cfg = DeiTConfig(**{k: v for k, v in tiny_config().to_dict().items() if k in DeiTConfig().to_dict()})
    model = DeiTForImageClassification(cfg).eval()
    red = attach_cropr(model, prune_count=4)
    assert red.host.num_prefix == 2
    assert model(pixel_values=images).logits.shape == (3, 10)
    assert red.token_counts == [18, 14, 10, 6]
    assert bool((red.state.owner[:, :2] == torch.tensor([0, 1])).all())


def test_exclude_prefix_hides_cls_from_aux_aggregation(vit_cls, images):
    red = attach_cropr(vit_cls, prune_count=3, aux_out=10, aggregate_prefix=False).train()
    assert all(m.exclude_prefix == 1 for m in red.cropr)
    x = torch.randn(2, 9, 32, requires_grad=True)
    m = red.cropr[0]
    # changing the CLS token does not change the auxiliary output when the prefix is hidden
    m.exclude_prefix = 0
    base = m(x)[1]
    x2 = x.detach().clone()
    x2[:, 0] += 100.0
    m.exclude_prefix = 1
    assert torch.allclose(m(x)[1], m(x2)[1])
    m.exclude_prefix = 0
    assert not torch.allclose(base, m(x2)[1])
