"""The ``backend="gsplat"`` path of :func:`prunekit_splat.render.render` (CUDA only).

The image comes from ``gsplat.rendering.rasterization`` (classic mode, unpacked). Statistics
use the two routes of METHODS.md 2.1, since gsplat has no contribution accumulator:

- ``sum_weight``: rasterise a zero 1-channel colour c requiring grad; the image is
  sum_i c_i w_i(p), so d(sum of image)/dc_i = sum_p w_i(p);
- ``max_weight``, ``sum_opacity_t``, ``hits``: enumerate the included (Gaussian, pixel)
  pairs with ``gsplat.rasterize_to_indices_in_range`` batch by batch (depth order within
  each tile), recompute alpha per pair, and accumulate T per pixel with a segmented
  cumulative product (:func:`pair_stats`), carrying transmittance between batches.

gsplat clamps alpha at 0.999 (the torch backend's default is 3DGS's 0.99); the pair
statistics use 0.999 so that they agree with gsplat's own compositing.
"""

from __future__ import annotations

import torch

from prunekit.errors import UsageError

GSPLAT_ALPHA_MAX = 0.999


def pair_stats(gids: torch.Tensor, pix: torch.Tensor, alpha: torch.Tensor, opacity: torch.Tensor,
               trans: torch.Tensor, acc: dict[str, torch.Tensor]) -> None:
    """Accumulate statistics of included pairs; updates ``acc`` and ``trans`` in place.

    ``gids``/``pix``/``alpha``/``opacity`` [M]: Gaussian id, flat pixel id, alpha and activated
    opacity of each included pair. Pairs of one pixel must appear in depth order (pairs of
    different pixels may interleave). ``trans`` [P] is each pixel's transmittance before this
    batch; ``acc`` may hold ``max_weight``, ``sum_weight``, ``sum_opacity_t`` (float [N]) and
    ``hits`` (long [N]).
    """
    if gids.numel() == 0:
        return
    order = torch.sort(pix, stable=True).indices
    g, p, a, o = gids[order], pix[order], alpha[order].double(), opacity[order].double()
    log1m = torch.log1p(-a)
    excl = torch.cumsum(log1m, 0) - log1m
    first = torch.ones_like(p, dtype=torch.bool)
    first[1:] = p[1:] != p[:-1]
    seg = torch.cumsum(first.long(), 0) - 1
    local = excl - excl[first][seg]
    t_before = trans[p].double() * torch.exp(local)
    w = a * t_before
    if "max_weight" in acc:
        acc["max_weight"].scatter_reduce_(0, g, w.to(acc["max_weight"].dtype), "amax")
    if "sum_weight" in acc:
        acc["sum_weight"].index_add_(0, g, w.to(acc["sum_weight"].dtype))
    if "sum_opacity_t" in acc:
        acc["sum_opacity_t"].index_add_(0, g, (o * t_before).to(acc["sum_opacity_t"].dtype))
    if "hits" in acc:
        acc["hits"].index_add_(0, g, torch.ones_like(g))
    per_pixel = torch.zeros(trans.numel(), dtype=torch.float64, device=trans.device).index_add_(0, p, log1m)
    trans.mul_(torch.exp(per_pixel).to(trans.dtype))


def _pair_alpha(means2d, conics, opacity, gids, pix, width):
    """alpha of each (Gaussian, pixel) pair, gsplat's formula and clamp."""
    px = (pix % width).to(means2d.dtype) + 0.5
    py = torch.div(pix, width, rounding_mode="floor").to(means2d.dtype) + 0.5
    dx = means2d[gids, 0] - px
    dy = means2d[gids, 1] - py
    c = conics[gids]
    sigma = 0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) + c[:, 1] * dx * dy
    return torch.clamp_max(opacity[gids] * torch.exp(-sigma), GSPLAT_ALPHA_MAX)


def _enumerate_pair_stats(meta, opacity, n, width, height, names, batches_per_call=4):
    from gsplat import rasterize_to_indices_in_range

    dev = opacity.device
    means2d = meta["means2d"].detach().reshape(1, n, 2)
    conics = meta["conics"].detach().reshape(1, n, 3)
    ops = opacity.detach().reshape(1, n)
    offsets, flat_ids, ts = meta["isect_offsets"], meta["flatten_ids"], int(meta["tile_size"])
    n_isects = flat_ids.numel()
    acc = {k: torch.zeros(n, dtype=torch.long if k == "hits" else torch.float32, device=dev) for k in names}
    if n_isects == 0:
        return acc
    ends = torch.cat([offsets.flatten()[1:], torch.tensor([n_isects], device=dev, dtype=offsets.dtype)])
    longest = int((ends - offsets.flatten()).max())
    n_batches = -(-longest // (ts * ts))
    trans = torch.ones(1, height, width, device=dev, dtype=torch.float32)
    for step in range(0, n_batches, batches_per_call):
        gs, pix, _ = rasterize_to_indices_in_range(step, step + batches_per_call, trans, means2d, conics, ops,
                                                   width, height, ts, offsets, flat_ids)
        gs = gs.long() % n
        pix = pix.long()
        alpha = _pair_alpha(means2d[0], conics[0], ops[0], gs, pix, width)
        pair_stats(gs, pix, alpha, ops[0, gs], trans.view(-1), acc)
    return acc


def _sum_weight_by_autograd(rasterization, means, quats, scales, opacity, viewmat, K, width, height, kw):
    probe = torch.zeros(means.shape[0], 1, device=means.device, requires_grad=True)
    with torch.enable_grad():
        img, _, _ = rasterization(means, quats, scales, opacity, probe, viewmat[None], K[None], width, height,
                                  sh_degree=None, packed=False, **kw)
        (grad,) = torch.autograd.grad(img.sum(), probe)
    return grad[:, 0]


def render_gsplat(scene, camera, *, degree, background, names, depth, eps2d, near_plane, far_plane, tile_size=16):
    if not torch.cuda.is_available():
        raise UsageError("backend='gsplat' needs a CUDA device; use backend='torch' or 'auto'")
    try:
        from gsplat.rendering import rasterization
    except ImportError as exc:
        raise UsageError(f"backend='gsplat' needs the gsplat package (install prunekit[nerfstudio]): {exc}") from exc
    from .render import RenderResult

    home = scene.means.device
    dev = home if home.type == "cuda" else torch.device("cuda")
    n = len(scene)
    means = scene.means.to(dev, torch.float32)
    quats = scene.quats.to(dev, torch.float32)
    scales = torch.exp(scene.scales.to(dev, torch.float32))
    opacity = torch.sigmoid(scene.opacities.to(dev, torch.float32))
    n_rest = (degree + 1) ** 2 - 1
    coeffs = torch.cat([scene.sh0.to(dev, torch.float32)[:, None, :], scene.shN.to(dev, torch.float32)[:, :n_rest]], 1)
    viewmat = torch.as_tensor(camera.viewmat).to(dev, torch.float32)
    K = torch.as_tensor(camera.K).to(dev, torch.float32)
    w, h = camera.width, camera.height
    kw = dict(near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, tile_size=tile_size,
              rasterize_mode="classic")
    colors, alphas, meta = rasterization(means, quats, scales, opacity, coeffs, viewmat[None], K[None], w, h,
                                         sh_degree=degree, packed=False,
                                         render_mode="RGB+D" if depth else "RGB", **kw)
    image, alpha = colors[0, ..., :3], alphas[0, ..., 0]
    if background is not None:
        bg = torch.as_tensor(background, dtype=image.dtype, device=dev).reshape(3)
        image = image + (1.0 - alpha)[..., None] * bg
    visible = (meta["radii"].reshape(n, -1) > 0).all(-1)  # radii [1, N] (gsplat 1.4) or [1, N, 2] (1.5)
    result = RenderResult(image=image.to(home), alpha=alpha.to(home),
                          depth=colors[0, ..., 3].to(home) if depth else None,
                          visible=visible.to(home), backend="gsplat")
    if names:
        with torch.no_grad():
            args = (means.detach(), quats.detach(), scales.detach(), opacity.detach())
            stats = {}
            if "sum_weight" in names:
                stats["sum_weight"] = _sum_weight_by_autograd(rasterization, *args, viewmat, K, w, h, kw)
            rest = [k for k in names if k != "sum_weight"]
            if rest:
                stats.update(_enumerate_pair_stats(meta, opacity, n, w, h, rest))
        result.stats = {k: stats[k].to(home) for k in names}
    return result
