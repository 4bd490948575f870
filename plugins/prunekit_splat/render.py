"""Gaussian-splat rendering and per-Gaussian blending statistics.

``render(scene, camera)`` draws a :class:`GaussianScene` with gsplat's conventions (3DGS,
Kerbl et al. 2023, EWA splatting after Zwicker et al. 2001):

- camera space p = R x + t (OpenCV axes); Gaussians with z <= 0.01 (near plane) or
  z >= 1e10 are culled;
- 3D covariance Sigma = R_q S S^T R_q^T (q normalised wxyz, S = diag(exp(log scale)));
- 2D covariance Sigma' = J W Sigma W^T J^T + 0.3 I (0.3 px low-pass, gsplat's ``eps2d``) with
  J the Jacobian of the pinhole projection at the centre, whose x/z, y/z are clamped to
  1.3 x the half field of view as in 3DGS/gsplat; centre u = (fx x/z + cx, fy y/z + cy);
- alpha_i(p) = min(0.99, sigma_i exp(-1/2 d^T Sigma'^-1 d)), d = pixel centre - u, pixel
  centres at (j + 0.5, i + 0.5); alpha < 1/255 skipped, evaluation limited to the 3-sigma
  ellipse, front-to-back compositing in z order, a pixel stops before the first Gaussian
  that would bring its transmittance below 1e-4;
- colour = max(0, SH(dir) + 0.5) with dir = normalise(x - camera centre), real SH degree
  0-3 with the standard constants.

Two backends: ``"torch"`` (this package's tiled pure-PyTorch rasteriser, any device, hand-
written backward; the reference) and ``"gsplat"`` (``gsplat.rendering.rasterization``, CUDA;
gsplat clamps alpha at 0.999 instead of 0.99 and cuts tiles, not the 3-sigma ellipse, so its
images differ slightly). ``"auto"`` picks gsplat when CUDA and gsplat are available.

Per-Gaussian statistics (``stats=True``), with w_i(p) = alpha_i(p) T_i(p) over included pairs:

- ``max_weight``     max_p w_i(p)                      (RadSplat, Niemeyer et al. 2024)
- ``sum_weight``     sum_p w_i(p)                      (Mini-Splatting / "alpha-weighted" hits)
- ``sum_opacity_t``  sum_p sigma_i T_i(p)              (LightGaussian's reference accumulation)
- ``hits``           number of pixels where i is included (alpha >= 1/255, not terminated)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ._raster import (ALPHA_MIN, STAT_NAMES, BackwardThreadsEnd, BackwardThreadsStart, plan_tiles, rasterize,
                      restore_backward_threads, support_extent, torch_threads, touching_pixels)
from .cameras import Camera
from .scene import GaussianScene
from .geometry import quat_to_rotmat

__all__ = ["RenderResult", "Projection", "render", "project", "sh_colors", "accumulate_stats", "STAT_NAMES"]

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)
BACKENDS = ("auto", "torch", "gsplat")
# Intra-op threads of the torch backend (forward and backward). One thread by default: on the
# shared 2-core machines this project targets, two threads measured 5-20x slower than one
# while other processes competed for the cores, and only ~1.6x faster on an idle machine
# (scripts/bench/bench_render.py). None keeps torch's own setting.
TORCH_THREADS: int | None = 1


@dataclass
class RenderResult:
    image: torch.Tensor  # [H, W, 3]
    alpha: torch.Tensor  # [H, W] accumulated opacity 1 - T_final
    depth: torch.Tensor | None = None  # [H, W] accumulated z: sum_i w_i z_i (divide by alpha for expected depth)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [N]
    visible: torch.Tensor | None = None  # [N] bool: survived culling and touches at least one pixel box
    backend: str = "torch"


@dataclass
class Projection:
    xy: torch.Tensor  # [N, 2] pixel-space centres
    conic: torch.Tensor  # [N, 3] (A, B, C) of the inverse 2D covariance
    cov2d: torch.Tensor  # [N, 3] (xx, xy, yy) of the dilated 2D covariance
    depth: torch.Tensor  # [N] camera-space z
    in_front: torch.Tensor  # [N] bool: near < z < far and finite


def _camera_tensors(camera: Camera, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    viewmat = torch.as_tensor(camera.viewmat).to(device=like.device, dtype=like.dtype)
    K = torch.as_tensor(camera.K).to(device=like.device, dtype=like.dtype)
    if viewmat.shape != (4, 4) or K.shape != (3, 3):
        raise ValueError(f"camera {camera.name!r}: viewmat must be 4x4 and K 3x3, got {tuple(viewmat.shape)}, "
                         f"{tuple(K.shape)}")
    return viewmat, K


def project(scene: GaussianScene, camera: Camera, *, eps2d: float = 0.3, near_plane: float = 0.01,
            far_plane: float = 1e10) -> Projection:
    """EWA projection of all Gaussians (differentiable; culled ones carry harmless values)."""
    viewmat, K = _camera_tensors(camera, scene.means)
    R, t = viewmat[:3, :3], viewmat[:3, 3]
    pc = scene.means @ R.T + t
    x, y, z = pc.unbind(-1)
    in_front = (z > near_plane) & (z < far_plane) & torch.isfinite(pc).all(-1)
    z = torch.where(in_front, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    w, h = camera.width, camera.height
    tan_x, tan_y = 0.5 * w / fx, 0.5 * h / fy
    tx = z * torch.clamp(x / z, -(cx / fx + 0.3 * tan_x), (w - cx) / fx + 0.3 * tan_x)
    ty = z * torch.clamp(y / z, -(cy / fy + 0.3 * tan_y), (h - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)
    M = quat_to_rotmat(scene.quats) * torch.exp(scene.scales)[:, None, :]  # R_q S
    JM = J @ (R @ M)
    cov = JM @ JM.transpose(1, 2)
    a, b, c = cov[:, 0, 0] + eps2d, cov[:, 0, 1], cov[:, 1, 1] + eps2d
    det = a * c - b * b
    in_front = in_front & (det > 0) & torch.isfinite(det)
    det = torch.where(in_front, det, torch.ones_like(det))
    conic = torch.stack([c / det, -b / det, a / det], -1)
    xy = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    return Projection(xy, conic, torch.stack([a, b, c], -1), z, in_front)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """[N, 3] unit directions -> [N, (degree+1)^2] real SH basis (3DGS/gsplat sign convention)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def sh_colors(sh0: torch.Tensor, shN: torch.Tensor, dirs: torch.Tensor | None, degree: int) -> torch.Tensor:
    """RGB = max(0, sum_k Y_k(dir) c_k + 0.5). ``sh0`` [N,3], ``shN`` [N,K,3], ``dirs`` [N,3] (any length)."""
    if degree == 0:
        return torch.clamp_min(SH_C0 * sh0 + 0.5, 0.0)
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(d, degree)
    n_rest = (degree + 1) ** 2 - 1
    rgb = basis[:, :1] * sh0 + torch.einsum("nk,nkc->nc", basis[:, 1:], shN[:, :n_rest])
    return torch.clamp_min(rgb + 0.5, 0.0)


def _check_degree(scene: GaussianScene, sh_degree: int | None) -> int:
    if sh_degree is None:
        return scene.sh_degree
    if not 0 <= sh_degree <= scene.sh_degree:
        raise ValueError(f"sh_degree={sh_degree} but the scene stores SH up to degree {scene.sh_degree}")
    return int(sh_degree)


def _stat_names(stats: bool | Iterable[str]) -> tuple[str, ...]:
    if stats is True:
        return STAT_NAMES
    if not stats:
        return ()
    names = tuple(stats)
    bad = [n for n in names if n not in STAT_NAMES]
    if bad:
        raise ValueError(f"unknown statistic(s) {bad}; choose from {list(STAT_NAMES)}")
    return names


def _gsplat_usable() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat.rendering  # noqa: F401
    except Exception:
        return False
    return True


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose from {list(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if _gsplat_usable() else "torch"
    return backend


def render(
    scene: GaussianScene,
    camera: Camera,
    *,
    sh_degree: int | None = None,
    background: torch.Tensor | Sequence[float] | None = None,
    stats: bool | Iterable[str] = False,
    depth: bool = False,
    backend: str = "auto",
    tile_size: int = 8,
    alpha_max: float = 0.99,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    threads: int | None | str = "default",
) -> RenderResult:
    """Render ``scene`` from ``camera``; differentiable w.r.t. all scene tensors (image, alpha, depth).

    ``background`` [3] is added as T_final * background. ``stats`` (True or a subset of
    ``STAT_NAMES``) fills ``result.stats`` with detached per-Gaussian [N] tensors. ``depth``
    adds the accumulated z map. ``tile_size``, ``alpha_max`` and ``threads`` (torch intra-op
    threads for this render and its backward; default ``TORCH_THREADS``, None = torch's own
    setting) apply to the torch backend.
    """
    names = _stat_names(stats)
    degree = _check_degree(scene, sh_degree)
    chosen = _resolve_backend(backend)
    if chosen == "gsplat":
        from ._gsplat import render_gsplat

        return render_gsplat(scene, camera, degree=degree, background=background, names=names, depth=depth,
                             eps2d=eps2d, near_plane=near_plane, far_plane=far_plane)
    n_threads = TORCH_THREADS if threads == "default" else threads
    restore_backward_threads()  # in case an earlier backward pass stopped half-way
    trainable = [k for k, t in scene.tensors().items() if t.requires_grad] if torch.is_grad_enabled() else []
    gate = n_threads is not None and bool(trainable)
    if gate:  # the whole backward of this render (raster and projection) runs with n_threads too
        scene = scene.replace(**dict(zip(trainable, BackwardThreadsEnd.apply(*[getattr(scene, k) for k in trainable]))))
    with torch_threads(n_threads):
        result = _render_torch(scene, camera, degree, background, names, depth, tile_size, alpha_max, eps2d,
                               near_plane, far_plane)
    if gate:
        outs = [result.image, result.alpha] + ([result.depth] if depth else [])
        gated = BackwardThreadsStart.apply(n_threads, *outs)
        result.image, result.alpha = gated[0], gated[1]
        if depth:
            result.depth = gated[2]
    return result


def _render_torch(scene, camera, degree, background, names, depth, tile_size, alpha_max, eps2d, near_plane,
                  far_plane) -> RenderResult:
    n = len(scene)
    dev, dt = scene.means.device, scene.means.dtype
    proj = project(scene, camera, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane)
    opacity = torch.sigmoid(scene.opacities)
    with torch.no_grad():
        ex, ey = support_extent(proj.cov2d[:, 0], proj.cov2d[:, 2], opacity)
        cand = proj.in_front & (opacity >= ALPHA_MIN) & torch.isfinite(proj.xy).all(-1)
        cand &= touching_pixels(proj.xy, ex, ey, camera.width, camera.height)
        idx = torch.nonzero(cand).flatten()
        plan = plan_tiles(proj.xy[idx], ex[idx], ey[idx], proj.depth[idx], camera.width, camera.height, tile_size)
    plan.alpha_max = alpha_max
    plan.stats = bool(names)
    if degree > 0:
        viewmat, _ = _camera_tensors(camera, scene.means)
        centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
        colours = sh_colors(scene.sh0[idx], scene.shN[idx], scene.means[idx] - centre, degree)
    else:
        colours = sh_colors(scene.sh0[idx], scene.shN[idx], None, 0)
    feats = torch.cat([colours, proj.depth[idx, None]], 1) if depth else colours
    out, t_final = rasterize(proj.xy[idx], proj.conic[idx], opacity[idx], feats, plan)
    image = out[..., :3]
    if background is not None:
        bg = torch.as_tensor(background, dtype=dt, device=dev).reshape(3)
        image = image + t_final[..., None] * bg
    visible = torch.zeros(n, dtype=torch.bool, device=dev)
    visible[idx] = True
    result = RenderResult(image=image, alpha=1.0 - t_final, depth=out[..., 3] if depth else None,
                          visible=visible, backend="torch")
    for name in names:
        full = torch.zeros(n, dtype=plan.stats_out[name].dtype, device=dev)
        full[idx] = plan.stats_out[name].detach()
        result.stats[name] = full
    return result


def accumulate_stats(
    scene: GaussianScene,
    cameras: Iterable[Camera],
    names: Iterable[str] = STAT_NAMES,
    progress: bool = False,
    **render_kwargs,
) -> dict[str, torch.Tensor]:
    """Per-Gaussian statistics over many views: max over views for ``max_weight``, sums otherwise.

    ``render_kwargs`` go to :func:`render` (``backend``, ``tile_size``, ``alpha_max``...).
    """
    names = _stat_names(tuple(names))
    cams = list(cameras)
    n = len(scene)
    home = scene.means.device
    backend = _resolve_backend(render_kwargs.pop("backend", "auto"))
    if backend == "gsplat" and home.type != "cuda":  # move once, not once per view
        scene = GaussianScene(**{k: v.to("cuda") for k, v in scene.tensors().items()})
    acc: dict[str, torch.Tensor] = {}
    it = cams
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(cams, desc="blending statistics", unit="view")
    with torch.no_grad():
        for cam in it:
            res = render(scene, cam, stats=names, backend=backend, **render_kwargs)
            for name in names:
                s = res.stats[name]
                if name not in acc:
                    acc[name] = s.clone()
                elif name == "max_weight":
                    acc[name] = torch.maximum(acc[name], s)
                else:
                    acc[name] += s
    for name in names:
        if name not in acc:
            acc[name] = torch.zeros(n, dtype=torch.long if name == "hits" else scene.means.dtype)
    return {k: v.to(home) for k, v in acc.items()}

