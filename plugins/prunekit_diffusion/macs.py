"""Per-module multiply-accumulate counts from one probe forward pass.

Uses ``torch.utils.flop_counter.FlopCounterMode`` (which attributes FLOPs of matmuls,
convolutions and attention to every module on the call stack) and halves FLOPs into
MACs. PyTorch's CPU attention kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``) has no FLOP formula in the
counter, so one is supplied here (``QK^T`` plus ``AV``: ``2·b·h·Lq·Lk·(d + dv)`` FLOPs);
without it attention would be counted as free on CPU. Element-wise ops and norms are
not counted (the usual MAC convention).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import flop_counter


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    m = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None and op not in flop_counter.flop_registry:
        m[op] = _sdpa_cpu_flops
    return m


@torch.no_grad()
def count_macs(model: torch.nn.Module, *args: Any, **kwargs: Any) -> dict[str, int]:
    """MACs of one ``model(*args, **kwargs)`` call, per module path (``""`` = the whole model).

    Paths are ``named_modules()`` names; a module called several times accumulates.
    """
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as fc:
        model(*args, **kwargs)
    root = type(model).__name__
    out: dict[str, int] = {}
    for key, per_op in fc.get_flop_counts().items():
        if key == "Global":
            continue
        if key == root:
            path = ""
        elif key.startswith(root + "."):
            path = key[len(root) + 1 :]
        else:
            continue
        out[path] = int(sum(per_op.values())) // 2
    out.setdefault("", 0)
    return out
