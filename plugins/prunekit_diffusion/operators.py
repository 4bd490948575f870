"""Operator discovery for diffusers denoisers.

An *operator* (LD-Pruner's unit, arXiv 2404.11936) is one residual sub-network of the
denoiser that can be bypassed:

- UNets (``UNet2DModel``, ``UNet2DConditionModel``): every ``resnets[j]``
  (``ResnetBlock2D``) and ``attentions[j]`` (``Attention`` with a residual connection,
  or a spatial ``Transformer2DModel``) of every down, mid and up block.
- Transformer denoisers (``DiTTransformer2DModel``, ``Transformer2DModel``,
  ``PixArtTransformer2DModel``, ...): every element of the top-level block list
  (``transformer_blocks``; also ``single_transformer_blocks``, ``blocks``, ``layers``).

Removal replaces an operator by its skip path. Shape-preserving operators become the
identity (residual-branch scale factors such as ``output_scale_factor`` are kept, i.e.
the output is ``x / s``; 1 in every stock config). A ``ResnetBlock2D`` whose channel
count changes (the up-path blocks that take a concatenated skip connection) is
replaced by its own shortcut convolution — the minimal shape adaptor, which keeps its
trained weights. Block 0 of a DiT (and of an adaLN-zero ``Transformer2DModel``) is
replaced by a stand-in that keeps only ``norm1.emb``, because the model's output layer
reads its conditioning from ``transformer_blocks[0].norm1.emb``; deleting it outright
would silently change the output layer. Operators that change the spatial shape (resampling resnets), blocks
that return several tensors, and classes not listed above are reported as not
removable, with the reason. Down/upsamplers are never operators.

``granularity="sublayer"`` (our extension, not the paper's operator set; DiT-family models only)
makes the operators of a transformer denoiser the residual sublayers of its blocks instead of whole
blocks: ``attn1`` (self-attention), ``attn2`` (cross-attention, where present) and ``ff`` of every
``BasicTransformerBlock``; removal = the sublayer adds nothing to the residual stream (adaptor
``"zero"``). See :mod:`~prunekit_diffusion.sublayers`.

Costs are measured on one probe forward pass (batch 1) at the calibration resolution:
parameters, and MACs from :func:`~prunekit_diffusion.macs.count_macs`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .macs import count_macs

BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "blocks", "layers")
#: "operator": the paper's operators (UNet resnets/attentions, whole transformer blocks);
#: "sublayer": attention / feed-forward sublayers of DiT-family blocks (ours)
GRANULARITIES = ("operator", "sublayer")


@dataclass
class Operator:
    name: str  # module path, e.g. "down_blocks.1.resnets.0"
    kind: str  # "resnet" | "attention" | "transformer" | "block" | "sublayer"
    cls: str
    params: int
    macs: int  # per sample at the probe resolution
    removable: bool
    reason: str = ""
    adaptor: str = "identity"  # "identity" | "shortcut" | "embedding" (DiT block 0 keeps norm1.emb) | "zero" (sublayer)
    adaptor_params: int = 0
    adaptor_macs: int = 0
    scale: float = 1.0  # output = skip / scale when removed
    in_shape: tuple[int, ...] = field(default_factory=tuple)
    out_shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def saved_macs(self) -> int:
        return self.macs - self.adaptor_macs

    @property
    def saved_params(self) -> int:
        return self.params - self.adaptor_params

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_unet(model: nn.Module) -> bool:
    return hasattr(model, "down_blocks") and hasattr(model, "up_blocks")


#: denoisers whose forward reads ``transformer_blocks[0].norm1.emb`` (the final layer's adaLN
#: conditioning): removing block 0 must keep that embedding in place
READS_FIRST_BLOCK_EMB = ("DiTTransformer2DModel", "Transformer2DModel")


def keeps_embedding(model: nn.Module, name: str, module: nn.Module) -> bool:
    return (type(model).__name__ in READS_FIRST_BLOCK_EMB and name == "transformer_blocks.0"
            and hasattr(getattr(module, "norm1", None), "emb"))


def _kind(module: nn.Module) -> str:
    name = type(module).__name__
    if name == "ResnetBlock2D":
        return "resnet"
    if name == "Attention":
        return "attention"
    if name == "Transformer2DModel":
        return "transformer"
    return "other:" + name


def candidates(model: nn.Module, granularity: str = "operator") -> list[tuple[str, nn.Module, str]]:
    """(path, module, kind) of every candidate operator, in forward order for UNets."""
    if granularity != "operator":
        from .sublayers import sublayer_candidates

        return sublayer_candidates(model, granularity)
    out: list[tuple[str, nn.Module, str]] = []
    if is_unet(model):
        prefixes = [f"down_blocks.{i}" for i in range(len(model.down_blocks))]
        if getattr(model, "mid_block", None) is not None:
            prefixes.append("mid_block")
        prefixes += [f"up_blocks.{i}" for i in range(len(model.up_blocks))]
        for prefix in prefixes:
            block = model.get_submodule(prefix)
            for list_name in ("resnets", "attentions"):
                lst = getattr(block, list_name, None)
                if not isinstance(lst, nn.ModuleList):
                    continue
                for j, m in enumerate(lst):
                    if m is not None and not getattr(m, "_prunekit_skipped", False):
                        out.append((f"{prefix}.{list_name}.{j}", m, _kind(m)))
        return out
    for list_name in BLOCK_LISTS:
        lst = getattr(model, list_name, None)
        if isinstance(lst, nn.ModuleList):
            out += [(f"{list_name}.{j}", m, "block") for j, m in enumerate(lst)
                    if not getattr(m, "_prunekit_skipped", False)]
    return out


def first_tensor(args: tuple, kwargs: dict, names=("hidden_states", "input_tensor", "x")) -> torch.Tensor | None:
    if args and torch.is_tensor(args[0]):
        return args[0]
    for n in names:
        if torch.is_tensor(kwargs.get(n)):
            return kwargs[n]
    return None


def _output_tensor(out: Any) -> tuple[torch.Tensor | None, str]:
    if torch.is_tensor(out):
        return out, "tensor"
    if isinstance(out, tuple) and len(out) == 1 and torch.is_tensor(out[0]):
        return out[0], "tuple1"
    sample = getattr(out, "sample", None)
    if torch.is_tensor(sample):
        return sample, "output"
    return None, type(out).__name__


def _removability(module: nn.Module, kind: str, x: torch.Tensor | None, y: torch.Tensor | None,
                  out_kind: str) -> tuple[bool, str, str, float]:
    """(removable, reason, adaptor, scale)."""
    if kind.startswith("other:"):
        return False, f"unsupported operator class {kind[6:]}", "identity", 1.0
    if x is None or y is None:
        return False, f"not a single-tensor operator (returns {out_kind})", "identity", 1.0
    same = tuple(x.shape) == tuple(y.shape)
    if kind == "resnet":
        if getattr(module, "up", False) or getattr(module, "down", False):
            return False, "resamples (changes the spatial shape)", "identity", 1.0
        scale = float(getattr(module, "output_scale_factor", 1.0))
        if same and getattr(module, "conv_shortcut", None) is None:
            return True, "", "identity", scale
        if x.shape[2:] == y.shape[2:] and getattr(module, "conv_shortcut", None) is not None:
            return True, "", "shortcut", scale
        return False, f"shape {tuple(x.shape)} -> {tuple(y.shape)} without a shortcut", "identity", 1.0
    if not same:
        return False, f"changes the shape {tuple(x.shape)} -> {tuple(y.shape)}", "identity", 1.0
    if kind == "sublayer":  # residual branch inside a transformer block: removed = adds zero
        return True, "", "zero", 1.0
    if kind == "attention":
        if not getattr(module, "residual_connection", False):
            return False, "attention without a residual connection", "identity", 1.0
        return True, "", "identity", float(getattr(module, "rescale_output_factor", 1.0))
    if kind == "block" and out_kind != "tensor":
        return False, f"block returns {out_kind}, not one tensor", "identity", 1.0
    return True, "", "identity", 1.0


def _nparams(m: nn.Module | None) -> int:
    return 0 if m is None else sum(p.numel() for p in m.parameters())


@torch.no_grad()
def discover_operators(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor, dict] | None = None,
                       calib=None, granularity: str = "operator") -> list[Operator]:
    """Every candidate operator of ``model`` with its cost and whether it can be removed.

    ``example`` is a ``(sample, timestep, kwargs)`` probe input (batch 1); by default it
    is built from ``calib`` (a :class:`~prunekit_diffusion.sampling.Calibration`).
    ``granularity``: one of :data:`GRANULARITIES` (see the module docstring).
    """
    if example is None:
        from .sampling import Calibration

        example = (calib or Calibration(n=1)).example(model)
    cands = candidates(model, granularity)
    if not cands:
        raise ValueError(f"{type(model).__name__}: no prunable operators found (expected a diffusers UNet or a transformer with a block list)")
    seen: dict[str, tuple] = {}
    handles = []
    for name, m, _ in cands:
        def hook(mod, args, kwargs, out, _name=name):
            if _name not in seen:
                seen[_name] = (first_tensor(args, kwargs), *_output_tensor(out))
        handles.append(m.register_forward_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        args, kwargs = probe_args(model, *example)
        macs = count_macs(model, *args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    ops = []
    for name, m, kind in cands:
        if name not in seen:
            ops.append(Operator(name, kind, type(m).__name__, _nparams(m), 0, False, "not called in a forward pass"))
            continue
        xi, yi, out_kind = seen[name]
        ok, reason, adaptor, scale = _removability(m, kind, xi, yi, out_kind)
        ad = getattr(m, "conv_shortcut", None) if adaptor == "shortcut" else None
        if ok and kind == "block" and keeps_embedding(model, name, m):
            # the stand-in keeps norm1.emb; its call inside the block is saved, the final layer's is not counted here
            adaptor, ad = "embedding", m.norm1.emb
        ops.append(Operator(
            name=name, kind=kind, cls=type(m).__name__, params=_nparams(m), macs=macs.get(name, 0),
            removable=ok, reason=reason, adaptor=adaptor, adaptor_params=_nparams(ad),
            adaptor_macs=macs.get(name + ".conv_shortcut", 0) if adaptor == "shortcut" else 0, scale=scale,
            in_shape=tuple(xi.shape) if xi is not None else (), out_shape=tuple(yi.shape) if yi is not None else (),
        ))
    return ops


def probe_args(model: nn.Module, x: torch.Tensor, t: torch.Tensor, kw: dict) -> tuple[tuple, dict]:
    """``(args, kwargs)`` calling ``model`` the way :func:`~prunekit_diffusion.sampling.denoise` does."""
    tb = t.reshape(-1).expand(x.shape[0])
    if type(model).__name__.startswith("UNet"):
        return (x, tb), kw
    return (x,), {"timestep": tb, **kw}


def total_macs(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor, dict]) -> int:
    """MACs of one denoiser call on ``example`` (batch 1 → per sample)."""
    x, t, kw = example
    args, kwargs = probe_args(model, x, t, kw)
    return count_macs(model, *args, **kwargs)[""]
