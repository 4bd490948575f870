"""Baseline: magnitude (L1) channel pruning of a diffusers UNet or DiT with Torch-Pruning, at a MAC target.

Not LD-Pruner: this removes *channels* inside every layer (and whole attention heads),
ranked by the L1 norm of their weights (Torch-Pruning's ``MagnitudeImportance(p=1)``
with dependency-graph grouping, ``tp.pruner.BasePruner``). One global pruning ratio
(``global_pruning=True``: channels ranked across layers) is searched by bisection so that the pruned denoiser's measured MACs per call come as close
as possible to ``keep_macs`` of the original without exceeding it.

Fix-ups that Torch-Pruning does not do for diffusers (METHODS.md §6.3 and §10):
``Downsample2D`` / ``Upsample2D`` keep a stale ``channels`` attribute (an assertion fires),
and attention heads are pruned whole (``prune_num_heads=True, prune_head_dims=False``) with
``Attention.heads`` updated, because pruning the head dimension would silently change the
attention temperature. Torch-Pruning keeps ``GroupNorm`` groups consistent by pruning the
same channel slot in every group, so granularity is coarse on narrow layers; ratios that
break the model (e.g. leave no head) are treated as too aggressive. Requires ``torch-pruning`` (tested with 1.6.1).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from prunekit.errors import UsageError
from torch import nn

from .operators import probe_args, total_macs


def _fixups(model: nn.Module, heads: dict[nn.Module, int]) -> None:
    for m in model.modules():
        name = type(m).__name__
        if name in ("Downsample2D", "Upsample2D") and getattr(m, "conv", None) is not None:
            m.channels = m.conv.in_channels
            m.out_channels = m.conv.out_channels
        if name == "Attention" and m.to_q in heads:
            m.heads = int(heads[m.to_q])
            m.inner_dim = m.to_q.out_features
            m.inner_kv_dim = m.to_k.out_features


def prune_channels(model: nn.Module, example: tuple, ratio: float) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of the channels of every prunable layer removed (L1 magnitude)."""
    try:
        import torch_pruning as tp
    except ModuleNotFoundError:
        raise UsageError("magnitude channel pruning needs torch-pruning (pip install torch-pruning)") from None
    m = copy.deepcopy(model).eval()
    args, kwargs = probe_args(m, *example)
    inputs = {"sample" if type(m).__name__.startswith("UNet") else "hidden_states": args[0], **kwargs}
    if len(args) > 1:
        inputs["timestep"] = args[1]
    ignored = [mod for n, mod in m.named_modules() if n in ("conv_out", "proj_out", "proj_out_2")]
    num_heads, head_ratio = {}, {}
    for mod in m.modules():
        if type(mod).__name__ == "Attention" and mod.heads > 1:
            # whole heads only, and at least one left
            for lin in (mod.to_q, mod.to_k, mod.to_v):
                num_heads[lin] = mod.heads
                head_ratio[lin] = min(ratio, (mod.heads - 1) / mod.heads)
    pruner = tp.pruner.BasePruner(
        m, inputs, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio, global_pruning=True,
        ignored_layers=ignored, num_heads=num_heads, prune_num_heads=bool(num_heads),
        prune_head_dims=False, head_pruning_ratio=ratio, head_pruning_ratio_dict=head_ratio or None,
        output_transform=lambda o: (o.sample if hasattr(o, "sample") else o[0]).sum(),
    )
    pruner.step()
    _fixups(m, pruner.num_heads if num_heads else {})
    return m.eval()


def magnitude_prune(model: nn.Module, example: tuple, keep_macs: float, *, iters: int = 8) -> tuple[nn.Module, dict[str, Any]]:
    """Bisect the uniform channel ratio so that MACs <= ``keep_macs`` of the original (closest from below)."""
    total = total_macs(model, example)
    lo, hi, best = 0.0, 0.9, None
    for _ in range(iters):
        mid = (lo + hi) / 2
        try:
            cand = prune_channels(model, example, mid)
            macs = total_macs(cand, example)  # also checks that the pruned model runs
        except (RuntimeError, ZeroDivisionError, ValueError, AssertionError):
            hi = mid  # too aggressive for this architecture (e.g. no head left)
            continue
        if macs <= keep_macs * total:
            best, hi = (cand, mid, macs), mid
        else:
            lo = mid
    if best is None:
        raise UsageError(f"magnitude pruning found no channel ratio reaching {keep_macs:g} of the MACs")
    cand, ratio, macs = best
    return cand, {"channel_ratio": ratio, "macs": macs, "mac_ratio": macs / total}
