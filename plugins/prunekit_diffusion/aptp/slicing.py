"""Physically slice one APTP code (hard 0/1 gates) out of a UNet: the code's expert.

- ResNet group gates: the closed GroupNorm groups' channels leave ``conv1`` (output rows),
  ``time_emb_proj`` (rows), ``norm2`` (a ``GroupNorm`` with fewer groups of the same size, so each
  kept group's statistics are unchanged) and ``conv2`` (input columns).
- Head gates: the closed heads' rows leave ``to_q``/``to_k``/``to_v`` and their columns ``to_out[0]``;
  ``heads`` and ``inner_dim`` are updated (whole heads only: head_dim and hence the attention scale
  1/sqrt(head_dim) are untouched, METHODS.md pitfall).
- FF chunk gates: rows of the GEGLU value and gate halves (or the GELU projection) and columns of
  the output projection.
- Closed depth gates: the block is replaced in its list by
  :class:`~prunekit_diffusion.bypass.SkippedResnet` / ``SkippedOperator`` (identity; the list keeps
  its length so the UNet's skip bookkeeping is untouched).

In eval mode the expert equals the gated full model with the same hard gates (tested).
The ``spec`` (kept unit indices per width group, removed blocks) is JSON and rebuilds the shapes
on a freshly constructed UNet for loading.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..bypass import SkippedOperator, SkippedResnet
from .gating import GateLayout


def code_spec(layout: GateLayout, gates: torch.Tensor) -> dict[str, Any]:
    """``{"keep": {group: [unit indices]}, "removed": [block paths]}`` of one hard gate vector."""
    parts = layout.split(gates.detach().flatten())
    removed = [g.module for g in layout.depth if float(parts[g.name][0]) < 0.5]
    keep = {}
    for g in layout.width:
        if g.parent in removed:
            continue
        idx = [int(i) for i in torch.nonzero(parts[g.name] > 0.5).flatten()]
        if not idx:
            raise ValueError(f"code closes every unit of {g.name}; close its depth gate instead")
        keep[g.name] = idx
    return {"keep": keep, "removed": removed}


def _rows(layer: nn.Module, idx: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[idx].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[idx].clone())
    if isinstance(layer, nn.Linear):
        layer.out_features = len(idx)
    else:
        layer.out_channels = len(idx)


def _cols(layer: nn.Module, idx: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[:, idx].clone())
    if isinstance(layer, nn.Linear):
        layer.in_features = len(idx)
    else:
        layer.in_channels = len(idx)


def _channels(units: list[int], unit: int) -> torch.Tensor:
    return torch.tensor([u * unit + j for u in units for j in range(unit)], dtype=torch.long)


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    holder = model.get_submodule(parent) if parent else model
    if isinstance(holder, nn.ModuleList):
        holder[int(leaf)] = new
    else:
        setattr(holder, leaf, new)


def apply_spec(model: nn.Module, layout: GateLayout, spec: dict[str, Any]) -> nn.Module:
    """Slice ``model`` in place following ``spec``; returns it."""
    by_name = {g.name: g for g in layout.groups}
    for name, units in spec["keep"].items():
        g = by_name[name]
        if len(units) == g.size:
            continue
        ch = _channels(units, g.unit)
        mod = model.get_submodule(g.module)
        if g.kind == "resnet":
            _rows(mod.conv1, ch)
            if mod.time_emb_proj is not None:
                _rows(mod.time_emb_proj, ch)
            old = mod.norm2
            norm = nn.GroupNorm(len(units), len(ch), eps=old.eps, affine=old.affine)
            if old.affine:
                norm.weight, norm.bias = nn.Parameter(old.weight.data[ch].clone()), nn.Parameter(old.bias.data[ch].clone())
            mod.norm2 = norm
            _cols(mod.conv2, ch)
        elif g.kind == "heads":
            for p in ("to_q", "to_k", "to_v"):
                _rows(getattr(mod, p), ch)
            _cols(mod.to_out[0], ch)
            mod.heads = len(units)
            mod.inner_dim = len(ch)
            if hasattr(mod, "inner_kv_dim"):
                mod.inner_kv_dim = len(ch)
        elif g.kind == "ff":
            proj = mod.net[0].proj
            inner = mod.net[2].in_features
            if proj.out_features == 2 * inner:  # GEGLU / SwiGLU: value half, then gate half
                _rows(proj, torch.cat([ch, ch + inner]))
            else:
                _rows(proj, ch)
            _cols(mod.net[2], ch)
    for path in spec["removed"]:
        block = model.get_submodule(path)
        new = SkippedResnet() if hasattr(block, "conv1") else SkippedOperator(kind="transformer")
        _replace(model, path, new)
    return model


def slice_expert(model: nn.Module, layout: GateLayout, gates: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    """A sliced copy of ``model`` for one hard gate vector, and its spec."""
    spec = code_spec(layout, gates)
    return apply_spec(copy.deepcopy(model), layout, spec), spec
