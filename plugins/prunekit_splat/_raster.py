"""Tiled front-to-back compositing of projected 2D Gaussians, in pure PyTorch.

This is the inner loop of :func:`prunekit_splat.render.render` (the CPU reference path). It
takes Gaussians already projected to the image (centre ``xy``, inverse 2D covariance
``conic = (A, B, C)``, activated opacity ``sigma``) and per-Gaussian features (RGB, and
optionally depth), and composites them per pixel in depth order:

    alpha_i(p) = min(alpha_max, sigma_i * exp(-q_i(p) / 2)),
    q_i(p)     = A dx^2 + 2 B dx dy + C dy^2,  (dx, dy) = p + 0.5 - xy_i
    w_i(p)     = alpha_i(p) * T_i(p),  T_i(p) = prod_{j before i, included} (1 - alpha_j(p))
    out(p)     = sum_i w_i(p) f_i,     T_final(p) = prod_{included} (1 - alpha_i(p))

Gaussian i is *included* at p when alpha_i(p) >= 1/255, q_i(p) <= 9 (its 3-sigma ellipse) and
T_i(p) * (1 - alpha_i(p)) >= 1e-4; the first Gaussian failing the last test ends the pixel
(3DGS semantics).

Layout: Gaussians are binned into the square tiles (8x8 pixels by default) that their
support box touches and sorted by depth per tile (:func:`plan_tiles`). Each tile's list is
consumed in depth chunks of ``chunk`` Gaussians, for a batch of tiles at once, as dense
[tiles, chunk, pixels] tensors: power = log sigma - q/2 is assembled from separable x and y
parts, T inside a chunk is a cumulative product continued from the pixel's carried
transmittance, and a tile leaves the loop as soon as all its pixels have terminated.

Backward (``_Rasterize.backward``, written by hand): chunks are visited back to front,
carrying per pixel R(p) = sum_{j later} w_j(p) s_j(p) + T_final(p) dL/dT_final(p), with
s_j = f_j . dL/dout(p); then dL/dalpha_i = T_i s_i - R_i / (1 - alpha_i), and d power = alpha
dL/dalpha where alpha is not clamped. The forward tensors of the first chunks are kept for
it up to ``CACHE_BYTES``; later chunks are recomputed from their saved starting
transmittance, so memory stays bounded whatever the number of Gaussians.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

ALPHA_MIN = 1.0 / 255.0
LOG_ALPHA_MIN = math.log(ALPHA_MIN)
T_MIN = 1e-4
SIGMA_CUT = 3.0  # Gaussians are evaluated inside their 3-sigma ellipse only
STAT_NAMES = ("max_weight", "sum_weight", "sum_opacity_t", "hits")
# tuning defaults (read when a plan is made; measured by scripts/bench/bench_render.py)
CHUNK = 32  # depth slots per tile evaluated in one vectorised step
MAX_ELEMS = 1 << 22  # Gaussian-pixel evaluations per vectorised step (bounds memory)
CACHE_BYTES = 256 << 20  # forward tensors kept for the backward pass; beyond this, chunks are recomputed


@dataclass
class TilePlan:
    """Which Gaussians touch which tile, in depth order (built by :func:`plan_tiles`)."""

    width: int
    height: int
    tile_size: int
    tiles_x: int
    tiles_y: int
    isect_gid: torch.Tensor  # [M] Gaussian index per (tile, Gaussian) pair, sorted by tile then depth
    tile_start: torch.Tensor  # [n_tiles] first pair of each tile
    tile_count: torch.Tensor  # [n_tiles] number of pairs of each tile
    chunk: int = field(default_factory=lambda: CHUNK)
    max_elems: int = field(default_factory=lambda: MAX_ELEMS)
    cache_bytes: int = field(default_factory=lambda: CACHE_BYTES)
    alpha_max: float = 0.99
    stats: bool = False
    stats_out: dict = field(default_factory=dict)

    @property
    def n_tiles(self) -> int:
        return self.tiles_x * self.tiles_y

    @property
    def n_pairs(self) -> int:
        return int(self.isect_gid.numel())


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch intra-op threads (None: unchanged), restoring the setting after."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_THREADS_TO_RESTORE: list[int] = []


def restore_backward_threads() -> None:
    """Undo a thread change made by :class:`BackwardThreadsStart` (also called before each render)."""
    if _THREADS_TO_RESTORE:
        torch.set_num_threads(_THREADS_TO_RESTORE.pop())


class BackwardThreadsStart(torch.autograd.Function):
    """Identity on a render's outputs; its backward (the first of the render's graph) sets the threads."""

    @staticmethod
    def forward(ctx, n: int, *tensors):
        ctx.n = n
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        if ctx.n != torch.get_num_threads():
            if not _THREADS_TO_RESTORE:
                _THREADS_TO_RESTORE.append(torch.get_num_threads())
            torch.set_num_threads(ctx.n)
        return (None, *grads)


class BackwardThreadsEnd(torch.autograd.Function):
    """Identity on a render's differentiable inputs; its backward (the last one) restores the threads."""

    @staticmethod
    def forward(ctx, *tensors):
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads):
        restore_backward_threads()
        return grads


def support_extent(cov_xx: torch.Tensor, cov_yy: torch.Tensor,
                   opacity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-widths of the axis-aligned box holding the pixels a Gaussian can reach.

    The support is q <= min(9, 2 ln(255 sigma)) (3-sigma ellipse intersected with
    alpha >= 1/255); the box of the ellipse q <= k^2 has half-widths k sqrt(Sigma_xx), k sqrt(Sigma_yy).
    """
    k2 = torch.clamp(2.0 * torch.log(opacity.clamp_min(1e-30) / ALPHA_MIN), min=0.0, max=SIGMA_CUT**2)
    k = torch.sqrt(k2)
    return k * torch.sqrt(cov_xx), k * torch.sqrt(cov_yy)


def pixel_range(centre: torch.Tensor, extent: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last pixel index whose centre (j + 0.5) lies in [centre - extent, centre + extent]."""
    lo = torch.ceil(centre - extent - 0.5)
    hi = torch.floor(centre + extent - 0.5)
    lo = lo.clamp(0, size - 1).long()
    hi = hi.clamp(-1, size - 1).long()
    return lo, hi


def touching_pixels(xy: torch.Tensor, extent_x: torch.Tensor, extent_y: torch.Tensor, width: int,
                    height: int) -> torch.Tensor:
    """[V] bool: the support box holds at least one pixel centre of the image."""
    with torch.no_grad():
        x_lo = torch.ceil(xy[:, 0] - extent_x - 0.5)
        x_hi = torch.floor(xy[:, 0] + extent_x - 0.5)
        y_lo = torch.ceil(xy[:, 1] - extent_y - 0.5)
        y_hi = torch.floor(xy[:, 1] + extent_y - 0.5)
        ok = (x_hi >= x_lo) & (y_hi >= y_lo) & (x_hi >= 0) & (y_hi >= 0) & (x_lo <= width - 1) & (y_lo <= height - 1)
        return ok & torch.isfinite(x_lo + x_hi + y_lo + y_hi)


def plan_tiles(
    xy: torch.Tensor,
    extent_x: torch.Tensor,
    extent_y: torch.Tensor,
    depth: torch.Tensor,
    width: int,
    height: int,
    tile_size: int = 8,
) -> TilePlan:
    """Bin Gaussians into tiles, each tile's list sorted by ``depth`` (ties by index).

    ``xy`` [V,2] pixel-space centres, ``extent_*`` [V] box half-widths (see
    :func:`support_extent`). Gaussians whose box holds no pixel centre get no pairs.
    """
    dev = xy.device
    with torch.no_grad():
        order = torch.argsort(depth, stable=True)  # pairs are generated in depth order
        xy, extent_x, extent_y = _take(xy, order), _take(extent_x, order), _take(extent_y, order)
        touches = touching_pixels(xy, extent_x, extent_y, width, height)
        x0, x1 = pixel_range(xy[:, 0], extent_x, width)
        y0, y1 = pixel_range(xy[:, 1], extent_y, height)
        tiles_x = -(-width // tile_size)
        tiles_y = -(-height // tile_size)
        tx0, ty0 = x0 // tile_size, y0 // tile_size
        nx = torch.where(touches, x1 // tile_size - tx0 + 1, 0)
        ny = torch.where(touches, y1 // tile_size - ty0 + 1, 0)
        # rows of tiles per Gaussian, then tiles per row
        n_g = xy.shape[0]
        row_g = torch.repeat_interleave(torch.arange(n_g, device=dev), ny)
        row_first = torch.cumsum(ny, 0) - ny
        row_tile0 = (_take(ty0, row_g) + torch.arange(row_g.numel(), device=dev) - _take(row_first, row_g)) \
            * tiles_x + _take(tx0, row_g)
        row_len = _take(nx, row_g)
        pair_row = torch.repeat_interleave(torch.arange(row_g.numel(), device=dev), row_len)
        col_first = torch.cumsum(row_len, 0) - row_len
        tile = _take(row_tile0 - col_first, pair_row) + torch.arange(pair_row.numel(), device=dev)
        n_tiles = tiles_x * tiles_y
        small = torch.int16 if n_tiles < 2**15 else torch.int32 if n_tiles < 2**31 else torch.int64
        perm = torch.sort(tile.to(small), stable=True).indices  # by tile, depth order kept within a tile
        pair_gid = _take(_take(order, row_g), pair_row)  # monotone gathers are cheap
        isect_gid = _take(pair_gid, perm)
        count = torch.bincount(tile, minlength=n_tiles)
        start = torch.cumsum(count, 0) - count
    return TilePlan(width, height, tile_size, tiles_x, tiles_y, isect_gid, start, count)


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` for an integer index tensor along dim 0 (index_select: much faster on CPU)."""
    return t.index_select(0, idx.reshape(-1)).reshape(*idx.shape, *t.shape[1:])


# --- one chunk of tiles x depth-slots -------------------------------------------------------


def _tile_pixel_centres(plan: TilePlan, tiles: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    ar = torch.arange(plan.tile_size, device=tiles.device, dtype=dtype) + 0.5
    xs = (tiles % plan.tiles_x).to(dtype)[:, None] * plan.tile_size + ar  # [A, TS]
    ys = (tiles // plan.tiles_x).to(dtype)[:, None] * plan.tile_size + ar
    return xs, ys


def _inside(plan: TilePlan, tiles: torch.Tensor) -> torch.Tensor:
    """[A, P] bool: pixels of the tiles that lie inside the image (partial tiles at the border)."""
    ts = plan.tile_size
    ar = torch.arange(ts, device=tiles.device)
    px = (tiles % plan.tiles_x)[:, None] * ts + ar
    py = (tiles // plan.tiles_x)[:, None] * ts + ar
    inside = (py[:, :, None] < plan.height) & (px[:, None, :] < plan.width)
    return inside.reshape(tiles.numel(), ts * ts)


def _gather_chunk(plan: TilePlan, tiles: torch.Tensor, k: int, dummy: int) -> torch.Tensor:
    """[A, chunk] Gaussian index of depth slots k*chunk... of each tile (``dummy`` past the end)."""
    c = plan.chunk
    pos = k * c + torch.arange(c, device=tiles.device)
    cnt = _take(plan.tile_count, tiles)
    idx = _take(plan.tile_start, tiles)[:, None] + pos[None, :]
    valid = pos[None, :] < cnt[:, None]
    if plan.n_pairs == 0:
        return torch.full(idx.shape, dummy, dtype=torch.long, device=tiles.device)
    idx = idx.clamp(max=plan.n_pairs - 1)
    return torch.where(valid, _take(plan.isect_gid, idx), dummy)


class _Chunk:
    """Forward quantities of one chunk: A tiles x C depth slots x P pixels.

    ``t_run`` [A, P] is each pixel's transmittance before the chunk, 0 once the pixel has
    terminated (so nothing later passes the T >= 1e-4 test).
    """

    __slots__ = ("gid", "g", "dx", "dy", "alpha", "t_before", "stop", "w", "t_next", "ended")

    def __init__(self, plan: TilePlan, table: torch.Tensor, tiles: torch.Tensor, k: int, t_run: torch.Tensor):
        ts = plan.tile_size
        gid = _gather_chunk(plan, tiles, k, table.shape[0] - 1)
        g = _take(table, gid)  # [A, C, 7]: x, y, A, B, C, log sigma, log threshold
        xs, ys = _tile_pixel_centres(plan, tiles, table.dtype)
        dx = xs[:, None, :] - g[..., 0:1]  # [A, C, TS] (x)
        dy = ys[:, None, :] - g[..., 1:2]  # [A, C, TS] (y)
        # power = log sigma - q/2, assembled from the separable parts
        px = (-0.5 * g[..., 2:3]) * dx * dx  # [A, C, TSx]
        py = (-0.5 * g[..., 4:5]) * dy * dy + g[..., 5:6]  # [A, C, TSy]
        by = -g[..., 3:4] * dy  # [A, C, TSy]
        power = torch.addcmul(py[..., :, None] + px[..., None, :], by[..., :, None], dx[..., None, :])
        power = power.reshape(*gid.shape, ts * ts)  # [A, C, P], pixel = y * TS + x
        power.masked_fill_(power < g[..., 6:7], -math.inf)  # outside the support: alpha = 0
        alpha = power.exp_().clamp_max_(plan.alpha_max)
        t_after = torch.cumprod(1.0 - alpha, 1).mul_(t_run[:, None, :])
        stop = t_after < T_MIN  # a suffix of the slots: T only decreases
        t_before = torch.cat([t_run[:, None, :], t_after[:, :-1]], 1)
        c = gid.shape[1]
        n_ok = c - stop.sum(1)
        t_stop = t_before.gather(1, n_ok.clamp(max=c - 1)[:, None, :])[:, 0]
        self.gid, self.g, self.dx, self.dy = gid, g, dx, dy
        self.alpha, self.t_before, self.stop = alpha, t_before, stop
        self.w = (alpha * t_before).masked_fill_(stop, 0.0)
        self.t_next = torch.where(n_ok == c, t_after[:, -1], t_stop)  # T after the last included slot
        self.ended = stop[:, -1]


def _tile_batches(plan: TilePlan) -> list[torch.Tensor]:
    """Tiles with work, in batches whose chunk evaluation stays under ``max_elems``."""
    busy = torch.nonzero(plan.tile_count > 0).flatten()
    per = max(1, plan.max_elems // (plan.chunk * plan.tile_size**2))
    return list(torch.split(busy, per))


def _rounds(plan: TilePlan, table: torch.Tensor, t_final: torch.Tensor):
    """Yield (tiles, k, t_run, chunk) over all chunk rounds; writes final transmittance into ``t_final``."""
    for tiles in _tile_batches(plan):
        t_run = _inside(plan, tiles).to(table.dtype)
        t_fin = torch.ones_like(t_run)
        rows = torch.arange(tiles.numel(), device=tiles.device)
        k = 0
        while rows.numel():
            sub = _take(tiles, rows)
            ch = _Chunk(plan, table, sub, k, t_run)
            yield sub, k, t_run, ch
            t_fin.index_copy_(0, rows, torch.where(t_run > 0, ch.t_next, _take(t_fin, rows)))
            t_run = torch.where(ch.ended, 0.0, ch.t_next)
            k += 1
            alive = (_take(plan.tile_count, sub) > k * plan.chunk) & (t_run > 0).any(1)
            if not bool(alive.all()):
                rows, t_run = rows[alive], t_run[alive]
        t_final.index_copy_(0, tiles, t_fin)


def _make_table(xy, conic, opacity) -> torch.Tensor:
    """[V+1, 7] per-Gaussian rows (x, y, A, B, C, log sigma, log inclusion threshold) + a dummy row."""
    log_op = torch.log(opacity)
    thr = torch.maximum(torch.full_like(log_op, LOG_ALPHA_MIN), log_op - 0.5 * SIGMA_CUT**2)
    table = torch.cat([xy, conic, log_op[:, None], thr[:, None]], 1)
    dummy = torch.zeros(1, 7, dtype=table.dtype, device=table.device)
    dummy[0, 5] = -math.inf
    dummy[0, 6] = 0.0
    return torch.cat([table, dummy], 0)


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xy, conic, opacity, feats, plan: TilePlan):
        n_tiles, p = plan.n_tiles, plan.tile_size**2
        dev, dt = xy.device, xy.dtype
        nf = feats.shape[1]
        table = _make_table(xy, conic, opacity)
        feats_d = torch.cat([feats, feats.new_zeros(1, nf)], 0)
        out = torch.zeros(n_tiles, nf, p, dtype=dt, device=dev)
        t_final = torch.ones(n_tiles, p, dtype=dt, device=dev)
        v = xy.shape[0]
        if plan.stats:
            st = {
                "max_weight": torch.zeros(v + 1, dtype=dt, device=dev),
                "sum_weight": torch.zeros(v + 1, dtype=dt, device=dev),
                "sum_opacity_t": torch.zeros(v + 1, dtype=dt, device=dev),
                "hits": torch.zeros(v + 1, dtype=torch.long, device=dev),
            }
        want_grad = any(ctx.needs_input_grad[:4])
        cache_left = plan.cache_bytes if want_grad else 0
        saved = []
        for tiles, k, t_run, ch in _rounds(plan, table, t_final):
            fg = _take(feats_d, ch.gid)  # [A, C, F]
            out.index_add_(0, tiles, torch.bmm(fg.transpose(1, 2), ch.w))
            if plan.stats:
                gid = ch.gid.reshape(-1)
                hit = (ch.alpha > 0).logical_and_(~ch.stop)
                st["max_weight"].scatter_reduce_(0, gid, ch.w.amax(2).reshape(-1), "amax")
                st["sum_weight"].index_add_(0, gid, ch.w.sum(2).reshape(-1))
                t_hit = (ch.t_before * hit).sum(2)
                st["sum_opacity_t"].index_add_(0, gid, (t_hit * torch.exp(ch.g[..., 5])).reshape(-1))
                st["hits"].index_add_(0, gid, hit.sum(2).reshape(-1))
            if want_grad:
                size = ch.alpha.numel() * (3 * ch.alpha.element_size() + 1)  # alpha, T, w, stop
                keep = size <= cache_left
                cache_left -= size if keep else 0
                saved.append((tiles, k, t_run, ch if keep else None))
        if plan.stats:
            plan.stats_out.update({k_: s[:v] for k_, s in st.items()})
        ctx.plan = plan
        ctx.saved = saved
        ctx.save_for_backward(xy, conic, opacity, feats, t_final)
        return out, t_final

    @staticmethod
    def backward(ctx, g_out, g_t):
        xy, conic, opacity, feats, t_final = ctx.saved_tensors
        plan: TilePlan = ctx.plan
        nf = feats.shape[1]
        table = _make_table(xy, conic, opacity)
        feats_d = torch.cat([feats, feats.new_zeros(1, nf)], 0)
        v = xy.shape[0]
        if g_out is None:
            g_out = torch.zeros(plan.n_tiles, nf, plan.tile_size**2, dtype=xy.dtype, device=xy.device)
        if g_t is None:
            g_t = torch.zeros_like(t_final)
        # r_all(p): sum over later included Gaussians of w * (f . g) plus T_final * dL/dT_final
        r_all = g_t * t_final
        gacc = torch.zeros(v + 1, 6, dtype=xy.dtype, device=xy.device)  # x, y, A, B, C, log sigma
        gfeat = torch.zeros(v + 1, nf, dtype=xy.dtype, device=xy.device)
        ts = plan.tile_size
        for tiles, k, t_run, ch in reversed(ctx.saved):  # not popped: backward may run again (retain_graph)
            if ch is None:
                ch = _Chunk(plan, table, tiles, k, t_run)
            gf = _take(g_out, tiles)  # [A, F, P]
            s = torch.bmm(_take(feats_d, ch.gid), gf)  # [A, C, P]: f_i . dL/dout
            incl = torch.cumsum(ch.w * s, 1)
            r_before = _take(r_all, tiles) + incl[:, -1, :]
            r_all.index_copy_(0, tiles, r_before)
            # dL/dalpha_i = T_i s_i - R_i / (1 - alpha_i), R_i = everything composited after i
            r_i = incl.neg_().add_(r_before[:, None, :]).div_(1.0 - ch.alpha)
            d_alpha = s.mul_(ch.t_before).sub_(r_i)
            # alpha = min(alpha_max, exp(power)) -> d power = d alpha * alpha where unclamped and included
            g_pow = d_alpha.mul_(ch.alpha).masked_fill_(ch.stop | (ch.alpha >= plan.alpha_max), 0.0)
            gid = ch.gid.reshape(-1)
            gfeat.index_add_(0, gid, torch.bmm(ch.w, gf.transpose(1, 2)).reshape(-1, nf))
            # one pass over g_pow: m[..., y, :] = sum_x g_pow * (1, dx, dx^2)
            dx, dy = ch.dx, ch.dy
            a, c = ch.gid.shape
            basis = torch.stack([torch.ones_like(dx), dx, dx * dx], -1)  # [A, C, x, 3]
            m = torch.matmul(g_pow.reshape(a * c, ts, ts), basis.reshape(a * c, ts, 3)).reshape(a, c, ts, 3)
            s_g, s_gx, s_gxx = m.sum(2).unbind(-1)
            s_gy, s_gxy = (m[..., :2] * dy[..., None]).sum(2).unbind(-1)
            s_gyy = (m[..., 0] * dy * dy).sum(2)
            ga, gb, gc = ch.g[..., 2], ch.g[..., 3], ch.g[..., 4]
            # power = log sigma - (A dx^2 + 2 B dx dy + C dy^2)/2, dx = px - x
            parts = torch.stack([
                ga * s_gx + gb * s_gy,  # d/dx
                gb * s_gx + gc * s_gy,  # d/dy
                -0.5 * s_gxx,  # d/dA
                -s_gxy,  # d/dB
                -0.5 * s_gyy,  # d/dC
                s_g,  # d/d log sigma
            ], -1)
            gacc.index_add_(0, gid, parts.reshape(-1, 6))
        gacc = gacc[:v]
        g_xy = gacc[:, 0:2] if ctx.needs_input_grad[0] else None
        g_conic = gacc[:, 2:5] if ctx.needs_input_grad[1] else None
        g_op = gacc[:, 5] / opacity if ctx.needs_input_grad[2] else None
        g_feats = gfeat[:v] if ctx.needs_input_grad[3] else None
        return g_xy, g_conic, g_op, g_feats, None


def rasterize(xy, conic, opacity, feats, plan: TilePlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite projected Gaussians. Returns (features [H, W, F], final transmittance [H, W]).

    ``xy`` [V,2], ``conic`` [V,3] = (A, B, C) of the inverse 2D covariance, ``opacity`` [V]
    (activated, > 0), ``feats`` [V,F]. Differentiable w.r.t. all four. When ``plan.stats`` is
    set, ``plan.stats_out`` receives per-Gaussian [V] statistics (see ``STAT_NAMES``).
    """
    out, t_final = _Rasterize.apply(xy, conic, opacity, feats, plan)  # [tiles, F, P], [tiles, P]
    return untile(plan, out.transpose(1, 2)), untile(plan, t_final[..., None])[..., 0]


def untile(plan: TilePlan, x: torch.Tensor) -> torch.Tensor:
    """[n_tiles, TS*TS, F] tile layout -> [H, W, F] image."""
    ts, f = plan.tile_size, x.shape[-1]
    img = x.reshape(plan.tiles_y, plan.tiles_x, ts, ts, f).permute(0, 2, 1, 3, 4)
    return img.reshape(plan.tiles_y * ts, plan.tiles_x * ts, f)[: plan.height, : plan.width]
