"""Tests of the pure-PyTorch Gaussian-splat renderer against hand computation and a dense,
sequential per-pixel reference (the 3DGS loop written out directly)."""

import math

import pytest
import torch

from prunekit_splat import _raster
from prunekit_splat._gsplat import pair_stats
from prunekit_splat.cameras import Camera
from prunekit_splat.render import SH_C0, SH_C1, accumulate_stats, project, render, sh_colors
from prunekit_splat.scene import GaussianScene


def logit(p):
    return math.log(p / (1 - p))


def make_scene(means, scales, opacities, rgb=None, quats=None, shN=None, dtype=torch.float64):
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = means.shape[0]
    scales = torch.as_tensor(scales, dtype=dtype)
    scales = (scales.expand(n) if scales.dim() == 0 else scales.reshape(n, -1))
    scales = scales.reshape(n, -1).expand(n, 3)
    log_s = torch.log(scales).clone()
    ops = torch.tensor([logit(o) for o in opacities], dtype=dtype)
    if rgb is None:
        rgb = torch.full((n, 3), 0.8, dtype=dtype)
    sh0 = (torch.as_tensor(rgb, dtype=dtype).reshape(n, 3) - 0.5) / SH_C0
    q = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=dtype) if quats is None else torch.as_tensor(quats, dtype=dtype)
    if shN is None:
        shN = torch.zeros(n, 0, 3, dtype=dtype)
    return GaussianScene(means, q, log_s, ops, sh0, torch.as_tensor(shN, dtype=dtype))


def camera(w=16, h=16, f=20.0, cx=None, cy=None, viewmat=None, dtype=torch.float64):
    cx = w / 2 + 0.5 if cx is None else cx  # centre of pixel w/2
    cy = h / 2 + 0.5 if cy is None else cy
    K = torch.tensor([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=dtype)
    vm = torch.eye(4, dtype=dtype) if viewmat is None else viewmat
    return Camera(viewmat=vm, K=K, width=w, height=h)


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, -1.0, 0.0), dtype=torch.float64):
    """World->camera 4x4, OpenCV axes (z forward, y down)."""
    eye, target, up = (torch.tensor(v, dtype=dtype) for v in (eye, target, up))
    z = target - eye
    z = z / z.norm()
    x = torch.linalg.cross(z, up)
    if x.norm() < 1e-8:
        x = torch.linalg.cross(z, torch.tensor([1.0, 0, 0], dtype=dtype))
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    vm = torch.eye(4, dtype=dtype)
    vm[:3, :3] = R
    vm[:3, 3] = -R @ eye
    return vm


def random_scene(n, seed, dtype=torch.float64, spread=0.6, depth=3.0, opacity_shift=0.0, sh_k=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * spread
    means[:, 2] += depth
    return GaussianScene(
        means=means,
        quats=torch.randn(n, 4, generator=g, dtype=dtype),
        scales=torch.randn(n, 3, generator=g, dtype=dtype) * 0.3 - 2.3,
        opacities=torch.randn(n, generator=g, dtype=dtype) + opacity_shift,
        sh0=torch.randn(n, 3, generator=g, dtype=dtype) * 0.5,
        shN=torch.randn(n, sh_k, 3, generator=g, dtype=dtype) * 0.2,
    )


def dense_reference(xy, conic, opacity, feats, depth, w, h, alpha_max=0.99):
    """Per-pixel sequential compositing (3DGS loop), vectorised over pixels only."""
    jj, ii = torch.meshgrid(torch.arange(w, dtype=xy.dtype) + 0.5, torch.arange(h, dtype=xy.dtype) + 0.5,
                            indexing="xy")
    px, py = jj.reshape(-1), ii.reshape(-1)
    n_pix = px.numel()
    T = torch.ones(n_pix, dtype=xy.dtype)
    done = torch.zeros(n_pix, dtype=torch.bool)
    out = torch.zeros(n_pix, feats.shape[1], dtype=xy.dtype)
    n = xy.shape[0]
    stats = {"max_weight": torch.zeros(n, dtype=xy.dtype), "sum_weight": torch.zeros(n, dtype=xy.dtype),
             "sum_opacity_t": torch.zeros(n, dtype=xy.dtype), "hits": torch.zeros(n, dtype=torch.long)}
    pairs = []
    for i in torch.argsort(depth, stable=True).tolist():
        dx, dy = px - xy[i, 0], py - xy[i, 1]
        q = conic[i, 0] * dx * dx + 2 * conic[i, 1] * dx * dy + conic[i, 2] * dy * dy
        a = torch.clamp_max(opacity[i] * torch.exp(-0.5 * q), alpha_max)
        valid = (a >= 1 / 255) & (q <= 9) & ~done
        next_t = T * (1 - a)
        stop = valid & (next_t < 1e-4)
        done = done | stop
        inc = valid & ~stop
        wgt = torch.where(inc, a * T, torch.zeros_like(a))
        out = out + wgt[:, None] * feats[i]
        with torch.no_grad():
            stats["max_weight"][i] = wgt.max()
            stats["sum_weight"][i] = wgt.sum()
            stats["sum_opacity_t"][i] = (opacity[i] * T * inc).sum()
            stats["hits"][i] = inc.sum()
            k = torch.nonzero(inc).flatten()
            pairs.append((torch.full_like(k, i), k, a[k].detach()))
        T = torch.where(inc, next_t, T)
    return out.reshape(h, w, -1), T.reshape(h, w), stats, pairs


def dense_render(scene, cam, background=None, alpha_max=0.99):
    """Whole-image reference: project() + SH colours + dense_reference (autograd throughout)."""
    proj = project(scene, cam)
    op = torch.sigmoid(scene.opacities)
    keep = proj.in_front & (op >= 1 / 255)
    idx = torch.nonzero(keep).flatten()
    centre = cam.position.to(scene.means.dtype)
    cols = sh_colors(scene.sh0[idx], scene.shN[idx], scene.means[idx] - centre, scene.sh_degree)
    out, T, stats, _ = dense_reference(proj.xy[idx], proj.conic[idx], op[idx], cols, proj.depth[idx],
                                       cam.width, cam.height, alpha_max)
    if background is not None:
        out = out + T[..., None] * torch.as_tensor(background, dtype=out.dtype)
    full = {}
    for k, v in stats.items():
        f = torch.zeros(len(scene), dtype=v.dtype)
        f[idx] = v
        full[k] = f
    return out, 1 - T, full


# --- hand-computed cases -----------------------------------------------------------------


def test_single_isotropic_gaussian_matches_formula():
    s, z, f, op = 0.1, 2.0, 20.0, 0.7
    scene = make_scene([0, 0, z], s, [op], rgb=[[0.9, 0.4, 0.2]])
    cam = camera(16, 16, f)
    res = render(scene, cam, backend="torch", background=[0.1, 0.2, 0.3])
    var = (f * s / z) ** 2 + 0.3  # EWA head-on plus the 0.3 px dilation
    rgb = torch.tensor([0.9, 0.4, 0.2], dtype=torch.float64)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    a0 = op
    assert res.alpha[8, 8].item() == pytest.approx(a0, rel=1e-9)
    torch.testing.assert_close(res.image[8, 8], a0 * rgb + (1 - a0) * bg)
    # pixel (row 9, col 11): offset dx = 3, dy = 1
    a1 = op * math.exp(-0.5 * (9 + 1) / var)
    assert res.alpha[9, 11].item() == pytest.approx(a1, rel=1e-9)
    torch.testing.assert_close(res.image[9, 11], a1 * rgb + (1 - a1) * bg)
    # beyond the 3-sigma ellipse nothing is drawn, only the background
    far = math.ceil(3 * math.sqrt(var)) + 1
    assert res.alpha[8, 8 + far].item() == 0.0
    torch.testing.assert_close(res.image[8, 8 + far], bg)


def test_two_gaussians_blend_front_to_back_and_stats():
    s, f = 0.1, 20.0
    o1, o2 = 0.4, 0.7
    c1, c2 = [0.9, 0.1, 0.1], [0.1, 0.1, 0.9]
    # the back one (z=4, scale 2s) has the same screen footprint as the front one (z=2, scale s)
    scene = make_scene([[0, 0, 4.0], [0, 0, 2.0]], [[2 * s], [s]], [o2, o1], rgb=[c2, c1])
    cam = camera(24, 24, f)
    res = render(scene, cam, backend="torch", stats=True)
    px = torch.tensor(c1, dtype=torch.float64) * o1 + (1 - o1) * o2 * torch.tensor(c2, dtype=torch.float64)
    torch.testing.assert_close(res.image[12, 12], px)
    assert res.alpha[12, 12].item() == pytest.approx(1 - (1 - o1) * (1 - o2), rel=1e-9)
    # hand computation of the statistics over all pixels
    var = (f * s / 2.0) ** 2 + 0.3
    jj, ii = torch.meshgrid(torch.arange(24.0, dtype=torch.float64), torch.arange(24.0, dtype=torch.float64),
                            indexing="xy")
    q = ((jj - 12) ** 2 + (ii - 12) ** 2) / var
    g = torch.exp(-0.5 * q)
    a1 = torch.where((o1 * g >= 1 / 255) & (q <= 9), o1 * g, 0.0)
    a2 = torch.where((o2 * g >= 1 / 255) & (q <= 9), o2 * g, 0.0)
    w1, w2 = a1, a2 * (1 - a1)
    st = res.stats
    assert st["max_weight"][1].item() == pytest.approx(o1, rel=1e-9)
    assert st["max_weight"][0].item() == pytest.approx(o2 * (1 - o1), rel=1e-9)
    assert st["sum_weight"][1].item() == pytest.approx(w1.sum().item(), rel=1e-9)
    assert st["sum_weight"][0].item() == pytest.approx(w2.sum().item(), rel=1e-9)
    assert st["sum_opacity_t"][0].item() == pytest.approx((o2 * (1 - a1) * (a2 > 0)).sum().item(), rel=1e-9)
    assert st["hits"].tolist() == [int((a2 > 0).sum()), int((a1 > 0).sum())]


def test_alpha_is_clamped_at_0_99():
    scene = make_scene([0, 0, 2.0], 0.1, [0.9999], rgb=[[1.0, 1.0, 1.0]])
    res = render(scene, camera(), backend="torch")
    assert res.alpha[8, 8].item() == pytest.approx(0.99, abs=1e-12)
    assert res.image[8, 8, 0].item() == pytest.approx(0.99, abs=1e-12)
    res2 = render(scene, camera(), backend="torch", alpha_max=0.999)
    assert res2.alpha[8, 8].item() == pytest.approx(0.999, abs=1e-12)


def test_transmittance_stops_below_1e_4():
    # centre pixel: T = 1 -> 0.01 -> 5e-4 -> (2.5e-5 < 1e-4: the third layer ends the pixel, unused)
    scene = make_scene([[0, 0, 2.0], [0, 0, 3.0], [0, 0, 4.0], [0, 0, 5.0]], [[0.1], [0.15], [0.2], [0.25]],
                       [0.9999, 0.95, 0.95, 0.9], rgb=[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    res = render(scene, camera(), backend="torch", stats=True)
    torch.testing.assert_close(res.image[8, 8], torch.tensor([0.99, 0.01 * 0.95, 0.0], dtype=torch.float64))
    assert res.alpha[8, 8].item() == pytest.approx(1 - 0.01 * 0.05, rel=1e-12)
    # away from the centre alphas are lower, so the third layer shows there
    assert res.image[8, 10, 2].item() > 0.0
    assert (res.stats["hits"] > 0).all()


def test_culling_behind_camera_and_near_plane():
    scene = make_scene([[0, 0, -2.0], [0, 0, 0.005], [0, 0, 2.0]], 0.1, [0.9, 0.9, 0.5])
    res = render(scene, camera(), backend="torch", stats=True)
    assert res.visible.tolist() == [False, False, True]
    assert res.stats["hits"][:2].tolist() == [0, 0]
    only_front = render(scene.subset(torch.tensor([2])), camera(), backend="torch")
    torch.testing.assert_close(res.image, only_front.image)
    empty = render(scene.subset(torch.tensor([0, 1])), camera(), backend="torch")
    assert empty.image.abs().max().item() == 0.0 and empty.alpha.max().item() == 0.0


def test_sh_degree_1_colour_follows_view_direction():
    sh1 = torch.tensor([[[0.1, -0.2, 0.3], [0.4, 0.1, -0.1], [-0.3, 0.2, 0.2]]], dtype=torch.float64)
    base = [0.5, 0.5, 0.5]
    scene = make_scene([0, 0, 0], 0.1, [0.5], rgb=[base], shN=sh1)
    c = torch.tensor(base, dtype=torch.float64)
    # camera on -z looking at the origin: dir = (0, 0, 1) -> + C1 * coefficient 1 (z)
    cam_z = camera(16, 16, viewmat=look_at((0, 0, -3.0)))
    # camera on -x looking at the origin: dir = (1, 0, 0) -> - C1 * coefficient 2 (x)
    cam_x = camera(16, 16, viewmat=look_at((-3.0, 0, 0)))
    for cam, expect in ((cam_z, c + SH_C1 * sh1[0, 1]), (cam_x, c - SH_C1 * sh1[0, 2])):
        res = render(scene, cam, backend="torch")
        colour = res.image[8, 8] / res.alpha[8, 8]
        torch.testing.assert_close(colour, expect)
    res0 = render(scene, cam_x, backend="torch", sh_degree=0)
    torch.testing.assert_close(res0.image[8, 8] / res0.alpha[8, 8], c)
    with pytest.raises(ValueError):
        render(scene, cam_x, backend="torch", sh_degree=2)


def test_hidden_gaussian_gets_lower_max_weight():
    scene = make_scene([[0, 0, 2.0], [0, 0, 4.0], [1.0, 0, 4.0]], [[0.3], [0.1], [0.1]], [0.9999, 0.9, 0.9])
    st = render(scene, camera(32, 32), backend="torch", stats=True).stats
    for name in ("max_weight", "sum_weight", "sum_opacity_t", "hits"):
        assert st[name].shape == (3,)
    assert st["max_weight"][1] < 0.05 < st["max_weight"][2]
    assert st["max_weight"][1] < st["max_weight"][2] / 10
    assert st["hits"][1] < st["hits"][2]


# --- against the dense sequential reference ----------------------------------------------


@pytest.mark.parametrize("seed,chunk,tile", [(0, 32, 16), (1, 3, 8), (2, 5, 4)])
def test_tiled_rasteriser_matches_dense_reference(seed, chunk, tile):
    scene = random_scene(60, seed, opacity_shift=1.5, sh_k=3)
    cam = camera(30, 22, 25.0, cx=14.0, cy=12.0, viewmat=look_at((0.3, -0.2, 0.0), (0, 0, 3.0)))
    proj = project(scene, cam)
    op = torch.sigmoid(scene.opacities)
    feats = torch.cat([torch.rand(60, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64),
                       proj.depth[:, None]], 1)
    ex, ey = _raster.support_extent(proj.cov2d[:, 0], proj.cov2d[:, 2], op)
    plan = _raster.plan_tiles(proj.xy, ex, ey, proj.depth, cam.width, cam.height, tile)
    touches = _raster.touching_pixels(proj.xy, ex, ey, cam.width, cam.height)
    plan.chunk, plan.stats = chunk, True
    plan.max_elems = chunk * tile * tile * 3  # several tile batches
    out, T = _raster.rasterize(proj.xy, proj.conic, op, feats, plan)
    ref_out, ref_T, ref_stats, _ = dense_reference(proj.xy, proj.conic, op, feats, proj.depth, cam.width,
                                                   cam.height)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(T, ref_T)
    assert (ref_T < 0.2).any()  # the case is dense enough to exercise early termination
    for k in ref_stats:
        torch.testing.assert_close(plan.stats_out[k], ref_stats[k])
    assert not touches[ref_stats["hits"] > 0].logical_not().any()


@pytest.mark.parametrize("cache_bytes,chunk", [(256 << 20, 32), (0, 4), (3 * 8 * 4 * 64 * 10, 4)])
def test_render_and_gradients_match_dense_reference(monkeypatch, cache_bytes, chunk):
    """Forward cached for backward, fully recomputed, and partly cached (cache runs out)."""
    monkeypatch.setattr(_raster, "CACHE_BYTES", cache_bytes)
    monkeypatch.setattr(_raster, "CHUNK", chunk)
    scene = random_scene(40, 7, opacity_shift=1.0, sh_k=8)
    cam = camera(20, 18, 22.0, cx=9.5, cy=9.0, viewmat=look_at((0.2, 0.1, -0.5), (0, 0, 3.0)))
    leaves = {k: v.clone().requires_grad_(True) for k, v in scene.tensors().items()}
    sc = GaussianScene(**leaves)
    bg = [0.2, 0.3, 0.4]
    res = render(sc, cam, backend="torch", background=bg, stats=True, depth=True, tile_size=8)
    ref_img, ref_alpha, ref_stats = dense_render(sc, cam, background=bg)
    torch.testing.assert_close(res.image, ref_img)
    torch.testing.assert_close(res.alpha, ref_alpha)
    for k in ref_stats:
        torch.testing.assert_close(res.stats[k], ref_stats[k])
    wimg = torch.rand_like(ref_img)
    walpha = torch.rand_like(ref_alpha)
    g1 = torch.autograd.grad((res.image * wimg).sum() + (res.alpha * walpha).sum(), list(leaves.values()))
    g2 = torch.autograd.grad((ref_img * wimg).sum() + (ref_alpha * walpha).sum(), list(leaves.values()))
    for name, a, b in zip(leaves, g1, g2):
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")
        assert a.abs().sum() > 0, name


def test_gradcheck_tiny_scene():
    """Finite differences (float64) against the hand-written backward, image and alpha outputs."""
    scene = make_scene([[0.05, -0.02, 2.0], [-0.1, 0.08, 2.6]], [[0.08], [0.1]], [0.6, 0.7],
                       rgb=[[0.9, 0.2, 0.3], [0.2, 0.8, 0.3]], quats=[[1.0, 0.2, 0.1, 0.0], [0.9, 0.0, 0.3, 0.1]])
    cam = camera(7, 6, 14.0, cx=3.6, cy=3.1)
    base = scene.tensors()

    def fn(means, opacities, sh0):
        sc = GaussianScene(means, base["quats"], base["scales"], opacities, sh0, base["shN"])
        res = render(sc, cam, backend="torch", tile_size=4, background=[0.1, 0.1, 0.1])
        return res.image, res.alpha

    inputs = tuple(base[k].clone().requires_grad_(True) for k in ("means", "opacities", "sh0"))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)

    # all scene tensors (random projections of the Jacobian), SH degree 1, three Gaussians
    shN = torch.tensor([[[0.1, 0.0, -0.1], [0.05, 0.1, 0.0], [0.0, -0.1, 0.1]]] * 3, dtype=torch.float64)
    scene3 = make_scene([[0.05, -0.02, 2.0], [-0.1, 0.08, 2.6], [0.12, 0.1, 3.1]], [[0.08], [0.1], [0.12]],
                        [0.6, 0.5, 0.7], quats=[[1.0, 0.2, 0.1, 0.0], [0.9, 0.0, 0.3, 0.1], [1.0, -0.1, 0.0, 0.2]],
                        shN=shN)
    cam3 = camera(10, 10, 16.0, cx=5.2, cy=4.9, viewmat=look_at((0.1, 0.05, -0.2), (0, 0, 2.5)))
    names = GaussianScene.PER_GAUSSIAN

    def fn_all(*tensors):
        res = render(GaussianScene(*tensors), cam3, backend="torch", tile_size=4)
        return res.image, res.alpha

    inputs = tuple(getattr(scene3, k).clone().requires_grad_(True) for k in names)
    assert torch.autograd.gradcheck(fn_all, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradient_descent_fits_a_target_image():
    torch.manual_seed(0)
    target_scene = random_scene(30, 3, dtype=torch.float32, opacity_shift=1.0)
    cam = camera(24, 24, 26.0, dtype=torch.float32)
    target = render(target_scene, cam, backend="torch").image
    start = {k: v.clone() for k, v in target_scene.tensors().items()}
    start["sh0"] = torch.zeros_like(start["sh0"])
    params = {k: v.requires_grad_(True) for k, v in start.items()}
    opt = torch.optim.Adam([params["sh0"]], lr=0.1)
    losses = []
    for _ in range(30):
        img = render(GaussianScene(**params), cam, backend="torch").image
        loss = (img - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


# --- statistics over many views and the gsplat pair route ------------------------------


def test_accumulate_stats_max_and_sums_over_views():
    scene = random_scene(50, 11, dtype=torch.float32, opacity_shift=1.0)
    cams = [camera(20, 20, 24.0, dtype=torch.float32, viewmat=look_at((x, 0.0, 0.0), (0, 0, 3.0),
                                                                     dtype=torch.float32))
            for x in (-0.5, 0.0, 0.5)]
    acc = accumulate_stats(scene, cams, backend="torch")
    per = [render(scene, c, backend="torch", stats=True).stats for c in cams]
    torch.testing.assert_close(acc["max_weight"], torch.stack([p["max_weight"] for p in per]).amax(0))
    for k in ("sum_weight", "sum_opacity_t", "hits"):
        torch.testing.assert_close(acc[k], sum(p[k] for p in per))
    only = accumulate_stats(scene, cams, names=("hits",), backend="torch")
    assert set(only) == {"hits"} and only["hits"].dtype == torch.long
    with pytest.raises(ValueError):
        accumulate_stats(scene, cams, names=("nope",))


def test_pair_stats_route_matches_renderer_statistics():
    """The gsplat statistics route (pairs in depth batches + carried T) on CPU-made pairs."""
    scene = random_scene(50, 5, opacity_shift=2.0)
    cam = camera(18, 16, 22.0, cx=9.0, cy=8.0)
    proj = project(scene, cam)
    op = torch.sigmoid(scene.opacities)
    n = len(scene)
    _, _, ref, pairs = dense_reference(proj.xy, proj.conic, op, torch.zeros(n, 1, dtype=torch.float64),
                                       proj.depth, cam.width, cam.height)
    gids = torch.cat([p[0] for p in pairs])
    pix = torch.cat([p[1] for p in pairs])
    alpha = torch.cat([p[2] for p in pairs])
    # rank of each pair within its pixel (depth order) -> two batches, pixels interleaved
    order = torch.sort(pix, stable=True).indices
    rank = torch.empty_like(pix)
    sp = pix[order]
    first = torch.ones_like(sp, dtype=torch.bool)
    first[1:] = sp[1:] != sp[:-1]
    start = torch.cummax(torch.where(first, torch.arange(sp.numel()), 0), 0).values
    rank[order] = torch.arange(sp.numel()) - start
    acc = {k: torch.zeros(n, dtype=torch.long if k == "hits" else torch.float64) for k in ref}
    trans = torch.ones(cam.width * cam.height, dtype=torch.float64)
    for sel in (rank < 2, rank >= 2):
        assert sel.any()
        pair_stats(gids[sel], pix[sel], alpha[sel], op[gids[sel]], trans, acc)
    for k in ref:
        torch.testing.assert_close(acc[k], ref[k])


def test_bad_arguments():
    scene = make_scene([0, 0, 2.0], 0.1, [0.5])
    with pytest.raises(ValueError):
        render(scene, camera(), backend="cuda-magic")
    with pytest.raises(ValueError):
        render(scene, camera(), stats=("max_weight", "bogus"), backend="torch")
    if not torch.cuda.is_available():
        from prunekit.errors import UsageError

        with pytest.raises(UsageError):
            render(scene, camera(), backend="gsplat")
        assert render(scene, camera(), backend="auto").backend == "torch"


def test_empty_and_fully_culled_scenes_render_background():
    for scene in (GaussianScene.empty(sh_degree=1), make_scene([0, 0, -1.0], 0.1, [0.9])):
        scene = scene.replace(**{k: v.double() for k, v in scene.tensors().items()})
        res = render(scene, camera(), backend="torch", background=[0.25, 0.5, 0.75], stats=True, depth=True)
        torch.testing.assert_close(res.image, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64).expand(16, 16, 3))
        assert res.alpha.abs().max().item() == 0.0 and res.depth.abs().max().item() == 0.0
        assert all(v.shape == (len(scene),) for v in res.stats.values())


def test_projection_and_sh_match_gsplat_reference_when_installed():
    """gsplat's own pure-PyTorch reference (``gsplat.cuda._torch_impl``, CPU) where gsplat is installed."""
    ref = pytest.importorskip("gsplat.cuda._torch_impl")
    scene = random_scene(300, 3, sh_k=15, spread=1.5)
    cam = camera(64, 48, 50.0, cx=30.0, cy=25.0, viewmat=look_at((0.5, -0.3, -1.0), (0, 0, 3.0)))
    covars, _ = ref._quat_scale_to_covar_preci(scene.quats, torch.exp(scene.scales), compute_preci=False,
                                              triu=False)
    _, means2d, depths, conics, _ = ref._fully_fused_projection(scene.means, covars, cam.viewmat[None],
                                                                cam.K[None], cam.width, cam.height)
    proj = project(scene, cam)
    v = proj.in_front
    assert v.sum() > 200
    torch.testing.assert_close(proj.xy[v], means2d[0][v])
    torch.testing.assert_close(proj.conic[v], conics[0][v])
    torch.testing.assert_close(proj.depth[v], depths[0][v])
    coeffs = torch.cat([scene.sh0[:, None], scene.shN], 1)
    dirs = scene.means - cam.position
    for degree in range(4):
        expect = torch.clamp_min(ref._spherical_harmonics(degree, dirs, coeffs) + 0.5, 0.0)
        torch.testing.assert_close(sh_colors(scene.sh0, scene.shN, dirs, degree), expect)


def test_backward_runs_with_the_render_threads_and_restores_the_setting(monkeypatch):
    seen = []
    original = _raster._Rasterize.backward

    def spy(ctx, *grads):
        seen.append(torch.get_num_threads())
        return original(ctx, *grads)

    monkeypatch.setattr(_raster._Rasterize, "backward", staticmethod(spy))
    scene = random_scene(20, 4)
    leaves = {k: v.clone().requires_grad_(True) for k, v in scene.tensors().items()}
    torch.set_num_threads(2)
    try:
        res = render(GaussianScene(**leaves), camera(), backend="torch", threads=1)
        assert torch.get_num_threads() == 2
        (res.image.sum() + res.alpha.sum()).backward()
        assert seen == [1] and torch.get_num_threads() == 2
        assert leaves["means"].grad.abs().sum() > 0
    finally:
        torch.set_num_threads(1)
