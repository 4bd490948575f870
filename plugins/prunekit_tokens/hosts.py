"""Finding the transformer blocks of a host ViT, without touching its code.

Supported layouts:

- transformers 5 (``ViTModel.layers[i]``, block returns a tensor), as in
  ``ViTModel``, ``ViTForImageClassification`` (``.vit``), DeiT (``.deit``) and any wrapper
  exposing such a model as ``.vit`` / ``.deit`` / ``.backbone`` / ``.base_model``;
- transformers 4 (``ViTModel.encoder.layer[i]``, block returns a tuple);
- timm ``VisionTransformer`` (``.blocks``, ``.num_prefix_tokens``), duck-typed so that
  timm itself is never imported here.

Prefix tokens (CLS, DeiT's distillation token, register tokens) come first in the
sequence and are never pruned or merged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from prunekit.errors import UsageError


@dataclass
class Host:
    """What a token reducer needs to know about a ViT."""

    kind: str  # "transformers-v5" | "transformers-v4" | "timm"
    model: nn.Module  # the module holding the blocks
    blocks: list[nn.Module]
    num_prefix: int
    hidden_size: int
    num_heads: int
    tuple_output: bool  # block returns a tuple whose first item is the hidden states

    def key_module(self, i: int) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """The module whose output holds block ``i``'s attention keys, and how to read them (B, N, C)."""
        blk = self.blocks[i]
        if self.kind == "transformers-v5":
            return blk.attention.k_proj, lambda out: out
        if self.kind == "transformers-v4":
            return blk.attention.attention.key, lambda out: out
        c = self.hidden_size
        return blk.attn.qkv, lambda out: out[..., c : 2 * c]

    def attention_module(self, i: int) -> nn.Module | None:
        """Block ``i``'s attention module when it takes an additive mask (transformers 5 only)."""
        return self.blocks[i].attention if self.kind == "transformers-v5" else None


def _hf_base(model: nn.Module) -> nn.Module | None:
    seen = set()
    stack = [model]
    while stack:
        m = stack.pop()
        if m is None or id(m) in seen or not isinstance(m, nn.Module):
            continue
        seen.add(id(m))
        if hasattr(m, "embeddings") and (isinstance(getattr(m, "layers", None), nn.ModuleList)
                                         or isinstance(getattr(getattr(m, "encoder", None), "layer", None), nn.ModuleList)):
            return m
        for name in ("vit", "deit", "backbone"):
            stack.append(getattr(m, name, None))
        base = getattr(type(m), "base_model", None)
        if base is not None:
            try:
                stack.append(m.base_model)
            except AttributeError:
                pass
    return None


def _hf_prefix(base: nn.Module) -> int:
    emb = base.embeddings
    n = 1 if getattr(emb, "cls_token", None) is not None else 0
    if getattr(emb, "distillation_token", None) is not None:
        n += 1
    n += int(getattr(getattr(base, "config", None), "num_register_tokens", 0) or 0)
    return n


def find_host(model: nn.Module) -> Host:
    """Locate the blocks of ``model``; :class:`UsageError` when it is not a supported ViT."""
    base = _hf_base(model)
    if base is not None:
        cfg = base.config
        if isinstance(getattr(base, "layers", None), nn.ModuleList):
            kind, blocks, tup = "transformers-v5", list(base.layers), False
        else:
            kind, blocks, tup = "transformers-v4", list(base.encoder.layer), True
        return Host(kind, base, blocks, _hf_prefix(base), cfg.hidden_size, cfg.num_attention_heads, tup)
    if isinstance(getattr(model, "blocks", None), nn.Sequential) and hasattr(model, "num_prefix_tokens"):
        blocks = list(model.blocks)
        heads = getattr(getattr(blocks[0], "attn", None), "num_heads", None) if blocks else None
        dim = getattr(model, "embed_dim", None) or getattr(model, "num_features", None)
        if heads is None or dim is None:
            raise UsageError(f"{type(model).__name__}: timm-like model without attn.num_heads / embed_dim")
        return Host("timm", model, blocks, int(model.num_prefix_tokens), int(dim), int(heads), False)
    raise UsageError(
        f"{type(model).__name__}: not a supported ViT (expected a transformers ViT/DeiT with .layers or "
        ".encoder.layer, or a timm VisionTransformer with .blocks)"
    )
