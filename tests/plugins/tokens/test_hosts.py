"""Host layouts: transformers 4 (tuple outputs, encoder.layer), timm (duck-typed and real)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from prunekit_tokens.attach import attach_cropr, attach_merge, attach_random
from prunekit_tokens.config import CroprConfig
from prunekit_tokens.hosts import find_host
from prunekit_tokens.modules import CroprModule


class _V4Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = nn.Module()
        self.attention.key = nn.Linear(c, c)
        self.out = nn.Linear(c, c)

    def forward(self, h):
        k = self.attention.key(h)
        w = torch.softmax(h @ k.transpose(1, 2) / h.shape[-1] ** 0.5, -1)
        return self.out(w @ h)


class _V4Layer(nn.Module):
    """Like transformers 4 ``ViTLayer``: positional (hidden, head_mask, output_attentions) -> tuple."""

    def __init__(self, c):
        super().__init__()
        self.attention = _V4Attention(c)

    def forward(self, hidden_states, head_mask=None, output_attentions=False):
        return (hidden_states + self.attention(hidden_states),)


class FakeV4ViT(nn.Module):
    def __init__(self, c=16, n_layers=4, n_patches=12):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=c, num_attention_heads=2)
        self.embeddings = nn.Module()
        self.embeddings.cls_token = nn.Parameter(torch.randn(1, 1, c))
        self.embeddings.proj = nn.Linear(4, c)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_V4Layer(c) for _ in range(n_layers))

    def forward(self, patches):
        h = self.embeddings.proj(patches)
        h = torch.cat([self.embeddings.cls_token.expand(len(h), -1, -1), h], 1)
        for layer in self.encoder.layer:
            h = layer(h, None, False)[0]
        return h


class _TimmAttn(nn.Module):
    def __init__(self, c, heads=2):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return torch.softmax(q @ k.transpose(1, 2), -1) @ v


class _TimmBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attn = _TimmAttn(c)

    def forward(self, x, attn_mask=None):
        return x + self.attn(x)


class FakeTimmViT(nn.Module):
    """Duck-typed like timm's VisionTransformer (blocks, num_prefix_tokens, embed_dim)."""

    def __init__(self, c=16, depth=4):
        super().__init__()
        self.embed_dim = c
        self.num_prefix_tokens = 1
        self.blocks = nn.Sequential(*[_TimmBlock(c) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(x)


def test_transformers_v4_layout_with_tuple_outputs():
    torch.manual_seed(0)
    model = FakeV4ViT().eval()
    host = find_host(model)
    assert host.kind == "transformers-v4" and host.tuple_output and host.num_prefix == 1
    patches = torch.randn(2, 12, 4)
    for attach in (lambda: attach_cropr(model, prune_count=2, llf=False),
                   lambda: attach_random(model, config=CroprConfig(prune_count=2)),
                   lambda: attach_merge(model, config=CroprConfig(prune_count=2))):
        red = attach()
        out = model(patches)
        assert out.shape == (2, 13 - 6, 16)
        assert red.token_counts == [13, 11, 9, 7]
        red.remove()
    red = attach_cropr(model, prune_count=2, llf=True)
    assert model(patches).shape == (2, 13, 16)


def test_timm_like_model_duck_typed():
    torch.manual_seed(0)
    model = FakeTimmViT().eval()
    host = find_host(model)
    assert host.kind == "timm" and host.num_heads == 2
    x = torch.randn(2, 9, 16)
    for red in (attach_cropr(model, prune_count=2), ):
        assert model(x).shape == (2, 3, 16)
        red.remove()
    red = attach_merge(model, config=CroprConfig(prune_count=2))
    assert model(x).shape == (2, 3, 16)
    assert red.token_counts == [9, 7, 5, 3]


def test_real_timm_vision_transformer():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32, depth=4, num_heads=2).eval()
    x = torch.randn(2, 1, 32, 32)
    red = attach_cropr(model, prune_count=3, aux_out=10)
    assert model(x).shape == (2, 10)
    assert red.token_counts == [17, 14, 11, 8]
    red.remove()
    red = attach_merge(model, config=CroprConfig(prune_count=3))
    assert model(x).shape == (2, 10)
    assert red.token_counts == [17, 14, 11, 8]


def test_real_timm_save_reload_and_distilled_prefix(tmp_path, monkeypatch):
    """timm (0.6.7 in the CI env, 1.x too): state_dict save/reload; DeiT-distilled keeps 2 prefix tokens."""
    timm = pytest.importorskip("timm")
    from prunekit_tokens.persist import load_pretrained, save_pretrained

    def vit():
        return timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32, depth=4, num_heads=2).eval()

    torch.manual_seed(0)
    model = vit()
    red = attach_cropr(model, prune_counts=(5, 3), aux_out=10).eval()
    with torch.no_grad():
        for m in red.cropr:
            m.queries.normal_()
    red.remove_aux_heads()
    x = torch.randn(3, 1, 32, 32)
    ref = model(x)
    save_pretrained(model, red, tmp_path / "m")
    torch.manual_seed(1)
    model2, red2 = load_pretrained(tmp_path / "m", model=vit())
    assert torch.equal(model2(x), ref) and red2.token_counts == [17, 12, 9, 9]

    from timm.models.deit import VisionTransformerDistilled

    deit = VisionTransformerDistilled(img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32,
                                      depth=4, num_heads=2).eval()
    red = attach_cropr(deit, prune_count=4)
    assert red.host.num_prefix == 2

    def prefix_lowest(self, t):  # the scorer ranks both prefix tokens last
        s = torch.arange(t.shape[1], dtype=t.dtype).expand(t.shape[0], -1).clone()
        s[:, :2] = -1e9
        return s

    monkeypatch.setattr(CroprModule, "scores", prefix_lowest)
    assert deit(x).shape == (3, 10)
    assert red.token_counts == [18, 14, 10, 6]
    assert bool((red.state.owner[:, :2] == torch.tensor([0, 1])).all())
    kept = red.kept_original()
    assert kept[:, 2:].sum(1).tolist() == [4] * 3 and kept[:, -4:].all()  # the 4 highest-index patches
