"""Deterministic sampling of final latents from a diffusers denoiser.

LD-Pruner (Castells et al., arXiv 2404.11936) compares the *final* latents (the
denoiser's output after the whole reverse process, before any VAE decode) of the
original and the modified model. :func:`sample_latents` runs that reverse process
with a copy of the scheduler, per-sample seeded generators (so a sample does not
depend on how the set is batched) and optional classifier-free guidance::

    eps = eps_u + g * (eps_c - eps_u)

Supported denoisers: ``UNet2DModel``, ``UNet2DConditionModel`` and transformer
denoisers taking ``(hidden_states, timestep=...)`` (``DiTTransformer2DModel``,
``Transformer2DModel``, ``PixArtTransformer2DModel``). Conditioning is passed as
keyword arguments with a leading sample dimension (``class_labels`` of shape
``(n,)``, ``encoder_hidden_states`` of shape ``(n, L, D)``); ``extra`` holds
per-call constants (e.g. PixArt's ``added_cond_kwargs``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch


@dataclass
class Calibration:
    """What to generate when scoring: ``n`` samples, ``steps`` denoising steps, seeds ``seed + i``."""

    n: int = 8
    steps: int = 10
    seed: int = 0
    cond: dict[str, torch.Tensor] = field(default_factory=dict)
    uncond: dict[str, torch.Tensor] | None = None
    guidance_scale: float = 1.0
    batch_size: int = 16
    extra: dict[str, Any] = field(default_factory=dict)
    shape: tuple[int, int, int] | None = None  # (C, H, W); default from the model config

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"calibration needs at least 1 sample, got n={self.n}")
        if self.steps < 1:
            raise ValueError(f"calibration needs at least 1 denoising step, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        for name, group in (("cond", self.cond), ("uncond", self.uncond or {})):
            for k, v in group.items():
                if torch.is_tensor(v) and v.shape[0] != self.n:
                    raise ValueError(f"calibration {name}[{k!r}] has {v.shape[0]} rows, expected n={self.n}")
        if self.guidance_scale != 1.0 and self.uncond is None:
            raise ValueError("guidance_scale != 1 needs unconditional inputs (uncond)")

    def generators(self) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(self.seed + i) for i in range(self.n)]

    def example(self, model: torch.nn.Module, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """A (sample, timestep, kwargs) probe input built from the first ``batch`` calibration rows."""
        c, h, w = self.shape or latent_shape(model)
        x = torch.zeros(batch, c, h, w, dtype=model_dtype(model))
        t = torch.full((batch,), 10, dtype=torch.long)
        kw = {k: v[:batch] for k, v in self.cond.items()}
        kw.update(self.extra)
        return x, t, kw


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        return p.dtype
    return torch.float32


def latent_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) of the denoiser's input from its config."""
    cfg = model.config
    size = cfg.get("sample_size")
    if size is None:
        raise ValueError(f"{type(model).__name__}: config has no sample_size; give Calibration(shape=...)")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(cfg["in_channels"]), int(h), int(w)


def denoise(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """One denoiser call, returning the prediction with the input's channel count.

    A learned-variance head (``2C`` output channels, as in DiT) is cut to its first
    ``C`` channels, as diffusers' DiT pipeline does.
    """
    tb = t.reshape(-1).expand(x.shape[0]) if t.dim() <= 1 else t
    name = type(model).__name__
    if name.startswith("UNet"):
        out = model(x, tb, return_dict=False, **kwargs)[0]
    else:
        out = model(x, timestep=tb, return_dict=False, **kwargs)[0]
    if out.shape[1] == 2 * x.shape[1]:
        out = out[:, : x.shape[1]]
    return out


def _rows(d: dict[str, Any], idx: slice) -> dict[str, Any]:
    return {k: (v[idx] if torch.is_tensor(v) else v) for k, v in d.items()}


@torch.no_grad()
def sample_latents(model: torch.nn.Module, scheduler, calib: Calibration,
                   call: Callable[..., torch.Tensor] = denoise,
                   generators: Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """Final latents ``(n, C, H, W)`` of ``calib.steps`` reverse steps of ``scheduler`` with ``model``."""
    c, h, w = calib.shape or latent_shape(model)
    gens = list(generators) if generators is not None else calib.generators()
    if len(gens) != calib.n:
        raise ValueError(f"got {len(gens)} generators for {calib.n} samples")
    dtype = model_dtype(model)
    outs = []
    for start in range(0, calib.n, calib.batch_size):
        idx = slice(start, min(calib.n, start + calib.batch_size))
        g = gens[idx]
        sched = copy.deepcopy(scheduler)
        sched.set_timesteps(calib.steps)
        x = torch.stack([torch.randn(c, h, w, generator=gi, dtype=torch.float32) for gi in g]).to(dtype)
        x = x * sched.init_noise_sigma
        cond = _rows(calib.cond, idx)
        cond.update(calib.extra)
        guided = calib.guidance_scale != 1.0
        if guided:
            unc = _rows(calib.uncond, idx)
            both = {k: (torch.cat([unc[k], cond[k]]) if torch.is_tensor(cond.get(k)) else cond[k]) for k in cond}
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            if guided:
                e_u, e_c = call(model, torch.cat([inp, inp]), t, both).chunk(2)
                eps = e_u + calib.guidance_scale * (e_c - e_u)
            else:
                eps = call(model, inp, t, cond)
            x = sched.step(eps, t, x, generator=g, return_dict=False)[0]
        outs.append(x)
    return torch.cat(outs)
