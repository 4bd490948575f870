"""Rays, stratified sampling and volume rendering on the unit cube, with sample skipping.

For a ray o + t d crossing the unit cube on [t_n, t_f], K stratified samples t_k (one uniform draw per
bin when ``perturb``, bin centres otherwise), spacing delta_k = (t_f - t_n) / K, and (Max 1995; Mildenhall
et al. 2020)

    alpha_k = 1 - exp(-sigma_k delta_k),   T_k = prod_{j<k} (1 - alpha_j),   C = sum_k T_k alpha_k c_k + T_K * bg.

``keep(points) -> bool`` (a pruned-cell mask, or an occupancy grid) selects the samples that are
evaluated at all; the others get sigma = 0 without a field query. Samples outside the cube are empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class RenderOut:
    rgb: torch.Tensor  # [R, 3]
    acc: torch.Tensor  # [R] accumulated opacity
    samples: int  # samples on the rays inside the cube
    evaluated: int  # samples the field was queried at


def box_intersect(o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry/exit distances of rays with [0,1]^3 (slab method); t_far <= t_near when the ray misses."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (0.0 - o) * inv, (1.0 - o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far


def sample_points(o, d, n_samples: int, perturb: bool, generator: torch.Generator | None = None):
    """Stratified samples: (points [R, K, 3], delta [R], hit [R])."""
    near, far = box_intersect(o, d)
    hit = far > near + 1e-6
    far = torch.where(hit, far, near + 1e-6)
    shape = (o.shape[0], n_samples)
    u = torch.rand(shape, generator=generator, device=o.device) if perturb else torch.full(shape, 0.5, device=o.device)
    bins = (torch.arange(n_samples, dtype=o.dtype, device=o.device)[None] + u) / n_samples
    t = near[:, None] + (far - near)[:, None] * bins
    pts = (o[:, None, :] + t[..., None] * d[:, None, :]).clamp(0.0, 1.0)
    return pts, (far - near) / n_samples, hit


def composite(sigma: torch.Tensor, rgb: torch.Tensor, delta: torch.Tensor, bg: torch.Tensor):
    """Alpha compositing of [R, K] densities and [R, K, 3] colours over background ``bg`` [3]."""
    alpha = 1.0 - torch.exp(-sigma * delta[:, None])
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], 1), 1)
    w = alpha * trans[:, :-1]
    acc = w.sum(1)
    return (w[..., None] * rgb).sum(1) + (1.0 - acc)[:, None] * bg, acc


def render_rays(field, o: torch.Tensor, d: torch.Tensor, n_samples: int, *, perturb: bool = False, hard: bool = False,
                keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> RenderOut:
    """Render rays (origins/directions in unit-cube coordinates, unit ``d``) through ``field``."""
    pts, delta, hit = sample_points(o, d, n_samples, perturb, generator)
    R, K = pts.shape[:2]
    flat = pts.reshape(-1, 3)
    sel = hit[:, None].expand(R, K).reshape(-1)
    if keep is not None:
        sel = sel & keep(flat)
    idx = sel.nonzero().flatten()
    sigma = torch.zeros(R * K, dtype=o.dtype, device=o.device)
    rgb = torch.zeros(R * K, 3, dtype=o.dtype, device=o.device)
    if idx.numel():
        dirs = d[:, None, :].expand(R, K, 3).reshape(-1, 3)[idx]
        s, c = field(flat[idx], dirs, hard=hard)
        sigma = sigma.index_put((idx,), s)
        rgb = rgb.index_put((idx,), c)
    out, acc = composite(sigma.view(R, K), rgb.view(R, K, 3), delta, field.bg_color())
    return RenderOut(out, acc, int(hit.sum()) * K, int(idx.numel()))


def render_image(field, rays_o: torch.Tensor, rays_d: torch.Tensor, n_samples: int, *, hard: bool = True,
                 keep=None, chunk: int = 4096) -> tuple[torch.Tensor, int, int]:
    """Render all rays [H, W, 3] without gradients: (image, field queries, samples inside the cube)."""
    H, W = rays_o.shape[:2]
    o, d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    outs, n, total = [], 0, 0
    with torch.no_grad():
        for i in range(0, o.shape[0], chunk):
            r = render_rays(field, o[i:i + chunk], d[i:i + chunk], n_samples, hard=hard, keep=keep)
            outs.append(r.rgb)
            n, total = n + r.evaluated, total + r.samples
    return torch.cat(outs).view(H, W, 3), n, total
