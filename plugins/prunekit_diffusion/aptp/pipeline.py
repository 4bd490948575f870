"""``AptpPipeline``: route prompts, run each code's expert as an ordinary batch, restore the order.

APTP's batching (METHODS.md 6.2): every prompt goes to one code (cosine argmax of the router);
prompts are grouped by code and each group runs through a copy of the wrapped diffusers pipeline
whose ``unet`` is that code's sliced expert (dense batches, no per-sample shapes). Outputs come back
in the caller's order, in the wrapped pipeline's own output class.

Per-prompt arguments are split with the prompts: ``negative_prompt`` / ``generator`` lists of the
prompt count, and ``latents`` / ``prompt_embeds``-like tensors whose first dimension is
``len(prompt) * num_images_per_prompt``. Everything else is passed through unchanged.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from prunekit import UsageError


def _take(value: Any, idx: list[int], n: int, per: int) -> Any:
    if isinstance(value, list) and len(value) == n:
        return [value[i] for i in idx]
    if isinstance(value, list) and len(value) == n * per:
        return [value[i * per + j] for i in idx for j in range(per)]
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n * per:
        rows = torch.tensor([i * per + j for i in idx for j in range(per)])
        return value[rows]
    return value


def _merge(parts: list[Any], order: list[list[int]], n: int, per: int) -> Any:
    """Put group outputs (each ``len(idx) * per`` long) back into caller order."""
    first = parts[0]
    slots: list[Any] = [None] * (n * per)
    for part, idx in zip(parts, order):
        for k, i in enumerate(idx):
            for j in range(per):
                slots[i * per + j] = part[k * per + j]
    if isinstance(first, torch.Tensor):
        return torch.stack(slots)
    if isinstance(first, np.ndarray):
        return np.stack(slots)
    return slots


class AptpPipeline:
    """Wrap a diffusers text-to-image pipeline (``prompt=`` and ``unet``) with an APTP bundle.

    ``encode(prompts) -> (B, D)`` is the router's prompt encoder (all-MiniLM-L6-v2 mean pooling by
    default, :class:`~prunekit_diffusion.aptp.text.PromptEncoder`).

    ``condition(prompts) -> (embedding (B, D), kwargs)``, when given instead, is one text-encoder
    pass shared by the router and the experts, for pipelines whose own text encoder is the
    router's (the issue allows either): the router reads ``embedding`` and each expert gets its
    prompts' rows of the tensors in ``kwargs`` (e.g. ``prompt_embeds``), so routing adds only the
    router itself. Its time is reported as ``encode_*`` (a cost the pipeline pays anyway).
    """

    def __init__(self, pipe: Any, bundle: Any, encode: Callable[[list[str]], torch.Tensor] | None = None,
                 condition: Callable[[list[str]], tuple[torch.Tensor, dict]] | None = None):
        if not bundle.experts:
            raise UsageError("the APTP bundle has no experts (export it first)")
        if encode is not None and condition is not None:
            raise UsageError("give APTP either encode= or condition=, not both")
        self.condition = condition
        if encode is None and condition is None:
            from .text import PromptEncoder

            encode = PromptEncoder().embed
        self.pipe, self.bundle, self.encode = pipe, bundle, encode
        comps = dict(pipe.components)
        self.experts = [type(pipe)(**{**comps, "unet": e}) for e in bundle.experts]
        for p in self.experts:
            p.set_progress_bar_config(disable=True)
        self.last_timing: dict[str, float] = {}

    @classmethod
    def from_bundle(cls, folder, pipe: Any, encode=None) -> "AptpPipeline":
        from .bundle import load_bundle

        return cls(pipe, load_bundle(folder, pipe.unet), encode)

    def route(self, prompts: Sequence[str]) -> torch.Tensor:
        return self.bundle.router.route(self.encode(list(prompts)))

    def __call__(self, prompt: str | list[str] | None = None, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise UsageError("AptpPipeline takes keyword arguments after prompt")
        if prompt is None:
            raise UsageError("APTP routes on the prompt text: pass prompt=")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        n, per = len(prompts), int(kwargs.get("num_images_per_prompt", 1) or 1)
        te, ce = time.perf_counter(), time.process_time()
        shared: dict = {}
        if self.condition is not None:
            emb, shared = self.condition(prompts)
            shared = {k: v for k, v in shared.items() if k not in kwargs}
        t0, c0 = time.perf_counter(), time.process_time()
        codes = (self.bundle.router.route(emb) if self.condition is not None else self.route(prompts)).tolist()
        t1, c1 = time.perf_counter(), time.process_time()
        order = [[i for i in range(n) if codes[i] == k] for k in sorted(set(codes))]
        outs = []
        for idx in order:
            sub = {k: _take(v, idx, n, per) for k, v in kwargs.items()}
            sub.update({k: v[idx] for k, v in shared.items()})  # one row per prompt
            text = None if "prompt_embeds" in sub else [prompts[i] for i in idx]  # diffusers takes one, not both
            outs.append(self.experts[codes[idx[0]]](prompt=text, **sub))
        t2, c2 = time.perf_counter(), time.process_time()
        self.last_timing = {"encode_s": t0 - te, "encode_cpu_s": c0 - ce, "route_s": t1 - t0, "generate_s": t2 - t1,
                            "route_cpu_s": c1 - c0, "generate_cpu_s": c2 - c1, "codes": codes}
        first = outs[0]
        if isinstance(first, tuple):
            return tuple(_merge([o[f] for o in outs], order, n, per) if isinstance(first[f], (list, np.ndarray, torch.Tensor))
                         else first[f] for f in range(len(first)))
        fields = {}
        for f in dataclasses.fields(first):
            val = getattr(first, f.name)
            per_image = val is not None and hasattr(val, "__len__") and len(val) == len(order[0]) * per
            fields[f.name] = _merge([getattr(o, f.name) for o in outs], order, n, per) if per_image else val
        return type(first)(**fields)
