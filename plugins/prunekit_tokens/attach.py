"""Attach token reducers to a ViT through forward hooks (no model code is forked).

- :func:`attach_cropr` — Token Cropr modules (learned scorer, auxiliary heads, LLF).
- :func:`attach_random` — random pruning at the same per-block token counts.
- :func:`attach_merge` — ToMe-style bipartite merging at the same per-block counts.

Each returns a :class:`TokenReducer` (an ``nn.Module`` holding only the reducer's own
parameters; the host model is referenced, not registered). Hooks: a pre-hook on the
first block starts the per-forward :class:`~prunekit_tokens.state.TokenState`; a hook
after each planned block shortens its output ``(B, N, C) -> (B, N - r, C)``, prefix
tokens first and the kept tokens in their original order; with Last Layer Fusion a
pre-hook on the final block rebuilds the full sequence (pruned tokens re-joined in
their original positions), so dense heads see every patch. ``remove()`` takes the hooks
off. Works with batch > 1; every image drops the same number of tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunekit.errors import UsageError

from .config import CroprConfig
from .hosts import Host, find_host
from .merge import bipartite_merge
from .modules import CroprModule
from .selection import keep_mask, split_indices
from .state import TokenState


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, x: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": x}


class TokenReducer(nn.Module):
    """Hooks that reduce tokens after the planned blocks; subclasses implement :meth:`reduce`."""

    method = "none"

    def __init__(self, host: Host, plan: list[tuple[int, int]], llf: bool = False):
        super().__init__()
        n_blocks = len(host.blocks)
        last = n_blocks - (2 if llf else 1)
        if any(not 0 <= b < last for b, _ in plan):
            raise UsageError(f"token reduction after blocks {[b for b, _ in plan]} does not fit {n_blocks} blocks"
                             f"{' with LLF' if llf else ''}")
        self.host = host
        self.plan = [(int(b), int(r)) for b, r in plan]
        self.llf = llf
        self.state: TokenState | None = None
        self.token_counts: list[int] = []  # tokens entering each block, last forward
        self.aux_outputs: list[torch.Tensor] = []
        self._handles: list[Any] = []
        self.attach()

    # hooks ------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "TokenReducer":
        if self._handles:
            return self
        blocks = self.host.blocks
        self._handles.append(blocks[0].register_forward_pre_hook(self._start, with_kwargs=True))
        for i, blk in enumerate(blocks):
            self._handles.append(blk.register_forward_pre_hook(self._count, with_kwargs=True))
        for slot, (b, _) in enumerate(self.plan):
            self._handles.append(blocks[b].register_forward_hook(self._after(slot)))
        if self.llf:
            self._handles.append(blocks[-1].register_forward_pre_hook(self._fuse, with_kwargs=True))
        self._attach_extra()
        return self

    def _attach_extra(self) -> None:
        pass

    def remove(self) -> None:
        """Take every hook off the host (the model runs unpruned again)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _start(self, module, args, kwargs):
        x = _hidden(args, kwargs)
        self.state = TokenState(x.shape[0], x.shape[1], x.device, keep_pool=self.llf)
        self.token_counts = []
        self.aux_outputs = []

    def _count(self, module, args, kwargs):
        self.token_counts.append(int(_hidden(args, kwargs).shape[1]))

    def _after(self, slot: int):
        def hook(module, args, output):
            x = output[0] if isinstance(output, tuple) else output
            x = self.reduce(slot, x)
            return (x, *output[1:]) if isinstance(output, tuple) else x
        return hook

    def _fuse(self, module, args, kwargs):
        x = self.state.restore(_hidden(args, kwargs))
        self.token_counts[-1] = x.shape[1]
        return _with_hidden(args, kwargs, x)

    # reduction ---------------------------------------------------------------
    def reduce(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, slot: int, n: int) -> int:
        r = self.plan[slot][1]
        if n - r < self.host.num_prefix + 1:
            raise UsageError(f"module {slot} (after block {self.plan[slot][0]}) would drop {r} of {n} tokens, "
                             f"leaving fewer than {self.host.num_prefix + 1} (prefix + one patch)")
        return r

    def _prune_by(self, x: torch.Tensor, scores: torch.Tensor, r: int) -> torch.Tensor:
        kept, dropped = split_indices(keep_mask(scores, x.shape[1] - r, self.host.num_prefix))
        return self.state.prune(x, kept, dropped)

    def kept_original(self) -> torch.Tensor:
        """(B, N0) bool: which input tokens reached the final block unpruned in the last forward."""
        return self.state.kept_original(self.token_counts[-1])


class CroprReducer(TokenReducer):
    """Token Cropr (Bergner et al., CVPR 2025): one :class:`CroprModule` per planned block."""

    method = "cropr"

    def __init__(self, host: Host, config: CroprConfig):
        plan = config.plan(len(host.blocks))
        super().__init__(host, plan, llf=config.llf)
        self.config = config
        heads = config.num_heads or host.num_heads
        self.cropr = nn.ModuleList(
            CroprModule(host.hidden_size, heads, config.num_queries, config.pre_norm, config.qk_proj,
                        config.v_proj, config.mlp_ratio, config.aux_out,
                        exclude_prefix=0 if config.aggregate_prefix else host.num_prefix)
            for _ in plan
        )

    def reduce(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        r = self._check(slot, x.shape[1])
        scores, aux = self.cropr[slot](x)
        if aux is not None:
            self.aux_outputs.append(aux)
        return self._prune_by(x, scores, r)

    @property
    def has_aux_heads(self) -> bool:
        return any(m.has_aux for m in self.cropr)

    def remove_aux_heads(self) -> None:
        """Delete every auxiliary branch; pruning decisions are unchanged."""
        for m in self.cropr:
            m.remove_aux_heads()
        self.config = type(self.config)(**{**self.config.__dict__, "aux_out": 0})

    def aux_loss(self, loss_fn, target) -> torch.Tensor:
        """``sum_i loss_fn(aux_i, target)`` over the last training forward's auxiliary outputs."""
        if not self.aux_outputs:
            raise RuntimeError("no auxiliary outputs: call in train() mode with aux heads, after a forward")
        return sum(loss_fn(a, target) for a in self.aux_outputs)


class RandomReducer(TokenReducer):
    """Random token pruning: uniform random scores, same per-block counts and selection."""

    method = "random"

    def __init__(self, host: Host, plan, llf: bool = False, seed: int = 0):
        super().__init__(host, plan, llf)
        self.generator = torch.Generator().manual_seed(seed)

    def reduce(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        r = self._check(slot, x.shape[1])
        scores = torch.rand(x.shape[:2], generator=self.generator)
        return self._prune_by(x, scores, r)


class MergeReducer(TokenReducer):
    """ToMe-style bipartite soft matching on the block's mean attention keys (see :mod:`.merge`)."""

    method = "merge"

    def __init__(self, host: Host, plan, llf: bool = False, proportional_attention: bool = False):
        if proportional_attention and host.attention_module(0) is None:
            raise UsageError(f"proportional attention needs a transformers 5 ViT (host is {host.kind})")
        self.proportional_attention = proportional_attention
        self._keys: dict[int, torch.Tensor] = {}
        super().__init__(host, plan, llf)

    def _attach_extra(self) -> None:
        for b, _ in self.plan:
            mod, read = self.host.key_module(b)
            self._handles.append(mod.register_forward_hook(self._keep_keys(b, read)))
        if self.proportional_attention:
            for i in range(len(self.host.blocks)):
                attn = self.host.attention_module(i)
                self._handles.append(attn.register_forward_pre_hook(self._size_bias, with_kwargs=True))

    def _keep_keys(self, block: int, read):
        def hook(module, args, output):
            self._keys[block] = read(output)
        return hook

    def _size_bias(self, module, args, kwargs):
        size = self.state.size if self.state is not None else None
        if size is None:
            return None
        bias = size.squeeze(-1).log()[:, None, None, :].to(_hidden(args, kwargs).dtype)  # B, 1, 1, N
        mask = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        mask = bias if mask is None else mask + bias
        if len(args) > 1:
            return (args[0], mask, *args[2:]), kwargs
        return args, {**kwargs, "attention_mask": mask}

    def reduce(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        r = self._check(slot, x.shape[1])
        if r > (x.shape[1] - self.host.num_prefix) // 2:
            raise UsageError(f"bipartite merging after block {self.plan[slot][0]} can merge at most half of "
                             f"{x.shape[1] - self.host.num_prefix} tokens, not {r}")
        keys = self._keys.pop(self.plan[slot][0])
        new_x, remap, size = bipartite_merge(x, keys, r, self.host.num_prefix, self.host.num_heads, self.state.size)
        self.state.moved(remap, size)
        return new_x


def attach_cropr(model: nn.Module, config: CroprConfig | None = None, **options) -> CroprReducer:
    """Attach Token Cropr modules to ``model`` (options as in :class:`CroprConfig`)."""
    try:
        cfg = config or CroprConfig(**options)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    host = find_host(model)
    try:
        return CroprReducer(host, cfg)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _plan_for(model: nn.Module, plan, config: CroprConfig | None, llf: bool) -> tuple[Host, list, bool]:
    host = find_host(model)
    if plan is None:
        cfg = config or CroprConfig(llf=llf)
        try:
            plan = cfg.plan(len(host.blocks))
        except ValueError as e:
            raise UsageError(str(e)) from None
        llf = cfg.llf
    return host, list(plan), llf


def attach_random(model: nn.Module, plan=None, *, config: CroprConfig | None = None, llf: bool = False,
                  seed: int = 0) -> RandomReducer:
    """Random pruning with the same ``[(block, r), ...]`` plan as a Cropr config."""
    host, plan, llf = _plan_for(model, plan, config, llf)
    return RandomReducer(host, plan, llf, seed)


def attach_merge(model: nn.Module, plan=None, *, config: CroprConfig | None = None, llf: bool = False,
                 proportional_attention: bool = False) -> MergeReducer:
    """ToMe-style merging with the same ``[(block, r), ...]`` plan as a Cropr config."""
    host, plan, llf = _plan_for(model, plan, config, llf)
    return MergeReducer(host, plan, llf, proportional_attention)


def expected_token_counts(num_tokens: int, plan, num_blocks: int, llf: bool) -> list[int]:
    """Tokens entering each block under ``plan`` (what every reducer produces)."""
    drop = dict(plan)
    counts, n = [], num_tokens
    for i in range(num_blocks):
        if llf and i == num_blocks - 1:
            n = num_tokens
        counts.append(n)
        n -= drop.get(i, 0)
    return counts


def relative_cost(counts: list[int], hidden: int, mlp: int | None = None) -> float:
    """Block MACs under ``counts`` relative to no reduction: per block ``n (4C^2 + 2 C M) + 2 n^2 C``."""
    mlp = mlp or 4 * hidden
    def macs(n):
        return n * (4 * hidden**2 + 2 * hidden * mlp) + 2 * n * n * hidden
    full = macs(counts[0]) * len(counts)
    return sum(macs(n) for n in counts) / full if full else 1.0


__all__ = ["TokenReducer", "CroprReducer", "RandomReducer", "MergeReducer", "attach_cropr", "attach_random",
           "attach_merge", "expected_token_counts", "relative_cost"]
