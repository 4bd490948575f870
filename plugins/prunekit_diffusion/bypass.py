"""Bypassing operators: temporarily through diffusers hooks, permanently by replacement.

- :class:`BypassHook` is a ``diffusers.hooks.ModelHook`` whose ``new_forward`` returns
  the operator's skip path instead of running it (no monkey-patching: the hook is
  registered in the module's ``HookRegistry`` and removing it restores the original
  forward exactly). :func:`bypassed` applies it to a set of operators for a ``with`` block.
- :func:`remove_operators` makes it permanent: UNet operators are replaced in their
  ``ModuleList`` by :class:`SkippedResnet` / :class:`SkippedOperator` (the list keeps
  its length, so the UNet's skip-connection bookkeeping is untouched); transformer
  blocks are deleted from their list and the config's layer count is updated, so a
  plain ``from_pretrained`` rebuilds the pruned shape.

Skip path (see :mod:`~prunekit_diffusion.operators`): ``x / s`` for shape-preserving
operators (``s`` = the operator's output scale, 1 in stock configs, so the output *is*
the input), ``conv_shortcut(x) / s`` for a resnet that changes the channel count, and
zeros for a transformer-block sublayer (``granularity="sublayer"``, :mod:`~prunekit_diffusion.sublayers`:
its residual branch then adds nothing; replaced by :class:`ZeroSublayer`, or the whole block is
removed when all its sublayers go).

Removal records name operators in the *original* model's indexing (block indices translated
through earlier block deletions), in :func:`remove_operators` and back in :func:`apply_records`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from .operators import Operator, first_tensor

HOOK_NAME = "prunekit_operator_bypass"
#: config key holding the length of each transformer block list
LAYER_COUNT_KEYS = {"transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x if scale == 1.0 else x / scale


def _wrap(x: torch.Tensor, kind: str, kwargs: dict[str, Any]) -> Any:
    if kind == "transformer":  # spatial Transformer2DModel inside a UNet block
        if kwargs.get("return_dict", True):
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=x)
        return (x,)
    return x


def skip_output(module: nn.Module, op: Operator, args: tuple, kwargs: dict) -> Any:
    """What ``module`` returns when operator ``op`` is removed."""
    x = first_tensor(args, kwargs)
    if x is None:
        raise RuntimeError(f"{op.name}: called without a tensor input")
    if op.adaptor == "zero":  # a sublayer's residual branch: adds nothing
        return torch.zeros_like(x)
    if op.adaptor == "shortcut":
        x = module.conv_shortcut(x.contiguous())
    return _wrap(_scaled(x, op.scale), op.kind, kwargs)


class BypassHook(ModelHook):
    """Replace an operator's forward by its skip path (LD-Pruner's "remove operator k")."""

    def __init__(self, op: Operator):
        super().__init__()
        self.op = op

    def new_forward(self, module: nn.Module, *args, **kwargs):
        return skip_output(module, self.op, args, kwargs)


@contextlib.contextmanager
def bypassed(model: nn.Module, ops: Iterable[Operator]) -> Iterator[nn.Module]:
    """Bypass ``ops`` of ``model`` inside the ``with`` block (hooks removed on exit, even on error)."""
    registries = []
    try:
        for op in ops:
            if not op.removable:
                raise ValueError(f"operator {op.name} cannot be bypassed: {op.reason}")
            reg = HookRegistry.check_if_exists_or_initialize(model.get_submodule(op.name))
            reg.register_hook(BypassHook(op), HOOK_NAME)
            registries.append(reg)
        yield model
    finally:
        for reg in registries:
            reg.remove_hook(HOOK_NAME, recurse=False)


class _EmbeddingHolder(nn.Module):
    def __init__(self, emb: nn.Module | None):
        super().__init__()
        self.emb = emb


class SkippedBlock(nn.Module):
    """A removed transformer block that keeps its list slot and only ``norm1.emb``.

    Used for block 0 of DiT-style models, whose output layer reads
    ``transformer_blocks[0].norm1.emb``; returns its input like a deleted block.
    """

    _prunekit_skipped = True

    def __init__(self, emb: nn.Module | None):
        super().__init__()
        self.norm1 = _EmbeddingHolder(emb)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class SkippedResnet(nn.Module):
    """A removed ``ResnetBlock2D``: ``conv_shortcut(x) / s`` (or ``x / s``); same call signature.

    The shortcut keeps its attribute name, so its weights keep their state-dict keys.
    """

    _prunekit_skipped = True

    def __init__(self, conv_shortcut: nn.Module | None = None, scale: float = 1.0):
        super().__init__()
        self.conv_shortcut = conv_shortcut
        self.output_scale_factor = scale

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        x = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor.contiguous())
        return _scaled(x, self.output_scale_factor)


class SkippedOperator(nn.Module):
    """A removed attention or spatial-transformer operator: returns its input (``/ s``)."""

    _prunekit_skipped = True

    def __init__(self, kind: str = "attention", scale: float = 1.0):
        super().__init__()
        self.kind = kind
        self.scale = scale

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        return _wrap(_scaled(hidden_states, self.scale), self.kind, kwargs)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, scale={self.scale:g}"


class ZeroSublayer(nn.Module):
    """A removed transformer-block sublayer (``attn1``/``attn2``/``ff``): returns zeros shaped like its
    input, so the block's residual update ``h + gate * 0`` leaves ``h`` unchanged. No weights."""

    _prunekit_skipped = True

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def replacement(module: nn.Module, record: dict[str, Any]) -> nn.Module:
    """The module that stands in for a removed operator described by ``record``."""
    if record.get("adaptor") == "zero":
        return ZeroSublayer()
    if record["kind"] == "block":
        return SkippedBlock(getattr(getattr(module, "norm1", None), "emb", None))
    if record["kind"] == "resnet":
        shortcut = getattr(module, "conv_shortcut", None) if record["adaptor"] == "shortcut" else None
        return SkippedResnet(shortcut, record["scale"])
    return SkippedOperator(record["kind"], record["scale"])


def _parent(model: nn.Module, name: str) -> tuple[nn.ModuleList, int, str]:
    parent_name, _, idx = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    if not isinstance(parent, nn.ModuleList) or not idx.isdigit():
        raise ValueError(f"operator {name} is not an element of a ModuleList")
    return parent, int(idx), parent_name


def _replace(model: nn.Module, name: str, record: dict[str, Any]) -> None:
    """Put the stand-in of ``record`` at ``name`` (a ModuleList element or a block's sublayer attribute)."""
    parent_name, _, attr = name.rpartition(".")
    if attr.isdigit():
        parent, idx, _ = _parent(model, name)
        parent[idx] = replacement(parent[idx], record)
        return
    parent = model.get_submodule(parent_name)
    if not isinstance(getattr(parent, attr, None), nn.Module):
        raise ValueError(f"operator {name}: no such submodule")
    setattr(parent, attr, replacement(getattr(parent, attr), record))


def _deleted(records: list[dict[str, Any]], list_name: str, config_only: bool = False) -> list[int]:
    """Original indices of ``list_name`` deleted by ``records`` (only config-updated ones if ``config_only``)."""
    return sorted(int(r["name"].rpartition(".")[2]) for r in records
                  if r["mode"] == "delete" and r["name"].rpartition(".")[0] == list_name
                  and (r.get("config_updated") or not config_only))


def _renumber(name: str, gone_by_list: dict[str, list[int]], to_original: bool) -> str | None:
    """``transformer_blocks.J[.rest]`` between current and original block indices, given the deleted ones
    (None: original block ``J`` itself is deleted)."""
    for list_name, gone in gone_by_list.items():
        if gone and name.startswith(list_name + "."):
            idx, _, rest = name[len(list_name) + 1:].partition(".")
            if not idx.isdigit():
                continue
            j = int(idx)
            if to_original:
                j = [k for k in range(j + len(gone) + 1) if k not in set(gone)][j]
            elif j in gone:
                return None
            else:
                j -= sum(g < j for g in gone)
            return f"{list_name}.{j}" + (f".{rest}" if rest else "")
    return name


def _lists(records: list[dict[str, Any]]) -> set[str]:
    return {r["name"].rpartition(".")[0] for r in records if r["mode"] == "delete"}


def removal_history(model: nn.Module) -> list[dict[str, Any]]:
    """Operators removed from ``model`` so far (names relative to the original model)."""
    return list(getattr(model, "_prunekit_removed", []))


def apply_records(model: nn.Module, records: list[dict[str, Any]]) -> nn.Module:
    """Re-apply removal ``records`` (from :func:`remove_operators` / a manifest) to ``model`` in place.

    Block deletions whose layer count is in the config (``config_updated``) are skipped:
    a model built from the pruned config already has the pruned length.
    """
    deletions: dict[str, list[int]] = {}
    absent = {ln: _deleted(records, ln, config_only=True) for ln in _lists(records)}  # not built from the config
    for r in records:
        if r["mode"] == "replace":
            name = _renumber(r["name"], absent, to_original=False)
            if name is not None:  # else: inside a block deleted later (e.g. its last sublayer went)
                _replace(model, name, r)
        elif not r.get("config_updated"):
            list_name, _, idx = r["name"].rpartition(".")
            deletions.setdefault(list_name, []).append(int(idx))
    for list_name, idxs in deletions.items():
        lst = model.get_submodule(list_name)
        keep = [m for j, m in enumerate(lst) if j not in set(idxs)]
        _set_list(model, list_name, keep)
    model._prunekit_removed = removal_history(model) + list(records)
    return model


def _set_list(model: nn.Module, list_name: str, modules: list[nn.Module]) -> None:
    parent_name, _, attr = list_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.ModuleList(modules))


def remove_operators(model: nn.Module, ops: Iterable[Operator]) -> list[dict[str, Any]]:
    """Physically remove ``ops`` from ``model`` (in place); returns the removal records.

    Records name operators relative to the original model (block indices are translated
    through earlier deletions), so they can be saved in a manifest and re-applied. Sublayers
    that would empty their block are removed as that block
    (:func:`~prunekit_diffusion.sublayers.merge_emptied_blocks`).
    """
    from .sublayers import merge_emptied_blocks

    ops = list(ops)
    for op in ops:
        if not op.removable:
            raise ValueError(f"operator {op.name} cannot be removed: {op.reason}")
    ops = merge_emptied_blocks(model, ops)
    history = removal_history(model)
    gone = {ln: _deleted(history, ln) for ln in _lists(history)}
    records: list[dict[str, Any]] = []
    deletions: dict[str, list[tuple[int, Operator]]] = {}
    for op in ops:
        if op.kind == "block" and op.adaptor != "embedding":
            _, idx, parent_name = _parent(model, op.name)
            deletions.setdefault(parent_name, []).append((idx, op))
            continue
        _replace(model, op.name, {"kind": op.kind, "adaptor": op.adaptor, "scale": op.scale})
        records.append({"name": _renumber(op.name, gone, to_original=True), "kind": op.kind, "mode": "replace",
                        "adaptor": op.adaptor, "scale": op.scale, "macs": op.macs, "params": op.params})
    for list_name, items in deletions.items():
        lst = model.get_submodule(list_name)
        gone_before = gone.get(list_name, [])
        original = [j for j in range(len(lst) + len(gone_before)) if j not in set(gone_before)]
        drop = {idx for idx, _ in items}
        _set_list(model, list_name, [m for j, m in enumerate(lst) if j not in drop])
        key = LAYER_COUNT_KEYS.get(list_name)
        updated = bool(key and key in model.config and model.config[key] == len(lst))
        if updated:
            model.register_to_config(**{key: len(lst) - len(drop)})
        for idx, op in sorted(items, key=lambda it: it[0]):
            records.append({"name": f"{list_name}.{original[idx]}", "kind": op.kind, "mode": "delete",
                            "adaptor": "identity", "scale": 1.0, "macs": op.macs, "params": op.params,
                            "config_updated": updated})
    model._prunekit_removed = history + records
    return records
