"""APTP gates over a diffusers ``UNet2DConditionModel``, installed as diffusers ``ModelHook``s.

APTP (Ganjdanesh et al., "Not All Prompts Are Made Equal: Prompt-based Pruning of Text-to-Image
Diffusion Models", ICLR 2025, arXiv 2406.12042) gates these prunable widths and depths:

- ResNet block: one gate per GroupNorm group of ``conv1``'s output, applied after ``norm2``
  (``h = norm2(conv1(x) + temb) * m``; SiLU(0) = 0, so a closed group feeds nothing to ``conv2``);
- attention: one gate per head on the ``to_q``/``to_k``/``to_v`` outputs (whole heads only);
- feed-forward: ``chunks`` gates over the GEGLU/GELU output (``inner_dim / chunks`` units each);
- depth: ``out = (1 - m) * x + m * block(x)`` on every shape-preserving ResNet block and on every
  spatial ``Transformer2DModel``; resamplers (``Downsample2D``/``Upsample2D``) and resnets that
  change the channel count are never depth-gated.

Masks are per sample: ``controller.set(gates)`` with ``gates`` of shape ``(B, layout.dim)`` (the
concatenation of every group's units, width groups first, then depth gates), repeated to a
CFG-doubled batch. With no gates set every hook is the identity, and all-ones gates reproduce the
unpruned output exactly (multiplication by 1.0 and ``0 * x + y``). Removing the hooks restores the
original forwards.

:func:`gated_macs` is the per-code MAC model built from one :func:`~prunekit_diffusion.macs.count_macs`
probe: every gated MAC term is linear in its fraction of open units (conv1/conv2/time projection of
a ResNet in its open groups; q/k/v/out projections and attention in the open heads; both FF
projections in the open chunks) and a closed depth gate removes its block's MACs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

HOOK = "prunekit_aptp_gate"


@dataclass
class GateGroup:
    """One group of gates: ``size`` units of ``unit`` channels (width) or one block switch (depth)."""

    name: str
    kind: str  # "resnet" | "heads" | "ff" | "depth"
    module: str  # operator path (resnet, Attention, FeedForward, or the depth-gated block)
    size: int
    unit: int = 1
    parent: str | None = None  # path of the depth-gated block containing this width group
    offset: int = field(default=0, repr=False)


@dataclass
class GateLayout:
    groups: list[GateGroup]

    @property
    def dim(self) -> int:
        return sum(g.size for g in self.groups)

    @property
    def width(self) -> list[GateGroup]:
        return [g for g in self.groups if g.kind != "depth"]

    @property
    def depth(self) -> list[GateGroup]:
        return [g for g in self.groups if g.kind == "depth"]

    def split(self, gates: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(..., dim)`` -> ``{group name: (..., size)}``."""
        return {g.name: gates[..., g.offset : g.offset + g.size] for g in self.groups}

    def to_json(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in asdict(g).items() if k != "offset"} for g in self.groups]


def _ff_chunks(inner: int, chunks: int) -> int:
    return max(d for d in range(1, min(chunks, inner) + 1) if inner % d == 0)


def discover(model: nn.Module, ff_chunks: int = 32) -> GateLayout:
    """The gate layout of a UNet (order: ``named_modules``; widths first, then depths)."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    width, depth = [], []
    transformers = [n for n, m in model.named_modules() if isinstance(m, Transformer2DModel)]
    for name, m in model.named_modules():
        if isinstance(m, ResnetBlock2D):
            if m.time_embedding_norm != "default" or not isinstance(m.norm2, nn.GroupNorm) or m.up or m.down:
                continue
            same = m.in_channels == m.out_channels and m.conv_shortcut is None
            parent = name if same else None
            width.append(GateGroup(f"{name}:groups", "resnet", name, m.norm2.num_groups,
                                   m.norm2.num_channels // m.norm2.num_groups, parent))
            if same:
                depth.append(GateGroup(f"{name}:depth", "depth", name, 1))
        elif isinstance(m, Transformer2DModel):
            depth.append(GateGroup(f"{name}:depth", "depth", name, 1))
        elif isinstance(m, BasicTransformerBlock):
            parent = next((t for t in transformers if name.startswith(t + ".")), None)
            for a in ("attn1", "attn2"):
                attn = getattr(m, a, None)
                if attn is not None:
                    width.append(GateGroup(f"{name}.{a}:heads", "heads", f"{name}.{a}", attn.heads,
                                           attn.inner_dim // attn.heads, parent))
            inner = m.ff.net[2].in_features
            n = _ff_chunks(inner, ff_chunks)
            width.append(GateGroup(f"{name}.ff:chunks", "ff", f"{name}.ff", n, inner // n, parent))
    groups, off = width + depth, 0
    for g in groups:
        g.offset, off = off, off + g.size
    if not groups:
        raise ValueError(f"{type(model).__name__}: no APTP gates found (expected ResnetBlock2D/Transformer2DModel)")
    return GateLayout(groups)


class GateState:
    """The per-sample masks the hooks read; ``None`` = every hook is the identity."""

    def __init__(self) -> None:
        self.masks: dict[str, torch.Tensor] | None = None


def _batched(mask: torch.Tensor, batch: int) -> torch.Tensor:
    if mask.shape[0] == batch:
        return mask
    if batch % mask.shape[0]:
        raise RuntimeError(f"gate batch {mask.shape[0]} does not divide the model batch {batch}")
    return mask.repeat(batch // mask.shape[0], *([1] * (mask.dim() - 1)))  # CFG: [uncond; cond]


class _WidthHook(ModelHook):
    """Multiply the module output by the group's unit mask expanded to channels (dim 1 or -1)."""

    def __init__(self, state: GateState, group: GateGroup, channel_dim: int):
        super().__init__()
        self.state, self.group, self.channel_dim = state, group, channel_dim

    def post_forward(self, module, output):
        if self.state.masks is None:
            return output
        m = self.state.masks[self.group.name].repeat_interleave(self.group.unit, dim=-1)
        m = _batched(m.to(output.dtype), output.shape[0])
        shape = [m.shape[0]] + [1] * (output.dim() - 1)
        shape[self.channel_dim] = m.shape[1]
        return output * m.reshape(shape)


class _DepthHook(ModelHook):
    """``(1 - m) * x + m * block(x)`` per sample."""

    def __init__(self, state: GateState, group: GateGroup, kind: str):
        super().__init__()
        self.state, self.group, self.kind = state, group, kind

    def new_forward(self, module, *args, **kwargs):
        out = self.fn_ref.original_forward(*args, **kwargs)
        if self.state.masks is None:
            return out
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("input_tensor"))
        y = out[0] if isinstance(out, tuple) else (out.sample if hasattr(out, "sample") else out)
        m = _batched(self.state.masks[self.group.name].to(y.dtype), y.shape[0]).reshape(-1, *([1] * (y.dim() - 1)))
        z = (1 - m) * x + m * y
        if isinstance(out, tuple):
            return (z, *out[1:])
        if hasattr(out, "sample"):
            out.sample = z
            return out
        return z


class GateController:
    """Hooks of one layout on one model. ``set(gates)`` / ``clear()`` / ``remove()``."""

    def __init__(self, model: nn.Module, layout: GateLayout):
        self.model, self.layout, self.state = model, layout, GateState()
        self._registries: list[HookRegistry] = []
        for g in layout.groups:
            mod = model.get_submodule(g.module)
            if g.kind == "resnet":
                self._add(mod.norm2, _WidthHook(self.state, g, 1))
            elif g.kind == "heads":
                for p in ("to_q", "to_k", "to_v"):
                    self._add(getattr(mod, p), _WidthHook(self.state, g, -1))
            elif g.kind == "ff":
                self._add(mod.net[0], _WidthHook(self.state, g, -1))
            else:
                self._add(mod, _DepthHook(self.state, g, g.kind))

    def _add(self, module: nn.Module, hook: ModelHook) -> None:
        reg = HookRegistry.check_if_exists_or_initialize(module)
        reg.register_hook(hook, HOOK)
        self._registries.append(reg)

    def set(self, gates: torch.Tensor | None) -> None:
        if gates is None:
            self.state.masks = None
            return
        if gates.dim() == 1:
            gates = gates[None]
        if gates.shape[-1] != self.layout.dim:
            raise ValueError(f"gates have {gates.shape[-1]} entries, the layout {self.layout.dim}")
        self.state.masks = self.layout.split(gates)

    def clear(self) -> None:
        self.state.masks = None

    def remove(self) -> None:
        for reg in self._registries:
            reg.remove_hook(HOOK, recurse=False)
        self._registries.clear()
        self.state.masks = None


def install(model: nn.Module, layout: GateLayout | None = None) -> GateController:
    """Install APTP gate hooks on ``model`` (discovering the layout unless given)."""
    return GateController(model, layout or discover(model))


# ---------------------------------------------------------------------------------------------
# MACs as a function of the gates


@dataclass
class MacModel:
    """``macs(gates) = base + sum_g saving_g * frac_g * depth_parent + sum_b block_b * d_b`` (see module doc)."""

    total: float
    fixed: float  # MACs no gate touches
    width_macs: dict[str, float]  # per width group: MACs proportional to its open fraction
    depth_macs: dict[str, float]  # per depth group: its block's MACs not in any width term
    layout: GateLayout

    def __call__(self, gates: torch.Tensor) -> torch.Tensor:
        """MACs per row of ``gates`` (differentiable)."""
        parts = self.layout.split(gates)
        out = torch.full(gates.shape[:-1], self.fixed, dtype=gates.dtype, device=gates.device)
        for g in self.layout.groups:
            if g.kind == "depth":
                term = self.depth_macs[g.name] * parts[g.name][..., 0]
            else:
                term = self.width_macs[g.name] * parts[g.name].mean(-1)
                if g.parent is not None:
                    term = term * parts[f"{g.parent}:depth"][..., 0]
            out = out + term
        return out

    def ratio(self, gates: torch.Tensor) -> torch.Tensor:
        return self(gates) / self.total

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "fixed": self.fixed, "width": self.width_macs, "depth": self.depth_macs}


def gated_macs(model: nn.Module, layout: GateLayout, *args: Any, **kwargs: Any) -> MacModel:
    """Build the :class:`MacModel` from one MAC probe ``model(*args, **kwargs)`` (no hooks active)."""
    from ..macs import count_macs

    macs = {k: float(v) for k, v in count_macs(model, *args, **kwargs).items()}
    get = lambda p: macs.get(p, 0.0)  # noqa: E731
    width: dict[str, float] = {}
    for g in layout.width:
        if g.kind == "resnet":
            width[g.name] = sum(get(f"{g.module}.{p}") for p in ("conv1", "conv2", "time_emb_proj"))
        else:  # attention and FF MACs are all in the gated projections / heads
            width[g.name] = get(g.module)
    depth = {}
    for g in layout.depth:
        inner = sum(width[w.name] for w in layout.width if w.parent == g.module)
        depth[g.name] = get(g.module) - inner
    ungated_width = sum(width[w.name] for w in layout.width if w.parent is None)
    fixed = get("") - sum(depth.values()) - sum(width[w.name] for w in layout.width if w.parent) - ungated_width
    return MacModel(get(""), fixed, width, depth, layout)
