"""Sublayer operators of DiT-family denoisers (``granularity="sublayer"``; our extension).

LD-Pruner (Castells et al., arXiv 2404.11936) prunes the operators of an SD UNet: ResNet blocks
and attention / transformer blocks. A DiT block (Peebles & Xie, arXiv 2212.09748; diffusers'
``BasicTransformerBlock`` with adaLN-zero) holds residual operators of its own:

    h <- h + g_msa(c) * Attn(LN(h) * (1 + s_msa(c)) + b_msa(c))        (attn1, self-attention)
    h <- h + Attn2(LN(h), text)                                        (attn2, where present)
    h <- h + g_mlp(c) * FF(LN(h) * (1 + s_mlp(c)) + b_mlp(c))          (ff, feed-forward)

Treating each sublayer as an LD-Pruner operator is **our extension of the paper's operator set**,
not the paper's method: bypassing sublayer ``k`` means its branch adds zero to the residual stream
(``Attn(.) := 0``, so ``g * 0 + h = h`` exactly), its cost is the sublayer's own MACs and
parameters, and the scores are LD-Pruner's unchanged (``S_k`` of :mod:`~prunekit_diffusion.scoring`),
selected with the core ``prunekit.select``. At equal MACs this is a finer choice than whole blocks.

Physical removal replaces the sublayer by :class:`~prunekit_diffusion.bypass.ZeroSublayer` (no
weights). The block's adaLN modulation (``norm1.linear``) keeps the rows of a removed sublayer's
shift/scale/gate: it is one per-sample matrix-vector product, and shrinking it would change the
block's forward. A block whose sublayers are all removed is the identity and is removed as a whole
block instead (:func:`merge_emptied_blocks`: deleted, config ``num_layers`` updated, or for DiT block
0 the stand-in that keeps ``norm1.emb``).
"""

from __future__ import annotations

from typing import Sequence

from prunekit.errors import UsageError
from torch import nn

from .operators import BLOCK_LISTS, GRANULARITIES, Operator, is_unet, keeps_embedding

SUBLAYERS = ("attn1", "attn2", "ff")
#: block classes whose forward adds each sublayer's output to the residual stream (diffusers)
BLOCK_CLASSES = ("BasicTransformerBlock",)


def _skipped(m) -> bool:
    return getattr(m, "_prunekit_skipped", False)


def live_sublayers(block: nn.Module) -> list[str]:
    """Names of the sublayers of ``block`` that are present and not removed yet."""
    return [s for s in SUBLAYERS if isinstance(getattr(block, s, None), nn.Module) and not _skipped(getattr(block, s))]


def sublayer_candidates(model: nn.Module, granularity: str = "sublayer") -> list[tuple[str, nn.Module, str]]:
    """(path, module, ``"sublayer"``) of every live sublayer of every block, in forward order."""
    if granularity not in GRANULARITIES:
        raise UsageError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    if is_unet(model):
        raise UsageError(f"granularity 'sublayer' is for DiT-family transformers; {type(model).__name__} is a UNet "
                         "(its operators already are resnets and attentions)")
    out: list[tuple[str, nn.Module, str]] = []
    for list_name in BLOCK_LISTS:
        lst = getattr(model, list_name, None)
        if not isinstance(lst, nn.ModuleList):
            continue
        for j, block in enumerate(lst):
            if _skipped(block):
                continue
            if type(block).__name__ not in BLOCK_CLASSES:
                raise UsageError(f"granularity 'sublayer' supports {', '.join(BLOCK_CLASSES)} blocks; "
                                 f"{list_name}.{j} is {type(block).__name__}")
            out += [(f"{list_name}.{j}.{s}", getattr(block, s), "sublayer") for s in live_sublayers(block)]
    if not out:
        raise UsageError(f"{type(model).__name__}: no transformer block sublayers found")
    return out


def merge_emptied_blocks(model: nn.Module, ops: Sequence[Operator]) -> list[Operator]:
    """``ops`` with the sublayers of every block that would lose all of them replaced by one block operator.

    Exact: with every residual branch adding zero the block returns its input. Blocks with an extra
    branch (a GLIGEN ``fuser``) are left as sublayer removals.
    """
    by_block: dict[str, list[Operator]] = {}
    out: list[Operator] = []
    for op in ops:
        if op.kind == "sublayer":
            by_block.setdefault(op.name.rpartition(".")[0], []).append(op)
        else:
            out.append(op)
    for path, group in by_block.items():
        block = model.get_submodule(path)
        if set(live_sublayers(block)) - {op.name.rpartition(".")[2] for op in group} or getattr(block, "fuser", None) is not None:
            out += group
            continue
        emb = keeps_embedding(model, path, block)
        out.append(Operator(name=path, kind="block", cls=type(block).__name__,
                            params=sum(p.numel() for p in block.parameters()), macs=sum(op.macs for op in group),
                            removable=True, adaptor="embedding" if emb else "identity",
                            adaptor_params=sum(p.numel() for p in block.norm1.emb.parameters()) if emb else 0,
                            in_shape=group[0].in_shape, out_shape=group[0].out_shape))
    return out
